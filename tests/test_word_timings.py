"""Word timings: the synthetic corpus's reference (one per transcript word,
in order, where the speech is), the pauses of real speech, and the word
times a transcriber gives against that reference, one file at a time and
across long-form windows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from make_synthetic_librispeech import read_word_times
from synthetic.speech import word_times

from hyperconformer import Transcriber, Word
from hyperconformer.pauses import find_pauses, keep_out_of_pauses

SR = 16000


def test_word_times_from_espeak_events():
    # "there are" is spoken as one word: the pair shares its span.
    times = word_times("there are six.", [(1, 0), (11, 22050)], 44100, 22050, 0.0)
    assert times == [(0.0, 0.625, True), (0.625, 1.0, False), (1.0, 2.0, True)]


def test_every_transcript_word_has_a_time_where_the_speech_is(tiny_corpus):
    root = Path(tiny_corpus) / "LibriSpeech"
    measured = total = onsets_close = utterances = 0
    for trans in sorted(root.rglob("*.trans.txt")):
        times = read_word_times(trans.with_name(trans.name.replace("trans", "words")))
        for line in trans.read_text().splitlines():
            utt, text = line.split(" ", 1)
            words = times[utt]
            assert len(words) == len(text.split()), utt
            starts = [a for a, _, _ in words]
            assert starts == sorted(starts)
            assert all(a < b for a, b, _ in words)
            audio, rate = soundfile.read(trans.parent / f"{utt}.flac")
            assert words[-1][1] <= len(audio) / rate
            measured += sum(m for _, _, m in words)
            total += len(words)
            # The first word starts where the signal rises above the noise
            # of the silence before it (10 ms frames).
            frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
            energy = np.sqrt((frames**2).mean(axis=1))
            lead = int(words[0][0] * 100)
            floor = energy[: max(lead - 2, 1)].max()
            onset = np.argmax(energy > 3 * floor) / 100
            onsets_close += abs(onset - words[0][0]) <= 0.05
            utterances += 1
    assert measured / total > 0.95
    assert onsets_close / utterances > 0.9, (onsets_close, utterances)


def test_pauses_are_where_no_word_is_spoken(tiny_corpus):
    """Each utterance starts with a pause that ends where its first word
    starts (within 50 ms, as the corpus's own onset test), and almost no
    reference word starts inside one."""
    root = Path(tiny_corpus) / "LibriSpeech" / "test-clean"
    starts = inside = close = utterances = 0
    for words in sorted(root.rglob("*.words.txt")):
        for utt, times in read_word_times(words).items():
            audio, rate = soundfile.read(words.parent / f"{utt}.flac", dtype="float32")
            pauses = find_pauses(torch.from_numpy(audio), rate)
            assert pauses[0][0] == 0.0
            close += abs(pauses[0][1] - times[0][0]) < 0.05
            assert pauses[-1][1] == pytest.approx(len(audio) / rate, abs=0.01)
            starts += len(times)
            inside += sum(a < t < b - 0.05 for t, _, _ in times for a, b in pauses)
            utterances += 1
    assert utterances == 16 and close / utterances > 0.9, close
    assert inside / starts < 0.02, (inside, starts)


def test_no_pauses_without_silence():
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.standard_normal(SR).astype(np.float32))
    assert find_pauses(noise, SR) == []  # no frame stands out as quiet
    assert find_pauses(torch.zeros(SR), SR) == []  # nothing is louder
    tone = torch.sin(torch.arange(SR) * 0.3)
    # Digital silence does not hide a pause in a faint noise floor.
    floor = 1e-3 * noise[: SR // 2]
    wav = torch.cat([torch.zeros(SR // 2), tone, floor, tone])
    assert find_pauses(wav, SR) == [(0.0, 0.5), (1.5, 2.0)]


def test_words_leave_pauses():
    words = [Word("A", 0.1, 0.3), Word("B", 0.4, 0.9), Word("C", 1.0, 1.1)]
    moved = keep_out_of_pauses(words, [(0.0, 0.2), (0.8, 1.2)])
    # A starts where speech starts, B ends where the pause begins, C lies
    # wholly in the pause and moves after it, keeping its length.
    ends = [x for w in moved for x in (w.start, w.end)]
    assert ends == pytest.approx([0.2, 0.3, 0.4, 0.8, 1.2, 1.3])
    assert keep_out_of_pauses(words, []) == words


# --------------------------------------------------------------------------
# Word times from a CTC alignment, kept out of the pauses of real speech.

FRAME = 0.04  # seconds per CTC frame of the spiking model below
EARLY = 0.3  # how early it fires the first word of each utterance


class SpikingModel:
    """An encoder whose CTC posteriors spike where a timeline says, for any
    window of the signal it was built for: the logits come out of the
    "encoder" and ``ctc_lin`` is the identity."""

    def __init__(self, signal: torch.Tensor, spikes: list[tuple[int, int]], vocab):
        self.signal, self.spikes, self.vocab = signal, spikes, vocab

    def __call__(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> torch.Tensor:
        n_frames = wavs.size(1) // int(FRAME * SR)
        logits = torch.full((len(wavs), n_frames, self.vocab), -20.0)
        logits[:, :, 0] = 0.0  # blank
        for row, wav in enumerate(wavs):
            wav = wav[: round(float(wav_lens[row]) * wav.numel())]  # unpadded
            offset = self.offset(wav) / SR / FRAME
            for frame, token in self.spikes:  # frames of the whole signal
                frame = math.floor(frame - offset + 0.5)
                if 0 <= frame < n_frames:
                    logits[row, frame, 0], logits[row, frame, token] = -20.0, 0.0
        return logits

    def offset(self, wav: torch.Tensor) -> int:
        """Where the row lies in the signal (a long-form piece or the whole)."""
        peak = int(wav.abs().argmax())
        for start in (self.signal == wav[peak]).nonzero().flatten().tolist():
            start -= peak
            if torch.equal(wav, self.signal[start : start + wav.numel()]):
                return start
        raise AssertionError("the row is not part of the signal")


def spiking_transcriber(tokenizer, signal, words, times, **kwargs) -> Transcriber:
    """Greedy CTC over posteriors that spike at each word's reference start
    (a frame per piece), except that the first word of every utterance
    (any word after 0.3 s of reference silence, and the first) fires
    ``EARLY`` seconds before it is spoken, in the silence before it: what a
    CTC model that has not learnt where words are does."""
    spikes, last = [], -1
    for k, (word, (start, _, _)) in enumerate(zip(words, times, strict=True)):
        after_pause = k == 0 or start - times[k - 1][1] > 0.3
        frame = round(max(start - EARLY, 0.0) if after_pause else start, 2) / FRAME
        for piece in tokenizer.encode(word):
            # the next frame, or the one after if a blank must separate a repeat
            gap = 2 if spikes and spikes[-1][1] == piece else 1
            frame = max(round(frame), last + gap)
            spikes.append((frame, piece))
            last = frame
    model = SpikingModel(signal, spikes, tokenizer.vocab_size())
    hparams = {
        "sample_rate": SR,
        "tokenizer": tokenizer,
        "encoder": model,
        "ctc_lin": torch.nn.Identity(),
        "decoder": None,
    }
    return Transcriber(hparams, ctc_only=True, **kwargs)


@pytest.mark.parametrize("long_form", ["windows", "pauses"])
@pytest.mark.parametrize("word_pauses", [True, False])
def test_word_starts_within_the_targets_across_windows(
    tiny_corpus, word_pauses, long_form
):
    """Real speech, its reference word times, and posteriors that fire the
    first word of each utterance in the silence before it: kept out of the
    pauses, word starts meet the targets (median 0.1 s, 95th percentile
    0.25 s), one file at a time and across long-form windows or pieces cut
    at pauses; the alignment alone does not."""
    import sentencepiece as spm
    from conftest import train_sentencepiece
    from word_timing_benchmark import long_recording, reference, start_errors

    items = reference(Path(tiny_corpus) / "LibriSpeech" / "test-clean", 16)
    tokenizer = spm.SentencePieceProcessor(
        model_proto=train_sentencepiece([" ".join(t) for _, t, _ in items] * 4, 120)
    )
    short = []
    for audio, words, times in items:
        asr = spiking_transcriber(
            tokenizer, audio, words, times, word_pauses=word_pauses
        )
        hyp = asr.transcribe_words(audio)[0]
        assert [w.text for w in hyp] == words
        short += [e for _, e in start_errors(hyp, words, times)]
    audio, words, times = long_recording(items)
    assert audio.numel() > 4 * 20 * SR
    asr = spiking_transcriber(
        tokenizer,
        audio,
        words,
        times,
        word_pauses=word_pauses,
        chunk_seconds=20.0,
        overlap_seconds=4.0,
        long_form=long_form,
    )
    hyp = asr.transcribe_words(audio)[0]
    assert [w.text for w in hyp] == words
    long = [e for _, e in start_errors(hyp, words, times)]
    for errors in (short, long):
        median, p95 = np.median(errors), np.percentile(errors, 95)
        if word_pauses:
            assert median <= 0.1 and p95 <= 0.25, (median, p95)
        else:
            assert p95 > 0.25, p95

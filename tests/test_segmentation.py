"""Cutting long recordings at pauses (hyperconformer.segmentation), checked
on real synthetic speech: test utterances joined with pauses, clean and with
noise, must be cut only where nobody speaks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from longform_accuracy import join, load_split, take_minutes

from hyperconformer.longform import Word
from hyperconformer.segmentation import decode_segments, pause_segments

SR = 16000


@pytest.fixture(scope="module")
def recording(tiny_corpus):
    """About 1.5 min of test utterances joined with 0.4 s pauses, and a mask
    of the samples where a word is heard: inside a word of the corpus's word
    timings (each lasts until the next one starts) and not in a silence of
    at least 0.1 s there (a comma's pause)."""
    utterances = take_minutes(
        load_split(Path(tiny_corpus) / "LibriSpeech" / "test-clean"), 1.5, 0.4
    )
    signal, starts = join(utterances, 0.4)
    speech = np.zeros(signal.size, dtype=bool)
    for utt, offset in zip(utterances, starts, strict=True):
        for start, end in utt.spans:
            speech[round((offset + start) * SR) : round((offset + end) * SR)] = True
    hop = SR // 100
    silent = np.abs(signal[: signal.size // hop * hop]).reshape(-1, hop).max(1) < 3e-3
    run = 0
    for i, quiet in enumerate(np.append(silent, False)):
        if not quiet and run >= 10:
            speech[(i - run) * hop : i * hop] = False
        run = run + 1 if quiet else 0
    return torch.from_numpy(signal), speech


@pytest.mark.parametrize("snr_db", [None, 20.0, 5.0])
@pytest.mark.parametrize("max_seconds", [8.0, 20.0])
def test_cuts_fall_in_pauses(recording, snr_db, max_seconds):
    signal, speech = recording
    if snr_db is not None:
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn(signal.shape, generator=gen)
        power = signal[torch.from_numpy(speech)].pow(2).mean()
        signal = signal + noise * (power / 10 ** (snr_db / 10)).sqrt()
    segments = pause_segments(signal, SR, max_seconds)
    assert len(segments) >= signal.numel() / SR / max_seconds
    for start, end in segments:
        assert end - start <= max_seconds * SR
    cuts = [s for s, _ in segments[1:]] + [e for _, e in segments[:-1]]
    inside = [c for c in cuts if speech[c]]
    assert not inside, f"cuts in speech at {[round(c / SR, 2) for c in inside]} s"
    # Every sample of speech is decoded: no piece with speech was dropped.
    covered = np.zeros(signal.numel(), dtype=bool)
    for start, end in segments:
        covered[start:end] = True
    assert covered[speech].all()


def test_speech_without_pauses_is_still_cut(recording):
    signal, speech = recording
    continuous = signal[torch.from_numpy(speech)]  # the pauses taken out
    segments = pause_segments(continuous, SR, 10.0)
    assert segments[0][0] == 0 and segments[-1][1] == continuous.numel()
    assert all(e - s <= 10 * SR for s, e in segments)
    assert all(
        e == s2 for (_, e), (s2, _) in zip(segments[:-1], segments[1:], strict=True)
    )


def test_silence_is_not_decoded():
    wav = torch.cat([torch.randn(3 * SR), torch.zeros(30 * SR), torch.randn(3 * SR)])
    segments = pause_segments(wav, SR, 10.0)
    assert sum(e - s for s, e in segments) < 20 * SR


def test_decoded_words_are_placed_in_time():
    wav = torch.zeros(100)
    seen = []

    def decode(batch, lens):
        seen.append((batch.shape, lens.tolist()))
        return [[Word(str(round(n.item() * batch.size(1))), 0.1, 0.2)] for n in lens]

    words = decode_segments(wav, [(0, 30), (30, 40), (40, 100)], decode, 2, 10)
    assert [w.text for w in words] == ["30", "10", "60"]
    assert [w.start for w in words] == pytest.approx([0.1, 3.1, 4.1])
    # Similar lengths batched together, padded to the longest of the batch.
    assert [(tuple(shape), lens) for shape, lens in seen] == [
        ((2, 30), pytest.approx([1 / 3, 1.0])),
        ((1, 60), [1.0]),
    ]

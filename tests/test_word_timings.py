"""Reference word timings of the synthetic corpus (what word timing
measurements are compared with): one per transcript word, in order, and
where the speech is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
from make_synthetic_librispeech import read_word_times
from synthetic.speech import word_times


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

"""tools/longform_accuracy.py: joining test utterances, and the stitching of
windows checked with the corpus's reference word timings (no model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from longform_accuracy import (
    groups_in_window,
    join,
    load_split,
    main,
    oracle_stitch,
    take_minutes,
    word_errors,
)

SR = 16000


@pytest.fixture(scope="module")
def test_split(tiny_corpus):
    return load_split(Path(tiny_corpus) / "LibriSpeech" / "test-clean")


def test_join_keeps_every_sample_in_place(test_split):
    signal, starts = join(test_split[:3], 0.4)
    for utt, start in zip(test_split[:3], starts, strict=True):
        at = round(start * SR)
        assert (signal[at : at + utt.audio.size] == utt.audio).all()
    assert signal.size == sum(u.audio.size for u in test_split[:3]) + 2 * round(
        0.4 * SR
    )


@pytest.mark.parametrize("window_s, overlap_s", [(30.0, 5.0), (10.0, 2.5), (8.0, 2.0)])
def test_windows_stitch_back_every_word_once(test_split, window_s, overlap_s):
    """Windows that each know every word lying wholly inside them must
    stitch back into the exact reference: nothing lost, nothing repeated."""
    utterances = take_minutes(test_split, 1.5, 0.4)
    signal, starts = join(utterances, 0.4)
    reference = " ".join(u.text for u in utterances)
    stitched = oracle_stitch(utterances, starts, signal.size / SR, window_s, overlap_s)
    errors = word_errors([reference], [stitched])
    assert errors["wer"] == 0.0, errors
    assert errors["words"] == len(reference.split()) > 100


def test_groups_fit_one_window(test_split):
    groups = groups_in_window(test_split, 3, 30.0, 0.4)
    assert groups and all(len(g) == 3 for g in groups)
    for group in groups:
        assert sum(u.audio.size for u in group) / SR + 0.8 <= 30.0
    ids = [u.utt_id for g in groups for u in g]
    assert len(ids) == len(set(ids))


def test_word_errors_counts_deletions():
    errors = word_errors(["A B C D", "E F"], ["A C D", "E F G"])
    assert (errors["deletions"], errors["insertions"], errors["words"]) == (1, 1, 6)
    assert errors["wer"] == pytest.approx(33.33)


def test_clear_errors(tiny_corpus, tmp_path, capsys):
    split = str(Path(tiny_corpus) / "LibriSpeech" / "test-clean")
    argv = ["--model", str(tmp_path), "--split", split, "--minutes", "600"]
    assert main(argv) == 1
    assert "fewer than --minutes 600" in capsys.readouterr().err
    assert main(["--model", str(tmp_path), "--split", str(tmp_path)]) == 1
    assert "no utterances under" in capsys.readouterr().err

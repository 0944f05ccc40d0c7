#!/usr/bin/env python
"""Word timings of a model folder against the synthetic corpus's reference.

The corpus generator (``tools/make_synthetic_librispeech.py``) records where
eSpeak NG starts every word (``*.words.txt``). Here the test files are
transcribed with timed words (:meth:`hyperconformer.Transcriber.transcribe_words`)
one by one, and joined into one long recording (0.3 s pauses) cut as the
Transcriber cuts it (``--long-form``: pieces at pauses of at most ``--window``
seconds, or overlapping windows), so that words near the cuts count too.
A hypothesis word counts when the WER alignment (SpeechBrain's edit distance)
calls it correct; its error is ``|start - reference start|``. Words eSpeak
spoke without an event of their own ("there are") are left out. Two methods
side by side: the CTC alignment alone (``word_pauses=False``) and the
alignment kept out of the audio's pauses (the default,
:mod:`hyperconformer.pauses`).

Usage::

    python tools/word_timing_benchmark.py --model MODEL_DIR \\
        --data data/synthetic/LibriSpeech/test-clean [--files 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile
import torch
from speechbrain.utils.edit_distance import alignment, op_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from make_synthetic_librispeech import read_word_times  # noqa: E402

from hyperconformer import Transcriber  # noqa: E402
from hyperconformer.longform import window_starts  # noqa: E402
from hyperconformer.segmentation import pause_segments  # noqa: E402

SR = 16000


def reference(folder: Path, count: int):
    """[(audio, words, [(start, end, measured)])] of the first ``count`` files."""
    texts, times = {}, {}
    for trans in sorted(folder.rglob("*.trans.txt")):
        for line in trans.read_text().splitlines():
            key, text = line.split(" ", 1)
            texts[key] = text.split()
    for path in sorted(folder.rglob("*.words.txt")):
        times.update(read_word_times(path))
    if not times:
        raise SystemExit(
            f"error: no *.words.txt under {folder} (regenerate the corpus)"
        )
    out = []
    for path in sorted(folder.rglob("*.flac"))[:count]:
        audio = torch.from_numpy(soundfile.read(path, dtype="float32")[0])
        out.append((audio, texts[path.stem], times[path.stem]))
    return out


def start_errors(hyp_words, ref_words, ref_times) -> list[tuple[float, float]]:
    """(reference start, |start error|) of the hypothesis words that the WER
    alignment calls correct (measured reference words only).

    Matching by text alone (``difflib``) pairs a frequent word ("THE") next to
    a recognition error with another occurrence seconds away; the WER
    alignment pairs each word with the reference word it transcribes.
    """
    errors = []
    for op, i, j in alignment(op_table(ref_words, [w.text for w in hyp_words])):
        start, _, measured = ref_times[i] if i is not None else (0.0, 0.0, False)
        if op == "=" and measured:
            errors.append((start, abs(hyp_words[j].start - start)))
    return errors


def long_recording(items, pause: float = 0.3):
    """Joined audio, and the words and times shifted to it."""
    gap = torch.zeros(int(pause * SR))
    pieces, words, times, offset = [], [], [], 0.0
    for audio, text, ref in items:
        pieces += [audio, gap]
        words += text
        times += [(a + offset, b + offset, m) for a, b, m in ref]
        offset += (audio.numel() + gap.numel()) / SR
    return torch.cat(pieces), words, times


def summary(errors: list[float]) -> str:
    e = np.asarray(errors)
    return (
        f"{e.size} words, median {np.median(e):.3f} s, p95 "
        f"{np.percentile(e, 95):.3f} s, mean {e.mean():.3f} s"
    )


def measure(asr: Transcriber, items, window: float, overlap: float) -> dict:
    """Start-time errors one file at a time and across a long recording, cut
    as the transcriber cuts it (pieces at pauses or overlapping windows)."""
    short = []
    for audio, text, ref in items:
        hyp = asr.transcribe_words(audio)[0]
        short += [e for _, e in start_errors(hyp, text, ref)]
    audio, words, times = long_recording(items)
    asr.chunk_seconds, asr.overlap_seconds = window, overlap
    hyp = asr.transcribe_words(audio)[0]
    if asr.long_form == "pauses":
        cuts = pause_segments(audio, SR, window)
        edges = np.array([s / SR for s, _ in cuts] + [e / SR for _, e in cuts])
    else:
        starts = window_starts(audio.numel(), int(window * SR), int(overlap * SR))
        edges = np.array([s / SR for s in starts] + [s / SR + window for s in starts])
    pairs = start_errors(hyp, words, times)
    long = [e for _, e in pairs]
    # words starting within 2 s of a window edge
    near = [e for start, e in pairs if np.abs(edges - start).min() < 2.0]
    return {
        "short": short,
        "long": long,
        "near_edges": near,
        "seconds": audio.numel() / SR,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="test split folder")
    p.add_argument("--files", type=int, default=60)
    p.add_argument("--long-form", choices=("pauses", "windows"), default="pauses")
    p.add_argument("--window", type=float, default=20.0, help="longest piece (s)")
    p.add_argument("--overlap", type=float, default=5.0, help="windows only")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    items = reference(args.data, args.files)
    for label, word_pauses in (
        ("CTC alignment alone", False),
        ("kept out of pauses (default)", True),
    ):
        asr = Transcriber.from_pretrained(
            args.model, word_pauses=word_pauses, long_form=args.long_form
        )
        result = measure(asr, items, args.window, args.overlap)
        print(f"{label}:")
        print(f"  one file at a time: {summary(result['short'])}")
        print(
            f"  {result['seconds']:.0f} s recording, {args.long_form} "
            f"(at most {args.window:g} s): {summary(result['long'])}"
        )
        print(f"    within 2 s of a cut: {summary(result['near_edges'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

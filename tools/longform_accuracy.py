#!/usr/bin/env python3
"""Long-form accuracy: a long recording transcribed in one call, against the
same utterances transcribed one by one.

Test utterances of a LibriSpeech-format split are joined, in a fixed order,
with a pause between them into one recording of at least ``--minutes``; the
recording is transcribed with one :meth:`Transcriber.transcribe_batch` call
(cut at its pauses, or with ``--long-form windows`` in overlapping windows
stitched by time) and scored against the joined reference transcripts.
The same utterances decoded one by one give the baseline WER.
Both for joint CTC/attention and for CTC-only decoding, plus groups of three
utterances joined into one recording of at most 30 s, each transcribed in one
call (what a user gets for a file of a few utterances).

A third row needs no model: the reference word timings of the synthetic
corpus (``*.words.txt``) cut into the same windows and stitched with the
same code.  Its WER is what the windowing and stitching alone lose.

    python tools/longform_accuracy.py --model results/demo/hyperconformer_demo/model \\
        --split data/synthetic/LibriSpeech/test-clean --minutes 10

Prints a markdown table; ``--json FILE`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from speechbrain.utils.edit_distance import wer_details_for_batch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from synthetic.layout import read_word_times  # noqa: E402

from hyperconformer.longform import Word, stitch_windows, window_starts  # noqa: E402

SAMPLE_RATE = 16000


@dataclass
class Utterance:
    """One test utterance: id, audio (samples,), transcript, word spans (s)."""

    utt_id: str
    audio: np.ndarray
    text: str
    spans: list[tuple[float, float]] | None


def load_split(split: Path) -> list[Utterance]:
    """Every utterance of a LibriSpeech-format split, sorted by id."""
    utterances = []
    for trans in sorted(split.glob("*/*/*.trans.txt")):
        words_file = trans.with_name(trans.name.replace(".trans.txt", ".words.txt"))
        times = read_word_times(words_file) if words_file.is_file() else {}
        for line in trans.read_text().splitlines():
            utt_id, text = line.split(" ", 1)
            audio, rate = sf.read(str(trans.parent / f"{utt_id}.flac"), dtype="float32")
            if rate != SAMPLE_RATE:
                raise ValueError(f"{utt_id}: {rate} Hz, expected {SAMPLE_RATE}")
            spans = [(a, b) for a, b, _ in times[utt_id]] if utt_id in times else None
            utterances.append(Utterance(utt_id, audio, text, spans))
    if not utterances:
        raise ValueError(f"no utterances under {split}")
    return sorted(utterances, key=lambda u: u.utt_id)


def join(
    utterances: Sequence[Utterance], pause_s: float
) -> tuple[np.ndarray, list[float]]:
    """One recording: the utterances with ``pause_s`` of silence between.

    Returns the signal and each utterance's start in seconds.

    >>> u = [Utterance("a", np.ones(16000, "float32"), "A", None)] * 2
    >>> signal, starts = join(u, 0.5)
    >>> signal.shape, starts
    ((40000,), [0.0, 1.5])
    """
    gap = np.zeros(round(pause_s * SAMPLE_RATE), dtype=np.float32)
    pieces, starts, position = [], [], 0
    for i, utt in enumerate(utterances):
        if i:
            pieces.append(gap)
            position += gap.size
        starts.append(position / SAMPLE_RATE)
        pieces.append(utt.audio)
        position += utt.audio.size
    return np.concatenate(pieces), starts


def take_minutes(
    utterances: Sequence[Utterance], minutes: float, pause_s: float
) -> list[Utterance]:
    """The first utterances whose joined length reaches ``minutes``."""
    chosen, seconds = [], 0.0
    for utt in utterances:
        chosen.append(utt)
        seconds += utt.audio.size / SAMPLE_RATE + pause_s
        if seconds >= 60.0 * minutes:
            return chosen
    raise ValueError(
        f"the split holds only {seconds / 60:.1f} minutes, "
        f"fewer than --minutes {minutes}"
    )


def groups_in_window(
    utterances: Sequence[Utterance], size: int, window_s: float, pause_s: float
) -> list[list[Utterance]]:
    """Consecutive, disjoint groups of ``size`` utterances that fit together
    in one window of ``window_s`` seconds."""
    groups, i = [], 0
    while i + size <= len(utterances):
        group = list(utterances[i : i + size])
        seconds = sum(u.audio.size for u in group) / SAMPLE_RATE
        if seconds + (size - 1) * pause_s <= window_s:
            groups.append(group)
            i += size
        else:
            i += 1
    return groups


def word_errors(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """WER (%) and its edits, SpeechBrain's edit distance.

    >>> word_errors(["A B C"], ["A C D"])["wer"]
    66.67
    """
    keys = [str(i) for i in range(len(refs))]
    details = wer_details_for_batch(
        keys,
        [r.split() for r in refs],
        [h.split() for h in hyps],
        compute_alignments=False,
    )
    words = sum(d["num_ref_tokens"] for d in details)
    out = {
        k: sum(d[k] for d in details)
        for k in ("insertions", "deletions", "substitutions")
    }
    edits = sum(out.values())
    out["words"] = words
    out["wer"] = round(100.0 * edits / max(words, 1), 2)
    return out


def oracle_stitch(
    utterances: Sequence[Utterance],
    starts: Sequence[float],
    total_s: float,
    window_s: float,
    overlap_s: float,
) -> str:
    """The reference words, cut into the transcriber's windows (a window
    holds the words that lie wholly inside it: a word cut by the window's
    edge is lost, as a model would lose it) and stitched by the same code."""
    words = [
        Word(w, start + a, start + b)
        for utt, start in zip(utterances, starts, strict=True)
        for w, (a, b) in zip(utt.text.split(), utt.spans or [], strict=True)
    ]
    window, overlap = round(window_s * SAMPLE_RATE), round(overlap_s * SAMPLE_RATE)
    pieces = []
    for s in window_starts(round(total_s * SAMPLE_RATE), window, overlap):
        lo, hi = s / SAMPLE_RATE, (s + window) / SAMPLE_RATE
        pieces.append((lo, hi, [w for w in words if lo <= w.start and w.end <= hi]))
    return " ".join(w.text for w in stitch_windows(pieces))


def evaluate(
    model: Path,
    utterances: Sequence[Utterance],
    pause_s: float,
    group_size: int = 3,
    group_window_s: float = 30.0,
    modes: Sequence[str] = ("joint", "ctc"),
    device: str = "cpu",
    long_form: str = "pauses",
    chunk_seconds: float | None = None,
) -> dict:
    """Every row of the report (see the module docstring)."""
    from hyperconformer import Transcriber

    signal, starts = join(utterances, pause_s)
    refs = [u.text for u in utterances]
    joined_ref = " ".join(refs)
    report: dict = {
        "utterances": len(utterances),
        "minutes": round(signal.size / SAMPLE_RATE / 60.0, 2),
        "pause_s": pause_s,
        "long_form": long_form,
        "rows": {},
    }
    for mode in modes:
        asr = Transcriber.from_pretrained(
            model,
            device=device,
            ctc_only=mode == "ctc",
            long_form=long_form,
            **({"chunk_seconds": chunk_seconds} if chunk_seconds else {}),
        )
        window_s = asr.chunk_seconds
        row: dict = {}
        started = time.perf_counter()
        one_by_one = [
            asr.transcribe_batch(torch.from_numpy(u.audio))[0] for u in utterances
        ]
        row["one_by_one"] = word_errors(refs, one_by_one)
        started_long = time.perf_counter()
        long_text = asr.transcribe_batch(torch.from_numpy(signal))[0]
        row["long"] = word_errors([joined_ref], [long_text])
        row["long_seconds"] = round(time.perf_counter() - started_long, 1)
        groups = groups_in_window(utterances, group_size, group_window_s, pause_s)
        group_texts, group_refs, group_single = [], [], []
        for group in groups:
            audio, _ = join(group, pause_s)
            group_texts.append(asr.transcribe_batch(torch.from_numpy(audio))[0])
            group_refs.append(" ".join(u.text for u in group))
            index = [utterances.index(u) for u in group]
            group_single.append(" ".join(one_by_one[i] for i in index))
        row["groups"] = len(groups)
        row["in_window"] = word_errors(group_refs, group_texts)
        row["in_window_one_by_one"] = word_errors(group_refs, group_single)
        row["seconds"] = round(time.perf_counter() - started, 1)
        report["rows"][mode] = row
        report["window_s"], report["overlap_s"] = window_s, asr.overlap_seconds
        report["group_window_s"] = group_window_s
    if all(u.spans is not None for u in utterances):
        stitched = oracle_stitch(
            utterances,
            starts,
            signal.size / SAMPLE_RATE,
            report.get("window_s", 30.0),
            report.get("overlap_s", 5.0),
        )
        report["oracle_stitch"] = word_errors([joined_ref], [stitched])
    return report


def format_report(report: dict) -> str:
    """Markdown table of :func:`evaluate`'s numbers."""
    lines = [
        f"{report['utterances']} test utterances, {report['minutes']} min joined with "
        f"{report['pause_s']} s pauses; "
        + (
            f"cut at pauses into pieces of at most {report.get('window_s')} s."
            if report.get("long_form", "windows") == "pauses"
            else f"windows of {report.get('window_s')} s, "
            f"overlap >= {report.get('overlap_s')} s."
        ),
        "",
        "| decoding | one by one | one call (long) | ratio | 3 in one call (<= 30 s) | "
        "same, one by one | ratio |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(e: dict) -> str:
        return f"{e['wer']:.2f} % ({e['deletions']} del, {e['insertions']} ins)"

    for mode, row in report["rows"].items():
        base, long = row["one_by_one"]["wer"], row["long"]["wer"]
        wbase, win = row["in_window_one_by_one"]["wer"], row["in_window"]["wer"]
        lines.append(
            f"| {mode} | {cell(row['one_by_one'])} | {cell(row['long'])} | "
            f"{long / max(base, 1e-9):.2f} | {cell(row['in_window'])} "
            f"({row['groups']} groups) | {cell(row['in_window_one_by_one'])} | "
            f"{win / max(wbase, 1e-9):.2f} |"
        )
    if "oracle_stitch" in report:
        lines += [
            "",
            "Reference word timings windowed and stitched (no model): "
            + cell(report["oracle_stitch"]),
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, required=True, help="exported model folder"
    )
    parser.add_argument("--split", type=Path, required=True, help="e.g. .../test-clean")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--pause", type=float, default=0.4, help="seconds between")
    parser.add_argument("--modes", nargs="+", default=["joint", "ctc"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--long-form",
        choices=("pauses", "windows"),
        default="pauses",
        help="how the Transcriber cuts the long recording (default: pauses)",
    )
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=None,
        help="longest piece decoded in one pass (default: the Transcriber's)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        utterances = take_minutes(load_split(args.split), args.minutes, args.pause)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report = evaluate(
        args.model,
        utterances,
        args.pause,
        modes=args.modes,
        device=args.device,
        long_form=args.long_form,
        chunk_seconds=args.chunk_seconds,
    )
    report["threads"] = torch.get_num_threads()
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

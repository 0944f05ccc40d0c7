#!/usr/bin/env python3
"""An hour of live transcription: real-time factor, memory, and the WER of its
last minutes against its first.

The utterances of a LibriSpeech-format test split are joined in order, with a
pause between them, and repeated until the stream lasts ``--minutes``; the
stream is pushed through :class:`hyperconformer.live.LiveTranscription` in
pieces of ``--piece`` seconds, as a microphone would deliver it (as fast as it
is decoded). Reported: CPU seconds per second of audio, resident memory after
the first minute and at the end, the stream's held state, and the WER of the
first and of the last ``--window`` minutes (the utterances lying wholly inside
each, against the final words whose start lies within them). A 60-minute
stream of a 25-minute split repeats the same utterances in its first and last
10 minutes, so the two WERs compare like with like.

    python tools/streaming_hour.py \\
        --model results/demo-streaming/hyperconformer_demo_streaming/model \\
        --split data/synthetic/LibriSpeech/test-clean --minutes 60
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from longform_accuracy import load_split, word_errors  # noqa: E402
from measurement import rss_mb  # noqa: E402

from hyperconformer import Transcriber  # noqa: E402
from hyperconformer.live import LiveTranscription  # noqa: E402


def window_wer(spans, words, lo: float, hi: float) -> dict:
    """WER of the utterances lying wholly in [lo, hi] against the hypothesis
    words starting within their first start and last end."""
    inside = [(a, b, text) for a, b, text in spans if a >= lo and b <= hi]
    first, last = inside[0][0], inside[-1][1]
    hyp = " ".join(w.text for w in words if first - 0.2 <= w.start < last)
    return word_errors([" ".join(t for _, _, t in inside)], [hyp])


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="exported streaming folder")
    parser.add_argument("--split", required=True, help="LibriSpeech-format split")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--window", type=float, default=10.0, help="minutes")
    parser.add_argument("--pause", type=float, default=0.4, help="seconds between")
    parser.add_argument("--piece", type=float, default=0.1, help="seconds per push")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    asr = Transcriber.from_pretrained(args.model)
    sr = asr.sample_rate
    live = LiveTranscription(asr)
    utterances = load_split(Path(args.split))
    gap = np.zeros(round(args.pause * sr), dtype=np.float32)
    piece = round(args.piece * sr)
    spans, finals, clock = [], [], 0.0
    rss_first = None
    started = time.process_time()
    while clock < args.minutes * 60:
        for utt in utterances:
            audio = np.concatenate([utt.audio.astype(np.float32), gap])
            spans.append((clock, clock + len(utt.audio) / sr, utt.text))
            for at in range(0, len(audio), piece):
                finals += [
                    e for e in live.push(audio[at : at + piece]) if e.kind == "final"
                ]
            clock += len(audio) / sr
            if rss_first is None and clock >= 60:
                rss_first = rss_mb()
            if clock >= args.minutes * 60:
                break
    finals += [e for e in live.finish() if e.kind == "final"]
    cpu = time.process_time() - started
    words = [w for e in finals for w in (e.words or [])]
    span = args.window * 60
    report = {
        "minutes": round(clock / 60, 2),
        "utterances": len(spans),
        "finals": len(finals),
        "rtf_cpu": round(cpu / clock, 4),
        "rss_mib_after_1_min": round(rss_first, 1),
        "rss_mib_at_end": round(rss_mb(), 1),
        "state_kib_at_end": round(live.state_bytes() / 1024, 1),
        "first": window_wer(spans, words, 0.0, span),
        "last": window_wer(spans, words, clock - span, clock),
    }
    ratio = report["last"]["wer"] / max(report["first"]["wer"], 1e-9)
    print(
        f"{report['minutes']} min streamed ({report['utterances']} utterances, "
        f"{report['finals']} finals), {args.threads} thread(s)\n"
        f"real-time factor (CPU): {report['rtf_cpu']}\n"
        f"RSS after 1 min: {report['rss_mib_after_1_min']} MiB, at the end: "
        f"{report['rss_mib_at_end']} MiB; stream state {report['state_kib_at_end']}"
        f" KiB\nWER first {args.window:g} min: {report['first']['wer']:.2f} %, "
        f"last {args.window:g} min: {report['last']['wer']:.2f} % ({ratio:.2f}x)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


if __name__ == "__main__":
    main()

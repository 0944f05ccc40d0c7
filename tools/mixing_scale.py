#!/usr/bin/env python
"""Scale of HyperMixing's output over an hour-long stream, per ``summary``.

The first HyperMixing layer of ``hyperconformer_8M.yaml`` (freshly
initialised, sizes read from the yaml) is fed a random stream chunk by chunk
(:meth:`hyperconformer.HyperMixing.stream`): layer-normed frames of a
standard-normal signal plus a per-channel offset drawn once (real features are
not zero-mean per channel, and that is what makes a sum over tokens grow
linearly). At a few points of the stream it reports the RMS of the mixing
output before its final layer norm, for ``summary="sum"``, the plain
``"mean"`` and the mean scaled to a sum over ``--summary-frames`` frames
(default 256, as in ``hyperconformer_8M_streaming.yaml``), the
largest difference between the float32 stream and the same stream in float64,
and the size of the carried state.

Usage::

    python tools/mixing_scale.py                    # 60 min at 640 ms chunks
    python tools/mixing_scale.py --minutes 10 --chunk 8
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from measurement import HPARAMS_DIR, load_hparams

FRAMES_PER_MINUTE = 1500  # 40 ms encoder frames (10 ms hop, 4x subsampling)


def stream_scales(
    mixing: torch.nn.Module,
    minutes: float,
    chunk: int,
    report_at: list[float],
    dtype: torch.dtype,
    seed: int = 0,
) -> tuple[dict[float, float], torch.Tensor, int]:
    """Pre-norm output RMS at each minute of ``report_at``, the last chunk's
    output and the state's size in bytes."""
    mixing = copy.deepcopy(mixing).to(dtype)
    captured = {}
    mixing.norm.register_forward_hook(
        lambda _m, args, _out: captured.__setitem__("pre", args[0])
    )
    gen = torch.Generator().manual_seed(seed)
    d = mixing.d_model
    offset = torch.randn(d, generator=gen)
    norm = torch.nn.LayerNorm(d, elementwise_affine=False)
    total = int(minutes * FRAMES_PER_MINUTE)
    marks = {int(m * FRAMES_PER_MINUTE) // chunk: m for m in report_at}
    scales, state, out = {}, None, None
    for index in range(total // chunk):
        x = norm(torch.randn(1, chunk, d, generator=gen) + offset).to(dtype)
        out, state = mixing.stream(x, state)
        if index + 1 in marks:
            scales[marks[index + 1]] = captured["pre"].pow(2).mean().sqrt().item()
    size = sum(t.numel() * t.element_size() for t in state)
    return scales, out, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--chunk", type=int, default=16, help="encoder frames")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--summary-frames", type=float, default=256.0, help="the scaled mean's"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hp = load_hparams(HPARAMS_DIR / "hyperconformer_8M.yaml")
    mixing = hp["Transformer"].encoder.layers[0].mixing.eval()
    report_at = [m for m in (1 / 60, 1, 10, 30, 60) if m <= args.minutes]
    labels = {m: f"{m * 60:.0f} s" if m < 1 else f"{m:g} min" for m in report_at}
    print(f"chunk {args.chunk} frames, {args.minutes:g} min, {args.threads} thread(s)")
    print("| summary | " + " | ".join(labels[m] for m in report_at) + " |")
    print("|---|" + "---|" * len(report_at))
    rows = {"sum": ("sum", 1.0), "mean": ("mean", 1.0)}
    rows[f"mean x {args.summary_frames:g}"] = ("mean", args.summary_frames)
    for label, (summary, frames) in rows.items():
        mixing.summary, mixing.summary_frames = summary, frames
        start = time.process_time()
        with torch.inference_mode():
            scales, out32, size = stream_scales(
                mixing, args.minutes, args.chunk, report_at, torch.float32
            )
            _, out64, _ = stream_scales(
                mixing, args.minutes, args.chunk, report_at, torch.float64
            )
        drift = (out32.double() - out64).abs().max().item()
        cells = " | ".join(f"{scales[m]:.3g}" for m in report_at)
        print(f"| {label} | {cells} |")
        print(
            f"  last chunk, float32 vs float64: max |diff| {drift:.2e}; "
            f"state {size} bytes; {time.process_time() - start:.1f} s CPU"
        )


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Encoder speed and peak memory against input length.

Four encoders are compared, each with its convolutional front-end, from
fbank features to encoder output, each built from its recipe yaml
(``tools/measurement.py``: no size is written here):

* ``ours``: ``hyperconformer_8M.yaml`` (:class:`hyperconformer.ConvFrontEnd` +
  :class:`hyperconformer.HyperConformerASR`).
* ``sb_hypermixing``: the same yaml with SpeechBrain's ``ConvolutionFrontEnd``
  and ``TransformerASR`` (``attention_type="hypermixing"``).
* ``conformer_small``: ``conformer_small.yaml`` (SpeechBrain's
  ``ConvolutionFrontEnd`` + Conformer, ``RelPosMHAXL`` attention).
* ``conformer_small_convfe``: the same Conformer behind our ``ConvFrontEnd``,
  so that the encoder comparison is not partly a front-end comparison.

Inputs are random fbank-shaped tensors, ``(batch, seconds * 100, 80)``: 80 mel
bins at 100 frames per second, standard-normal like mean/variance normalised
fbanks.  Batch 1 is a single utterance; larger batches are padded batches whose
lengths spread evenly from 50% to 100% of the longest (padding frames are
zero and ``wav_lens`` says which frames are real).  The timed call is::

    model.encode(frontend(feats), wav_lens)

in eval mode under ``torch.inference_mode()``.

CPU: each cell (model x length x batch) runs in a fresh subprocess so that
peak memory is not contaminated by other cells.  Time is the median of
``--repeats`` runs after one warm-up run; memory is the peak RSS of the
subprocess (``resource.getrusage().ru_maxrss``, whose high-water mark is reset
right after model construction where Linux allows it), reported as the
increase over the RSS after model construction, followed by the absolute
peak (which includes the ~0.6 GiB of imported libraries).
CUDA: CUDA-event timing and ``torch.cuda.max_memory_allocated`` above the
memory held after model construction.

A cell that raises (e.g. SpeechBrain's hypermixing past 3000 encoder frames),
runs out of memory, or would take longer than ``--max-seconds-per-cell`` is
reported as such in the table instead of stopping the benchmark.

On a machine shared with other jobs, wall times with several threads are
unreliable: OpenMP threads spin at every barrier and a descheduled thread
stalls the others, which can slow a cell down tenfold.  Either run with
``OMP_WAIT_POLICY=PASSIVE`` in the environment, or measure the work itself
with ``--threads 1 --clock cpu``.  Every cell pays for first-touch page faults
of its large temporaries (glibc returns them to the system after each call);
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>`` removes that cost for
every model alike.

Usage::

    python tools/benchmark.py --threads 2
    python tools/benchmark.py --lengths 10 120 --batch 1 --models ours --json r.json
    python tools/benchmark.py --threads 1 --clock cpu  # busy machine
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from measurement import (  # noqa: E402  (tools/ is not a package)
    MODEL_YAMLS,
    N_MELS,
    CellResult,
    build_model,
    limit_memory,
    measure,
    peak_rss_mb,
    reset_peak_rss,
    status_for,
)

MODELS = tuple(MODEL_YAMLS)
DEFAULT_LENGTHS = (10, 30, 60, 120, 240, 600)

# How a model's time grows with length, used to skip cells over budget.
TIME_EXPONENT = {"ours": 1.0, "sb_hypermixing": 1.0}  # others: 2 (attention)


def run_cell_here(
    name: str,
    seconds: float,
    batch: int,
    device: str = "cpu",
    threads: int | None = None,
    repeats: int = 3,
    budget_s: float | None = None,
    max_memory_gb: float | None = None,
    model: torch.nn.Module | None = None,
    fresh_process: bool = False,
    clock: str = "wall",
) -> CellResult:
    """Builds the model (unless given) and measures one cell in this process."""
    if threads:
        torch.set_num_threads(threads)
    try:
        if model is None:
            model = build_model(name, device)
    except Exception as exc:  # e.g. the model cannot be imported
        return CellResult(name, seconds, batch, status=status_for(exc))
    base = None
    if fresh_process and device == "cpu":
        reset_peak_rss()
        base = peak_rss_mb()
    if fresh_process:
        limit_memory(max_memory_gb)
    return measure(model, name, seconds, batch, device, repeats, budget_s, base, clock)


def run_cell_subprocess(
    name: str,
    seconds: float,
    batch: int,
    device: str = "cpu",
    threads: int | None = None,
    repeats: int = 3,
    budget_s: float | None = None,
    max_memory_gb: float | None = None,
    clock: str = "wall",
) -> CellResult:
    """:func:`run_cell_here` in a fresh Python process (clean peak RSS)."""
    spec = dict(
        name=name,
        seconds=seconds,
        batch=batch,
        device=device,
        threads=threads,
        repeats=repeats,
        budget_s=budget_s,
        max_memory_gb=max_memory_gb,
        clock=clock,
    )
    cmd = [sys.executable, os.path.abspath(__file__), "--cell", json.dumps(spec)]
    # Model construction and start-up come on top of the measuring budget.
    timeout = None if budget_s is None else 2 * budget_s + 120
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return CellResult(name, seconds, batch, status="timeout")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return CellResult(**json.loads(lines[-1]))
    if proc.returncode in (-9, 137):
        return CellResult(name, seconds, batch, status="OOM (killed)")
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return CellResult(name, seconds, batch, status="fails: " + tail[:60])


def _predicted_time(
    results: Sequence[CellResult], name: str, seconds: float, batch: int
) -> float | None:
    """Extrapolates the time of a cell from the longest smaller measured one."""
    done = [
        r
        for r in results
        if r.model == name and r.batch == batch and r.status == "ok"
        if r.seconds < seconds and r.time_s
    ]
    if not done:
        return None
    prev = max(done, key=lambda r: r.seconds)
    return prev.time_s * (seconds / prev.seconds) ** TIME_EXPONENT.get(name, 2.0)


def run_benchmark(
    models: Sequence[str] = MODELS,
    lengths: Sequence[float] = DEFAULT_LENGTHS,
    batches: Sequence[int] = (1, 8),
    device: str = "cpu",
    threads: int | None = None,
    repeats: int = 3,
    budget_s: float | None = 300.0,
    max_memory_gb: float | None = 12.0,
    in_process: bool = False,
    log: Callable[[str], None] | None = print,
    clock: str = "wall",
    overrides: dict | None = None,
) -> list[CellResult]:
    """Measures every (model, length, batch) cell; never raises for a cell.

    ``overrides`` change the yamls (e.g. tiny sizes); in-process cells only.

    CPU cells run in fresh subprocesses unless ``in_process``; CUDA cells run
    in this process with one model per name.  A cell whose predicted time
    (from a shorter one) exceeds ``budget_s`` for its warm-up plus one run is
    skipped.
    """
    if threads:
        torch.set_num_threads(threads)
    common = dict(
        device=device, threads=threads, repeats=repeats, budget_s=budget_s, clock=clock
    )
    results: list[CellResult] = []
    for name in models:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
        shared = None
        for batch in batches:
            for seconds in sorted(lengths):
                predicted = _predicted_time(results, name, seconds, batch)
                if budget_s is not None and predicted and 2 * predicted > budget_s:
                    res = CellResult(
                        name, seconds, batch, status=f"skipped (~{predicted:.0f}s)"
                    )
                elif in_process or device != "cpu":
                    if shared is None:
                        try:
                            shared = build_model(name, device, overrides)
                        except Exception as exc:
                            shared = exc
                    if isinstance(shared, Exception):
                        res = CellResult(
                            name, seconds, batch, status=status_for(shared)
                        )
                    else:
                        res = run_cell_here(
                            name, seconds, batch, model=shared, **common
                        )
                else:
                    res = run_cell_subprocess(
                        name, seconds, batch, max_memory_gb=max_memory_gb, **common
                    )
                results.append(res)
                if log:
                    log(_describe(res))
        del shared
    return results


def _describe(r: CellResult) -> str:
    if r.status != "ok":
        return f"{r.model:>16} {r.seconds:>5g}s x{r.batch}: {r.status}"
    mem = "" if r.peak_mem_mb is None else f", peak +{r.peak_mem_mb:.0f} MiB"
    return (
        f"{r.model:>16} {r.seconds:>5g}s x{r.batch}: {_fmt_time(r.time_s)}"
        f" (runs: {', '.join(_fmt_time(t) for t in r.times_s)}){mem}"
    )


def _fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"


def _fmt_mem(r: CellResult | None) -> str:
    if r is None:
        return "-"
    if r.status != "ok":
        return r.status.split(" (")[0] if r.status.startswith("skipped") else "-"
    if r.peak_mem_mb is None:
        return "n/a"
    if r.peak_abs_mb is None:
        return f"{r.peak_mem_mb:.0f}"
    return f"{r.peak_mem_mb:.0f} ({r.peak_abs_mb:.0f})"


def format_table(results: Sequence[CellResult], repeats: int | None = None) -> str:
    """Markdown table: rows length x batch; time, speed ratios, peak memory.

    Times are medians; "±x%" flags a spread (max - min) over 40% of it, and
    "*" a cell timed fewer than ``repeats`` times because of its budget.
    """
    models = [m for m in MODELS if any(r.model == m for r in results)]
    cells = {(r.model, r.seconds, r.batch): r for r in results}
    rows = sorted({(r.seconds, r.batch) for r in results}, key=lambda k: (k[1], k[0]))
    ratio_models = [m for m in models if m != "ours"] if "ours" in models else []
    header = ["audio", "batch"]
    header += [f"time {m}" for m in models]
    header += [f"{m} / ours" for m in ratio_models]
    header += [f"peak MiB {m}" for m in models]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" for _ in header) + "|",
    ]
    for seconds, batch in rows:
        row = [f"{seconds:g} s", str(batch)]
        for m in models:
            r = cells.get((m, seconds, batch))
            row.append("-" if r is None else _cell_time(r, repeats))
        ours = cells.get(("ours", seconds, batch))
        for m in ratio_models:
            r = cells.get((m, seconds, batch))
            ok = r and ours and r.status == ours.status == "ok"
            row.append(f"{r.time_s / ours.time_s:.2f}x" if ok else "-")
        for m in models:
            row.append(_fmt_mem(cells.get((m, seconds, batch))))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "Peak memory: increase over the level after model construction "
        "(absolute peak in parentheses; CPU: peak RSS of a fresh process)."
    )
    if repeats and any(r.status == "ok" and len(r.times_s) < repeats for r in results):
        lines.append("*: timed fewer than --repeats times (--max-seconds-per-cell).")
    for batch in sorted({r.batch for r in results}):
        a = cells.get(("ours", 120, batch))
        b = cells.get(("ours", 240, batch))
        if a and b and a.status == b.status == "ok":
            lines.append(
                f"Scaling, ours, batch {batch}: time(240 s) / time(120 s) = "
                f"{b.time_s / a.time_s:.2f}"
            )
    return "\n".join(lines)


def _cell_time(r: CellResult, repeats: int | None = None) -> str:
    if r.status != "ok":
        return r.status
    spread = ""
    if len(r.times_s) > 1 and r.time_s:
        rel = (max(r.times_s) - min(r.times_s)) / r.time_s
        spread = f" ±{50 * rel:.0f}%" if rel > 0.4 else ""
    cut_short = "*" if repeats and len(r.times_s) < repeats else ""
    return _fmt_time(r.time_s) + spread + cut_short


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument(
        "--lengths",
        type=float,
        nargs="+",
        default=list(DEFAULT_LENGTHS),
        help="audio lengths in seconds",
    )
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--json", metavar="OUT", help="also save the results here")
    p.add_argument(
        "--max-seconds-per-cell",
        type=float,
        default=300.0,
        help="skip or cut short cells predicted/measured to take longer",
    )
    p.add_argument(
        "--max-memory-gb",
        type=float,
        default=12.0,
        help="CPU: address-space budget of a cell subprocess (0: none)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="CPU: run cells in this process (fast, but no per-cell memory)",
    )
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time instead of wall time (CPU device only; "
        "with --threads 1, robust to other load on the machine)",
    )
    p.add_argument("--cell", help=argparse.SUPPRESS)  # internal: one cell, JSON
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.cell:
        spec = json.loads(args.cell)
        result = run_cell_here(**spec, fresh_process=True)
        print(json.dumps(asdict(result)))
        return 0
    if args.device == "cuda" and args.clock == "cpu":
        print("--clock cpu is for the CPU device", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    threads = args.threads or torch.get_num_threads()
    print(
        f"# device={args.device} threads={threads} repeats={args.repeats} "
        f"clock={args.clock} "
        f"torch={torch.__version__}; inputs: random fbank-shaped "
        f"(B, 100*seconds, {N_MELS}) tensors"
    )
    if args.device == "cpu" and hasattr(os, "getloadavg"):
        print(
            f"# load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
        )
    start = time.time()
    results = run_benchmark(
        models=args.models,
        lengths=args.lengths,
        batches=args.batch,
        device=args.device,
        threads=threads,
        repeats=args.repeats,
        budget_s=args.max_seconds_per_cell or None,
        max_memory_gb=args.max_memory_gb or None,
        in_process=args.in_process,
        clock=args.clock,
    )
    print()
    print(format_table(results, args.repeats))
    if args.device == "cpu" and hasattr(os, "getloadavg"):
        print(
            f"\n# load average after: {os.getloadavg()[0]:.2f}; "
            f"total {time.time() - start:.0f} s"
        )
    if args.json:
        payload = dict(
            device=args.device,
            threads=threads,
            repeats=args.repeats,
            clock=args.clock,
            torch=torch.__version__,
            results=[asdict(r) for r in results],
        )
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

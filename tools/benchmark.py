#!/usr/bin/env python
"""Encoder speed and peak memory against input length.

Three encoders are compared, each with its convolutional front-end, from
fbank features to encoder output:

* ``ours``: :class:`hyperconformer.ConvFrontEnd` +
  :class:`hyperconformer.HyperConformerASR` (hyperconformer_8M sizes).
* ``sb_hypermixing``: SpeechBrain's ``ConvolutionFrontEnd`` + ``TransformerASR``
  with ``attention_type="hypermixing"`` and the same sizes.
* ``conformer_small``: SpeechBrain's ``ConvolutionFrontEnd`` + Conformer-small
  (``RelPosMHAXL`` attention, 12 layers, d_ffn 1024).

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
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

FRAMES_PER_SECOND = 100
N_MELS = 80
MODELS = ("ours", "sb_hypermixing", "conformer_small")
DEFAULT_LENGTHS = (10, 30, 60, 120, 240, 600)

# The HyperConformer recipes' front-end (ConvolutionFrontEnd arguments).
FRONTEND = dict(
    input_shape=(8, 10, N_MELS),
    num_blocks=2,
    num_layers_per_block=1,
    out_channels=(64, 32),
    kernel_sizes=(3, 3),
    strides=(2, 2),
    residuals=(False, False),
)
# hyperconformer_8M sizes; input_size = 20 freq bins x 32 channels.
HYPERCONFORMER_8M = dict(
    input_size=640,
    tgt_vocab=5000,
    d_model=144,
    nhead=8,
    num_encoder_layers=10,
    num_decoder_layers=4,
    d_ffn=576,
    dropout=0.1,
    activation=torch.nn.GELU,
    normalize_before=True,
    causal=False,
)
CONFORMER_SMALL = dict(
    input_size=640,
    tgt_vocab=5000,
    d_model=144,
    nhead=4,
    num_encoder_layers=12,
    num_decoder_layers=4,
    d_ffn=1024,
    dropout=0.1,
    activation=torch.nn.GELU,
    encoder_module="conformer",
    attention_type="RelPosMHAXL",
    normalize_before=True,
    causal=False,
)
# How a model's time grows with length, used to skip cells over budget.
TIME_EXPONENT = {"ours": 1.0, "sb_hypermixing": 1.0, "conformer_small": 2.0}


class EncoderPipeline(torch.nn.Module):
    """Front-end followed by ``encode``: ``(B, T, 80)`` fbanks to ``(B, T', d)``.

    Arguments
    ---------
    frontend : torch.nn.Module
        Maps ``(B, T, n_mels)`` to ``(B, T', F', C)``.
    asr : torch.nn.Module
        Has ``encode(src, wav_len)`` like SpeechBrain's ``TransformerASR``.
    """

    def __init__(self, frontend: torch.nn.Module, asr: torch.nn.Module):
        super().__init__()
        self.frontend = frontend
        self.asr = asr

    def forward(self, feats: torch.Tensor, wav_lens: torch.Tensor) -> torch.Tensor:
        return self.asr.encode(self.frontend(feats), wav_lens)


def build_model(name: str, device: str | torch.device = "cpu") -> EncoderPipeline:
    """Builds one of :data:`MODELS` (seeded, eval mode) on ``device``."""
    torch.manual_seed(0)
    if name == "ours":
        from hyperconformer import ConvFrontEnd, HyperConformerASR

        model = EncoderPipeline(
            ConvFrontEnd(**FRONTEND), HyperConformerASR(**HYPERCONFORMER_8M)
        )
    elif name in ("sb_hypermixing", "conformer_small"):
        from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
        from speechbrain.lobes.models.transformer.TransformerASR import (
            TransformerASR,
        )

        sizes = (
            CONFORMER_SMALL
            if name == "conformer_small"
            else dict(
                HYPERCONFORMER_8M,
                encoder_module="conformer",
                attention_type="hypermixing",
            )
        )
        model = EncoderPipeline(
            ConvolutionFrontEnd(**FRONTEND), TransformerASR(**sizes)
        )
    else:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    return model.to(device).eval()


def make_inputs(
    seconds: float, batch: int, device: str | torch.device = "cpu", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random fbank-shaped features and relative lengths.

    Returns ``feats`` ``(batch, seconds * 100, 80)`` and ``wav_lens``
    ``(batch,)``: 1.0 for batch 1, else evenly spread from 0.5 to 1.0 (the
    frames past each length are zero).
    """
    frames = int(round(seconds * FRAMES_PER_SECOND))
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, frames, N_MELS, generator=gen)
    if batch == 1:
        wav_lens = torch.ones(1)
    else:
        wav_lens = torch.linspace(0.5, 1.0, batch)
        for i, rel in enumerate(wav_lens.tolist()):
            feats[i, int(round(rel * frames)) :] = 0.0
    return feats.to(device), wav_lens.to(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], object],
    device: torch.device,
    repeats: int,
    budget_s: float | None = None,
    clock: str = "wall",
) -> list[float]:
    """Seconds per call of ``fn``: one warm-up call, then up to ``repeats``.

    Stops early (keeping at least one timing) once ``budget_s`` would be
    exceeded; if the warm-up alone takes over half the budget, its own time is
    returned.  ``clock="cpu"`` (CPU only) counts the CPU time of the whole
    process instead of wall time: with ``--threads 1`` it measures the work
    done, which a busy machine distorts much less than wall time.
    """
    timer = time.process_time if clock == "cpu" else time.perf_counter
    start = timer()
    fn()
    _synchronize(device)
    warmup = timer() - start
    if budget_s is not None and warmup > budget_s / 2:
        return [warmup]
    times = []
    for _ in range(max(repeats, 1)):
        if device.type == "cuda":
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1000)
        else:
            start = timer()
            fn()
            times.append(timer() - start)
        spent = warmup + sum(times)
        if budget_s is not None and spent + times[-1] > budget_s:
            break
    return times


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def _reset_peak_rss() -> None:
    """Resets the peak RSS (and ru_maxrss) to the current RSS, where Linux
    allows it, so the peak measured next excludes model construction."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # the peak then includes construction: still an upper bound


def _status_for(exc: BaseException) -> str:
    """A short table-friendly description of why a cell failed."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or re.search(
        r"out of memory|can't allocate memory|not enough memory", text, re.I
    ):
        return "OOM"
    sizes = re.search(r"size of tensor a \((\d+)\) must match .* b \((\d+)\)", text)
    if sizes:
        return f"fails: >{min(int(sizes[1]), int(sizes[2]))} frames"
    first_line = text.splitlines()[0] if text else type(exc).__name__
    return "fails: " + first_line[:60]


@dataclass
class CellResult:
    """The outcome of one (model, length, batch) measurement."""

    model: str
    seconds: float
    batch: int
    status: str = "ok"  # "ok", "OOM", "skipped ...", "fails: ...", "timeout"
    time_s: float | None = None  # median
    times_s: list[float] = field(default_factory=list)
    peak_mem_mb: float | None = None  # increase over the post-construction level
    peak_abs_mb: float | None = None  # absolute peak (RSS on CPU)
    base_mem_mb: float | None = None
    encoder_frames: int | None = None


def start_cuda_peak(device: torch.device) -> int | None:
    """Frees cached blocks and restarts the CUDA peak count; returns the bytes
    allocated now, the base that :func:`record_peak_memory` subtracts (None
    on other devices, which have no allocator statistics)."""
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    return base


def record_peak_memory(
    result: CellResult,
    device: torch.device,
    cuda_base: int | None,
    base_mem_mb: float | None,
) -> None:
    """Fills ``result``'s memory fields after its runs: on CUDA from the
    allocator's peak above ``cuda_base``; on CPU from the peak RSS above
    ``base_mem_mb``, when that is known (a fresh process only)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        result.peak_mem_mb = (peak - cuda_base) / 2**20
        result.peak_abs_mb = peak / 2**20
        result.base_mem_mb = cuda_base / 2**20
    elif base_mem_mb is not None:
        result.base_mem_mb = base_mem_mb
        result.peak_abs_mb = peak_rss_mb()
        result.peak_mem_mb = result.peak_abs_mb - base_mem_mb


def measure(
    model: torch.nn.Module,
    name: str,
    seconds: float,
    batch: int,
    device: str | torch.device = "cpu",
    repeats: int = 3,
    budget_s: float | None = None,
    base_mem_mb: float | None = None,
    clock: str = "wall",
) -> CellResult:
    """Times ``model(feats, wav_lens)`` for one cell; failures become statuses.

    On CUDA the peak memory is measured here; on CPU only when
    ``base_mem_mb`` (the RSS after model construction) is given, which is
    meaningful in a fresh process only.
    """
    device = torch.device(device)
    result = CellResult(name, seconds, batch)
    try:
        feats, wav_lens = make_inputs(seconds, batch, device)
        base = start_cuda_peak(device)
        out = None

        def call():
            nonlocal out
            with torch.inference_mode():
                out = model(feats, wav_lens)

        times = time_call(call, device, repeats, budget_s, clock)
        result.times_s = times
        result.time_s = statistics.median(times)
        result.encoder_frames = int(out.shape[1])
        record_peak_memory(result, device, base, base_mem_mb)
    except (RuntimeError, MemoryError, ValueError, IndexError) as exc:
        result.status = _status_for(exc)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def _limit_memory(max_memory_gb: float | None) -> None:
    """Caps this process's address space at its current size + the budget,
    so an oversized cell fails with an allocation error instead of making
    the machine swap or the OOM killer pick a victim."""
    if not max_memory_gb or not hasattr(resource, "RLIMIT_AS"):
        return
    with open("/proc/self/status") as status:
        vm_kb = next(int(line.split()[1]) for line in status if line[:7] == "VmSize:")
    limit = int(vm_kb * 1024 + max_memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))


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
        return CellResult(name, seconds, batch, status=_status_for(exc))
    base = None
    if fresh_process and device == "cpu":
        _reset_peak_rss()
        base = peak_rss_mb()
    if fresh_process:
        _limit_memory(max_memory_gb)
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
) -> list[CellResult]:
    """Measures every (model, length, batch) cell; never raises for a cell.

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
                            shared = build_model(name, device)
                        except Exception as exc:
                            shared = exc
                    if isinstance(shared, Exception):
                        res = CellResult(
                            name, seconds, batch, status=_status_for(shared)
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

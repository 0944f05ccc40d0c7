#!/usr/bin/env python
"""The GPU check: training, inference and decoding on CUDA, in one report.

On a CUDA machine (``make gpu-check``) it measures, in about 5 minutes and at
most ``--deadline-minutes`` (8), and writes ``docs/benchmarks-gpu.md``:

* **training**: bf16 autocast steps (forward, backward, clipping, Adam) of
  hyperconformer_8M, hyperconformer_22M, conformer_small and SpeechBrain's own
  hypermixing (the 8M yaml with SpeechBrain's classes) on LibriSpeech-shaped
  dynamic batches: 600 s of 10-20 s utterances (random fbank-shaped features,
  3 random tokens per second); steps/s and peak allocated memory;
* **encoder inference**, 10 s to 10 min, batch 1 and 8 (``tools/benchmark.py``'s
  cells: front-end + encoder, fp32, CUDA events);
* **joint CTC/attention beam search** of one batch with the yaml's test
  searcher (beam 66, CTC weight 0.4);
* **2-process DDP** training steps (nccl) if the machine has 2 GPUs.

Every model comes from its recipe yaml (``tools/measurement.py``). ``--tiny``
runs the same code on the CPU with tiny sizes and inputs in seconds, so the
test suite keeps it working on machines without a GPU.

Usage::

    python tools/gpu_check.py                       # CUDA: docs/benchmarks-gpu.md
    python tools/gpu_check.py --tiny --out /tmp/gpu_check.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

TOOLS = Path(__file__).resolve().parent
for _path in (str(TOOLS), str(TOOLS.parent)):  # runs without installing
    if _path not in sys.path:
        sys.path.insert(0, _path)

from benchmark import format_table, run_benchmark  # noqa: E402
from measurement import (  # noqa: E402
    FRAMES_PER_SECOND,
    HPARAMS_DIR,
    N_MELS,
    TINY_SIZES,
    TOKENS_PER_SECOND,
    load_hparams,
    speechbrain_classes,
    status_for,
    synchronize,
    training_loss,
)

ROOT = TOOLS.parent
WARM_UP_S = 3.0  # untimed training steps on a GPU before the clock starts
# Training models: label -> (yaml, transformation).
TRAINING = {
    "hyperconformer_8M": ("hyperconformer_8M.yaml", None),
    "hyperconformer_22M": ("hyperconformer_22M.yaml", None),
    "conformer_small": ("conformer_small.yaml", None),
    "sb_hypermixing (8M)": ("hyperconformer_8M.yaml", speechbrain_classes),
}
DECODING = ("hyperconformer_8M", "conformer_small")


@dataclass(frozen=True)
class Sizes:
    """Inputs of one mode."""

    batch_seconds: float  # audio per dynamic training batch
    utterance_seconds: tuple[float, float]
    train_steps: int
    lengths: tuple[float, ...]
    batches: tuple[int, ...]
    decode_batch: int
    overrides: dict


GPU = Sizes(600.0, (10.0, 20.0), 20, (10, 30, 60, 120, 300, 600), (1, 8), 8, {})
TINY = Sizes(6.0, (1.0, 2.0), 2, (1, 2), (1, 2), 2, {**TINY_SIZES, "test_beam_size": 2})


def yaml_hparams(filename: str, transform, overrides: dict) -> dict:
    text = (HPARAMS_DIR / filename).read_text(encoding="utf-8")
    return load_hparams(filename, overrides, transform(text) if transform else text)


def dynamic_batch(
    sizes: Sizes, vocab: int, device: torch.device, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Utterances of ``utterance_seconds`` until ``batch_seconds`` are full, as
    the recipe's DynamicBatchSampler fills a batch: padded features
    ``(batch, frames, 80)``, relative lengths and token targets (as many per
    utterance as the shortest one allows at 3 per second)."""
    gen = torch.Generator().manual_seed(seed)
    low, high = sizes.utterance_seconds
    lengths: list[float] = []
    while True:
        seconds = low + (high - low) * torch.rand(1, generator=gen).item()
        if sum(lengths) + seconds > sizes.batch_seconds:
            break
        lengths.append(seconds)
    frames = [int(s * FRAMES_PER_SECOND) for s in lengths]
    feats = torch.zeros(len(frames), max(frames), N_MELS)
    for i, n in enumerate(frames):
        feats[i, :n] = torch.randn(n, N_MELS, generator=gen)
    wav_lens = torch.tensor(frames, dtype=torch.float) / max(frames)
    n_tokens = max(1, int(min(lengths) * TOKENS_PER_SECOND))
    tokens = torch.randint(3, vocab, (len(frames), n_tokens), generator=gen)
    return feats.to(device), wav_lens.to(device), tokens.to(device)


PARTS = ("CNN", "Transformer", "ctc_lin", "seq_lin")


class RecipeLoss(torch.nn.Module):
    """The recipe's training loss as one module (so DDP can wrap it):
    ``(feats, wav_lens, tokens)`` -> ``measurement.training_loss``."""

    def __init__(self, hp: dict) -> None:
        super().__init__()
        self.hp = hp
        self.parts = torch.nn.ModuleList(hp[k] for k in PARTS)

    def forward(self, feats, wav_lens, tokens) -> torch.Tensor:
        return training_loss(self.hp, feats, wav_lens, tokens)


def training_step_rate(
    hp: dict, sizes: Sizes, device: torch.device, ddp_rank: int | None = None
) -> tuple[float, float | None, int]:
    """bf16 training steps on dynamic batches: (steps/s, peak GiB, batch size).

    The recipe's loss, clipping at the yaml's ``max_grad_norm`` and the yaml's
    Adam; a warm-up step per distinct batch is not timed. Peak: CUDA only
    (else None).
    """
    loss_fn = RecipeLoss(hp).to(device).train()
    params = list(loss_fn.parameters())
    optimizer = hp["opt_class"](params)
    if ddp_rank is not None:
        loss_fn = torch.nn.parallel.DistributedDataParallel(
            loss_fn, device_ids=[ddp_rank]
        )
    seeds = range(3) if ddp_rank is None else range(3 * ddp_rank, 3 * ddp_rank + 3)
    vocab = int(hp["output_neurons"])
    batches = [dynamic_batch(sizes, vocab, device, seed) for seed in seeds]

    def step(i: int) -> None:
        feats, wav_lens, tokens = batches[i % len(batches)]
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn(feats, wav_lens, tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, hp["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # Untimed steps: one per batch, so that every shape's kernels are loaded
    # and tuned, and then on a GPU for WARM_UP_S, so that its clocks are up
    # (on an H200, with one step per batch only, the 8M model, measured first,
    # came out slower than the 22M one measured after it).
    for i in range(len(batches)):
        step(i)
    if device.type == "cuda":
        warm_start = time.perf_counter()
        while time.perf_counter() - warm_start < WARM_UP_S:
            step(0)
            synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    for i in range(sizes.train_steps):
        step(i)
    synchronize(device)
    rate = sizes.train_steps / (time.perf_counter() - start)
    peak = None
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    return rate, peak, batches[0][0].size(0)


def decode_batch(hp: dict, sizes: Sizes, device: torch.device) -> tuple[float, int]:
    """Seconds to beam-search one batch (untimed warm-up first), and its size.

    The model is untrained, so the search would run to ``max_decode_ratio``;
    it is capped at LibriSpeech's token rate instead (3 per second)."""
    for key in ("CNN", "Transformer", "ctc_lin", "seq_lin"):
        hp[key].to(device).eval()
    searcher = hp["test_search"](scorer=hp["scorer"]).to(device)
    feats, wav_lens, _ = dynamic_batch(sizes, 8, device, seed=7)
    feats, wav_lens = feats[: sizes.decode_batch], wav_lens[: sizes.decode_batch]
    wav_lens = wav_lens / wav_lens.max()
    with torch.inference_mode():
        enc = hp["Transformer"].encode(hp["CNN"](feats), wav_lens)
        # tokens per encoder frame at 3 tokens/s
        searcher.max_decode_ratio = (
            TOKENS_PER_SECOND * feats.size(1) / (FRAMES_PER_SECOND * enc.size(1))
        )
        searcher(enc, wav_lens)
        synchronize(device)
        start = time.perf_counter()
        searcher(enc, wav_lens)
        synchronize(device)
    return time.perf_counter() - start, feats.size(0)


def _ddp_rank(rank: int, port: int, sizes: Sizes, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("nccl", rank=rank, world_size=2)
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    torch.manual_seed(0)
    hp = yaml_hparams("hyperconformer_8M.yaml", None, sizes.overrides)
    results[rank] = training_step_rate(hp, sizes, device, ddp_rank=rank)
    torch.distributed.destroy_process_group()


def ddp_step_rates(sizes: Sizes) -> list[tuple[float, float, int]]:
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_ddp_rank, args=(29400 + os.getpid() % 500, sizes, results), nprocs=2)
    return [results[r] for r in range(2)]


def machine_lines(device: torch.device) -> list[str]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        what = (
            f"{props.name}, {props.total_memory / 2**30:.0f} GiB, "
            f"{torch.cuda.device_count()} GPU(s), CUDA {torch.version.cuda}"
        )
    else:
        what = f"CPU ({platform.processor() or platform.machine()}), tiny sizes"
    return [
        f"- Device: {what}",
        f"- torch {torch.__version__}, Python {platform.python_version()}",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "- Command: `python " + " ".join(["tools/gpu_check.py", *sys.argv[1:]]) + "`",
    ]


def run(sizes: Sizes, device: torch.device, deadline_s: float, out: Path) -> Path:
    """Measures every section within ``deadline_s`` and writes the report."""
    start = time.monotonic()
    left = lambda: deadline_s - (time.monotonic() - start)  # noqa: E731
    lines = ["# GPU check", "", *machine_lines(device), ""]

    lines += [
        "## Training (bf16 autocast, Adam, dynamic batches)",
        "",
        f"Batches of {sizes.batch_seconds:g} s of {sizes.utterance_seconds[0]:g}-"
        f"{sizes.utterance_seconds[1]:g} s utterances; {sizes.train_steps} timed "
        "steps after a warm-up step on each distinct batch "
        f"(and, on a GPU, {WARM_UP_S:g} s of untimed steps); "
        "peak: `torch.cuda.max_memory_allocated` "
        "(model, optimiser state and activations).",
        "",
        "| model | parameters | utterances | steps/s | audio h/s | peak GiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rates = {}
    for label, (filename, transform) in TRAINING.items():
        row, hp = f"| {label} | ", None
        try:
            if left() < 60:
                raise TimeoutError("skipped (time)")
            torch.manual_seed(0)
            hp = yaml_hparams(filename, transform, sizes.overrides)
            n = sum(p.numel() for p in hp["model"].parameters())
            rate, peak, batch = training_step_rate(hp, sizes, device)
            rates[label] = (rate, peak)
            hours = rate * sizes.batch_seconds / 3600
            gib = "n/a" if peak is None else f"{peak:.2f}"
            row += f"{n / 1e6:.2f} M | {batch} | {rate:.2f} | {hours:.3f} | {gib} |"
        except Exception as exc:  # a failing model is a row, not a crash
            row += f"{status_for(exc)} | | | | |"
        lines.append(row)
        print(row, flush=True)
        del hp
        if device.type == "cuda":
            torch.cuda.empty_cache()

    lines += ["", "## Encoder inference (fp32, front-end + encoder)", ""]
    # Per cell, so that the whole sweep fits what is left of the deadline.
    n_cells = 4 * len(sizes.lengths) * len(sizes.batches)
    budget = min(30.0, max(0.8 * left() / n_cells, 1.0))
    cells = run_benchmark(
        lengths=sizes.lengths,
        batches=sizes.batches,
        device=device.type,
        repeats=3,
        budget_s=budget,
        in_process=True,
        log=lambda text: print(text, flush=True),
        overrides=sizes.overrides,
    )
    lines += [format_table(cells, 3), ""]
    speed = []
    for r in cells:
        if r.model != "ours" or r.status != "ok":
            continue
        for other in ("conformer_small", "conformer_small_convfe"):
            c = next(
                (
                    c
                    for c in cells
                    if (c.model, c.seconds, c.batch) == (other, r.seconds, r.batch)
                    and c.status == "ok"
                ),
                None,
            )
            if c:
                speed.append((other, c.time_s / r.time_s - 1))

    lines += ["## Joint CTC/attention beam search (fp32)", ""]
    lines += [
        "| model | utterances | beam | seconds per batch |",
        "|---|---:|---:|---:|",
    ]
    for label in DECODING:
        filename = f"{label}.yaml"
        try:
            if left() < 30:
                raise TimeoutError("skipped (time)")
            hp = yaml_hparams(filename, None, sizes.overrides)
            seconds, n = decode_batch(hp, sizes, device)
            beam = hp["test_beam_size"]
            lines.append(f"| {label} | {n} | {beam} | {seconds:.2f} |")
        except Exception as exc:
            lines.append(f"| {label} | | | {status_for(exc)} |")
        print(lines[-1], flush=True)

    if device.type == "cuda" and torch.cuda.device_count() >= 2 and left() > 60:
        lines += ["", "## 2-process DDP (nccl), hyperconformer_8M, bf16", ""]
        try:
            per_rank = ddp_step_rates(sizes)
            for rank, (rate, peak, batch) in enumerate(per_rank):
                lines.append(
                    f"- rank {rank}: {rate:.2f} steps/s, {batch} utterances, "
                    f"peak {peak or 0:.2f} GiB"
                )
        except Exception as exc:
            lines.append(f"- {status_for(exc)}")

    lines += ["", "## Beside the paper's claims", ""]
    peak = rates.get("hyperconformer_8M", (None, None))[1]
    if peak is not None:
        lines.append(
            f"- Peak training memory, 8M: {peak * 2**30 / 1e9:.1f} GB here "
            f"(bf16, dynamic batches of {sizes.batch_seconds:g} s); paper: 5.7 GB."
        )
    for other in ("conformer_small", "conformer_small_convfe"):
        faster = [f for name, f in speed if name == other]
        if faster:
            lines.append(
                f"- Encoder speed against {other} (its time / ours - 1): "
                f"{100 * min(faster):.0f}% to {100 * max(faster):.0f}% faster "
                f"(median {100 * statistics.median(faster):.0f}%) over the "
                "inference cells measured for both; paper: 38-56% faster."
            )
    lines += ["", f"Total: {time.monotonic() - start:.0f} s."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU")
    p.add_argument("--out", type=Path, help="report (default docs/benchmarks-gpu.md)")
    p.add_argument("--deadline-minutes", type=float, default=8.0)
    args = p.parse_args(argv)
    if args.tiny:
        device, sizes = torch.device("cpu"), TINY
        # On a busy CPU, more threads mostly wait for each other.
        torch.set_num_threads(1)
    elif torch.cuda.is_available():
        device, sizes = torch.device("cuda"), GPU
    else:
        print("error: no CUDA device (use --tiny for the CPU form)", file=sys.stderr)
        return 2
    out = args.out or ROOT / "docs" / "benchmarks-gpu.md"
    print(f"wrote {run(sizes, device, 60 * args.deadline_minutes, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

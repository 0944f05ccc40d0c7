#!/usr/bin/env python
"""HyperConformer against Conformer: parameters, WER, speed and memory.

Every hparams file given (default: the LibriSpeech pair hyperconformer_8M /
conformer_small and the demo pair) is instantiated as the recipe would, and:

* **parameters** are counted: front-end (``CNN``), encoder (the
  ``Transformer`` without its decoder and target embedding), decoder, output
  layers (``ctc_lin``, ``seq_lin``) and the total of ``model``, which is what
  the recipe reports and checkpoints;
* **inference**: ``Transformer.encode(CNN(feats), wav_lens)`` is timed on
  random fbank-shaped inputs from 5 s to 10 min of audio, batch 1 and a padded
  batch, with the cell machinery of ``tools/benchmark.py`` (time: median of
  ``--repeats`` runs after a warm-up; CPU memory: peak RSS above the RSS
  before the cell, in a fresh process per model and batch size; CUDA: CUDA
  events and ``torch.cuda.max_memory_allocated``);
* **training**: one forward + backward step of the recipe's loss
  (``ctc_weight`` x CTC + the rest x attention loss, label smoothing as in
  the yaml) on a fixed batch of random features and random token targets,
  no optimiser step;
* **WER**: the ``wer_<split>.txt`` files written by
  ``recipes/LibriSpeech/ASR/train.py`` in any result folders given.

Ratios are HyperConformer / Conformer, for each HyperConformer file paired
with a Conformer file (same name without ``hyper``, else the next one given).
A cell that cannot run (out of memory, SpeechBrain's 3000-frame cap, predicted
to take longer than the per-cell budget, no CUDA) says so in its table cell.

The report (``report.md``) and its plots go to ``--out``:

    python tools/compare.py                      # full run: CPU, + CUDA if present
    python tools/compare.py --device cuda        # CUDA only
    python tools/compare.py --quick              # tiny models, < 1 min (CI)
    python tools/compare.py --results results/hyperconformer_8M/7775 \\
        results/conformer_small/7775             # + their test WER
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import queue
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import torch

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from benchmark import _cell_time, _describe  # noqa: E402  (tools/ is not a package)
from measurement import (  # noqa: E402
    FRAMES_PER_SECOND,
    HPARAMS_DIR,
    N_MELS,
    TINY_SIZES,
    TOKENS_PER_SECOND,
    CellResult,
    encoder_pipeline,
    limit_memory,
    load_hparams,
    measure,
    measure_training,
    peak_rss_mb,
    reset_peak_rss,
    status_for,
    training_loss_name,
)

DEFAULT_HPARAMS = tuple(
    HPARAMS_DIR / name
    for name in (
        "hyperconformer_8M.yaml",
        "conformer_small.yaml",
        "hyperconformer_demo.yaml",
        "conformer_demo.yaml",
    )
)


@dataclass(frozen=True)
class Preset:
    """Measurement sizes of one mode; command-line options override them."""

    lengths: tuple[float, ...]
    batches: tuple[int, ...]
    repeats: int
    train_batch: int
    train_seconds: tuple[float, ...]
    budget_s: float
    overrides: dict = field(default_factory=dict)
    in_process: bool = False
    threads: int | None = None  # None: torch's default (one per core)


FULL = Preset(
    lengths=(5, 10, 30, 60, 120, 300, 600),
    batches=(1, 8),
    repeats=3,
    train_batch=16,
    train_seconds=(15,),
    budget_s=120.0,
)
# Tiny models, so that CI exercises every code path in seconds.
QUICK = Preset(
    lengths=(2, 4),
    batches=(1, 2),
    repeats=1,
    train_batch=2,
    train_seconds=(2,),
    budget_s=20.0,
    overrides=TINY_SIZES,
    in_process=True,
    threads=1,  # on a busy CI runner, more threads mostly wait for each other
)

# Memory amounts below this are allocator noise on CPU: no ratio.
MIN_RATIO_MB = 8.0
# Input length of the unmeasured run that precedes a series.
PRIME_SECONDS = 1.0
# Statuses after which longer inputs of the same series are not even tried.
_HOPELESS = ("OOM", "timeout")


# ---------------------------------------------------------------- models


def _count(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def count_parameters(hp: dict) -> dict[str, int]:
    """Parameters per part; ``total`` is ``model`` (what the recipe counts)."""
    asr = hp["Transformer"]
    decoder = sum(
        _count(child)
        for name, child in asr.named_children()
        if name.startswith("decoder") or name.startswith("custom_tgt")
    )
    counts = {
        "front_end": _count(hp.get("CNN")),
        "encoder": _count(asr) - decoder,
        "decoder": decoder,
        "output": _count(hp.get("ctc_lin")) + _count(hp.get("seq_lin")),
    }
    parts = sum(counts.values())
    counts["total"] = _count(hp["model"]) if "model" in hp else parts
    return counts


def encoder_kind(asr: torch.nn.Module) -> tuple[str, str]:
    """(kind, description): kind is ``HyperConformer`` or the baseline's."""
    from hyperconformer import HyperConformerASR

    if isinstance(asr, HyperConformerASR):
        return "HyperConformer", "HyperConformer (HyperConformerASR)"
    attention = str(getattr(asr, "attention_type", ""))
    conformer = "Conformer" in type(getattr(asr, "encoder", None)).__name__
    base = "Conformer" if conformer else "Transformer"
    if attention == "hypermixing":
        kind = "HyperConformer" if conformer else "HyperMixer"
        return kind, f"{kind} (SpeechBrain hypermixing)"
    return base, f"{base} ({attention or type(asr).__name__})"


@dataclass
class ModelInfo:
    """One hparams file, as measured."""

    label: str  # the file's stem
    hparams: str  # the path as given
    kind: str = "?"
    description: str = ""
    front_end_type: str = ""
    frame_ms: float | None = None  # encoder frame period
    params: dict[str, int] = field(default_factory=dict)
    loss: str = ""
    error: str | None = None  # the file could not be instantiated
    # The file as read once: every measurement uses this text, even if the
    # file is edited during a run.
    text: str | None = None

    @property
    def is_hyper(self) -> bool:
        return self.kind.startswith("Hyper")


def describe_model(path: str | Path, overrides: dict) -> ModelInfo:
    """Loads one hparams file and counts its parameters; never raises."""
    info = ModelInfo(Path(path).stem, str(path))
    try:
        info.text = Path(path).read_text(encoding="utf-8")
        hp = load_hparams(path, overrides, info.text)
        encoder_pipeline(hp)  # checks that the keys exist
        info.kind, info.description = encoder_kind(hp["Transformer"])
        cnn = type(hp["CNN"])
        package = cnn.__module__.split(".")[0]
        info.front_end_type = f"{cnn.__name__} ({package})"
        info.params = count_parameters(hp)
        info.loss = training_loss_name(hp)
        frames = 8 * FRAMES_PER_SECOND
        with torch.inference_mode():
            out = hp["CNN"](torch.zeros(1, frames, N_MELS))
        info.frame_ms = 1000 * frames / FRAMES_PER_SECOND / out.shape[1]
    except Exception as exc:  # a broken file is a row in the report, not a crash
        info.error = status_for(exc)
    return info


def pair_up(items: Sequence[tuple[str, bool]]) -> list[tuple[str, str]]:
    """(HyperConformer, baseline) label pairs from (label, is_hyper) items.

    A HyperConformer pairs with the baseline of the same name without
    ``hyper`` (hyperconformer_demo / conformer_demo), else with the next
    unpaired baseline after it, else with any unpaired one.
    """
    baselines = [label for label, hyper in items if not hyper]
    order = [label for label, _ in items]
    pairs = []
    for label, hyper in items:
        if not hyper or not baselines:
            continue
        twin = re.sub("hyper", "", label, flags=re.I)
        after = [b for b in baselines if order.index(b) > order.index(label)]
        match = twin if twin in baselines else (after or baselines)[0]
        baselines.remove(match)
        pairs.append((label, match))
    return pairs


# ---------------------------------------------------------------- training step


# ---------------------------------------------------------------- cells


@dataclass
class Settings:
    """How cells are measured."""

    device: str = "cpu"
    threads: int = 1
    repeats: int = 3
    budget_s: float | None = 120.0
    max_memory_gb: float | None = 16.0
    clock: str = "wall"
    in_process: bool = False
    overrides: dict = field(default_factory=dict)


def _trim_heap() -> None:
    """Hands freed heap memory back to the OS (glibc), so that memory freed
    by an earlier cell is not silently reused by the next one, unseen by the
    peak RSS."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the peak may then be a little low


def measure_here(
    task: str, hp: dict, label: str, seconds: float, batch: int, settings: Settings
) -> CellResult:
    """One inference or training cell on an instantiated hparams dict."""
    device = settings.device
    base = None
    if device == "cpu":
        reset_peak_rss()
        _trim_heap()
        reset_peak_rss()
        base = peak_rss_mb()
    common = dict(
        device=device,
        repeats=settings.repeats,
        budget_s=settings.budget_s,
        base_mem_mb=base,
        clock=settings.clock,
    )
    if task == "inference":
        pipeline = encoder_pipeline(hp).to(device).eval()
        return measure(pipeline, label, seconds, batch, **common)
    return measure_training(hp, label, seconds, batch, **common)


def predicted_time(
    results: Sequence[CellResult], model: ModelInfo, seconds: float, batch: int
) -> float | None:
    """Time of one run of a cell, extrapolated from shorter ones of the series.

    The growth exponent is measured between the two longest shorter cells
    (clamped to [1, 2]: linear to quadratic), else assumed: 1 for
    HyperConformer, 2 for attention.
    """
    done = sorted(
        (r.seconds, r.time_s)
        for r in results
        if r.model == model.label and r.batch == batch and r.status == "ok"
        if r.seconds < seconds and r.time_s
    )
    if not done:
        return None
    s1, t1 = done[-1]
    exponent = 1.0 if model.is_hyper else 2.0
    if len(done) > 1 and done[-2][0] < s1:
        s0, t0 = done[-2]
        exponent = math.log(t1 / t0) / math.log(s1 / s0)
        exponent = min(max(exponent, 1.0), 2.0)
    return t1 * (seconds / s1) ** exponent


def skip_reason(
    results: Sequence[CellResult],
    model: ModelInfo,
    seconds: float,
    batch: int,
    budget_s: float | None,
) -> str | None:
    """Why a cell is not worth running, from the shorter cells of its series."""
    for r in results:
        if r.model == model.label and r.batch == batch:
            if r.status.startswith(_HOPELESS) and r.seconds < seconds:
                return f"skipped ({r.status.split(' (')[0]} before)"
    predicted = predicted_time(results, model, seconds, batch)
    if budget_s and predicted and predicted > budget_s:
        return f"skipped (~{predicted:.0f} s)"
    return None


def run_series(
    task: str,
    model: ModelInfo,
    batch: int,
    lengths: Sequence[float],
    settings: Settings,
    hp: dict | None = None,
    emit: Callable[[CellResult], None] | None = None,
) -> list[CellResult]:
    """The cells of one (model, batch) in increasing length, in this process;
    never raises for a cell."""
    results: list[CellResult] = []
    primed = False
    for seconds in sorted(lengths):
        res = CellResult(model.label, seconds, batch)
        reason = model.error or skip_reason(
            results, model, seconds, batch, settings.budget_s
        )
        if reason:
            res.status = reason
        else:
            try:
                if hp is None:
                    hp = load_hparams(model.hparams, settings.overrides, model.text)
                if not primed:
                    # Lazy one-time allocations (kernels, workspaces, thread
                    # pools) stay resident: keep them out of the first cell.
                    once = replace(settings, repeats=1, budget_s=None)
                    measure_here(task, hp, model.label, PRIME_SECONDS, batch, once)
                    primed = True
                res = measure_here(task, hp, model.label, seconds, batch, settings)
            except Exception as exc:  # reported in the cell, never fatal
                res.status = status_for(exc)
        results.append(res)
        if emit:
            emit(res)
    return results


def _series_main(spec: dict) -> int:
    """The ``--series`` entry point of :func:`run_series_subprocess`: prints
    one JSON line per cell as soon as it is measured."""
    settings = Settings(**spec["settings"])
    torch.set_num_threads(settings.threads)
    model = ModelInfo(**spec["model"])
    try:
        hp = load_hparams(model.hparams, settings.overrides, model.text)
    except Exception as exc:
        model.error, hp = status_for(exc), None
    # After construction: the budget is for the measurements.
    limit_memory(settings.max_memory_gb)

    def emit(res: CellResult) -> None:
        print(json.dumps(asdict(res)), flush=True)

    run_series(spec["task"], model, spec["batch"], spec["lengths"], settings, hp, emit)
    return 0


def run_series_subprocess(
    task: str,
    model: ModelInfo,
    batch: int,
    lengths: Sequence[float],
    settings: Settings,
    emit: Callable[[CellResult], None] | None = None,
) -> list[CellResult]:
    """:func:`run_series` in a fresh Python process: other models leave no
    trace in its memory, and a cell killed for memory or time is reported
    as such while the cells before it are kept."""
    spec = dict(
        task=task,
        model=asdict(model),
        batch=batch,
        lengths=sorted(lengths),
        settings=asdict(settings),
    )
    cmd = [sys.executable, str(Path(__file__).resolve()), "--series", json.dumps(spec)]
    budget = settings.budget_s
    # Start-up and model construction come on top of a cell's budget: the
    # warm-up plus the timed runs take at most about twice the budget.
    patience = None if budget is None else 2 * budget + 120
    results: list[CellResult] = []
    lines: queue.Queue[str | None] = queue.Queue()
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True)

        def read() -> None:
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        timed_out = False
        while True:
            try:
                line = lines.get(timeout=patience)
            except queue.Empty:
                proc.kill()
                timed_out = True
                break
            if line is None:
                break
            if line.startswith("{"):
                results.append(CellResult(**json.loads(line)))
                if emit:
                    emit(results[-1])
        code = proc.wait()
        stderr.seek(0)
        tail = (stderr.read().strip().splitlines() or ["no output"])[-1]
    # The cells the process did not report: the first one is what stopped it.
    done = {r.seconds for r in results}
    missing = [seconds for seconds in sorted(lengths) if seconds not in done]
    if timed_out:
        cause = "timeout"
    elif code in (-9, 137):
        cause = "OOM (killed)"
    else:
        cause = "fails: " + tail[:60]
    for i, seconds in enumerate(missing):
        status = cause if i == 0 else f"skipped ({cause.split(' (')[0]} before)"
        results.append(CellResult(model.label, seconds, batch, status=status))
        if emit:
            emit(results[-1])
    return results


def run_sweep(
    task: str,
    models: Sequence[ModelInfo],
    lengths: Sequence[float],
    batches: Sequence[int],
    settings: Settings,
    log: Callable[[str], None] | None = print,
) -> list[CellResult]:
    """Every (model, batch, length) cell of one task on one device; never
    raises for a cell.  CPU series run in fresh processes unless
    ``settings.in_process``; CUDA ones in this process."""

    def emit(res: CellResult) -> None:
        if log:
            log(f"{task:>9} {settings.device:>4} {_describe(res)}")

    results: list[CellResult] = []
    if settings.device == "cuda" and not torch.cuda.is_available():
        for model in models:
            for batch in batches:
                for seconds in sorted(lengths):
                    results.append(
                        CellResult(model.label, seconds, batch, status="no CUDA")
                    )
        return results
    for model in models:
        if settings.device == "cpu" and not settings.in_process and not model.error:
            for batch in batches:
                results += run_series_subprocess(
                    task, model, batch, lengths, settings, emit
                )
            continue
        hp = None
        if not model.error:
            try:
                hp = load_hparams(model.hparams, settings.overrides, model.text)
            except Exception as exc:
                model = replace(model, error=status_for(exc))
        for batch in batches:
            results += run_series(task, model, batch, lengths, settings, hp, emit)
        del hp
        if settings.device == "cuda":
            torch.cuda.empty_cache()
    return results


# ---------------------------------------------------------------- WER


@dataclass
class WerResult:
    """One ``wer_<split>.txt`` file."""

    folder: str  # label of the result folder
    split: str
    wer: float | None = None
    edits: int | None = None
    words: int | None = None
    partial: bool = False
    error: str | None = None


# The summary line; per-utterance lines below it start with the utterance id.
_WER_LINE = re.compile(
    r"^%WER\s+([\d.]+)\s*\[\s*(\d+)\s*/\s*(\d+)\s*,"
    r"\s*\d+\s+ins,\s*\d+\s+del,\s*\d+\s+sub\s*\](\s*\[PARTIAL\])?",
    re.M,
)


def parse_wer_file(path: Path, folder: str) -> WerResult:
    """Reads the ``%WER`` line of SpeechBrain's ``ErrorRateStats.write_stats``."""
    split = path.stem.removeprefix("wer_")
    try:
        match = _WER_LINE.search(path.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        return WerResult(folder, split, error=f"unreadable ({exc.strerror})")
    if not match:
        return WerResult(folder, split, error="no %WER line")
    return WerResult(
        folder,
        split,
        wer=float(match[1]),
        edits=int(match[2]),
        words=int(match[3]),
        partial=bool(match[4]),
    )


@dataclass
class ResultFolder:
    """A trained result folder: its WER files and what it trained."""

    label: str
    is_hyper: bool
    params: int | None = None
    wers: list[WerResult] = field(default_factory=list)
    error: str | None = None


def _folder_label(folder: Path) -> str:
    # Recipe folders end in the seed (results/<model>/<seed>): keep the model.
    if folder.name.isdigit() and folder.parent.name:
        return f"{folder.parent.name}/{folder.name}"
    return folder.name or str(folder)


def _trained_hyper(folder: Path, label: str) -> bool:
    """Whether a result folder trained a HyperConformer: from the recipe's
    copy of the yaml (comments left out: they may name the other model),
    else from the folder's name."""
    yaml = folder / "hyperparams.yaml"
    if not yaml.is_file():
        return "hyper" in label.lower()
    text = re.sub(r"#.*", "", yaml.read_text(errors="replace"))
    return bool(re.search(r"attention_type:\s*hypermixing|HyperConformerASR", text))


def read_results(folders: Sequence[str | Path]) -> list[ResultFolder]:
    """Every folder holding ``wer_*.txt`` files in or under the given ones."""
    found: list[ResultFolder] = []
    for given in folders:
        given = Path(given)
        if not given.is_dir():
            found.append(ResultFolder(_folder_label(given), False, error="not found"))
            continue
        dirs = sorted({p.parent for p in given.rglob("wer_*.txt")})
        if not dirs:
            found.append(
                ResultFolder(_folder_label(given), False, error="no wer_*.txt files")
            )
        for folder in dirs:
            label = _folder_label(folder)
            entry = ResultFolder(label, _trained_hyper(folder, label))
            summary = folder / "summary.json"
            if summary.is_file():
                try:
                    entry.params = int(json.loads(summary.read_text())["parameters"])
                except (ValueError, KeyError, TypeError):
                    pass
            entry.wers = [
                parse_wer_file(p, label) for p in sorted(folder.glob("wer_*.txt"))
            ]
            found.append(entry)
    return found


# ---------------------------------------------------------------- report


def _fmt_len(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 100_000 else f"{n / 1e3:.1f} k"


def _fmt_mib(mib: float) -> str:
    return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or a <= 0 or b <= 0:
        return "-"
    return f"{a / b:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    align = [":---"] * left + ["---:"] * (len(header) - left)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def params_table(models: Sequence[ModelInfo], pairs: Sequence[tuple[str, str]]) -> str:
    keys = ("front_end", "encoder", "front_end+encoder", "decoder", "output", "total")

    def value(m: ModelInfo, key: str) -> int | None:
        if not m.params:
            return None
        if key == "front_end+encoder":
            return m.params["front_end"] + m.params["encoder"]
        return m.params[key]

    header = ["model", "encoder type", "front-end type", "frame", "front-end"]
    header += ["encoder"]
    header += ["front-end + encoder", "decoder", "output layers", "total"]
    rows = []
    for m in models:
        if m.error:
            rows.append([m.label, m.error, *["-"] * (len(header) - 2)])
            continue
        frame = f"{m.frame_ms:.0f} ms" if m.frame_ms else "-"
        counts = [_fmt_params(value(m, k)) for k in keys]
        rows.append([m.label, m.description, m.front_end_type, frame, *counts])
    by_label = {m.label: m for m in models}
    for hc, base in pairs:
        a, b = by_label[hc], by_label[base]
        ratios = [_ratio(value(a, k), value(b, k)) for k in keys]
        rows.append([f"*{hc} / {base}*", "", "", "", *ratios])
    return _table(header, rows, left=4)


def _mem_cell(r: CellResult | None) -> str:
    if r is None:
        return "-"
    if r.status != "ok":
        return r.status
    if r.peak_mem_mb is None:
        return "n/a"
    return "<1 MiB" if r.peak_mem_mb < 1 else _fmt_mib(r.peak_mem_mb)


def cell_table(
    results: Sequence[CellResult],
    labels: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    what: str,
    first: str = "audio",
) -> str:
    """Rows (batch, length); a column per model, then a ratio per pair."""
    cells = {(r.model, r.seconds, r.batch): r for r in results}
    keys = sorted({(r.batch, r.seconds) for r in results})
    header = [first, "batch", *labels, *(f"{hc} / {base}" for hc, base in pairs)]
    rows = []
    for batch, seconds in keys:
        row = [_fmt_len(seconds), str(batch)]
        for label in labels:
            r = cells.get((label, seconds, batch))
            if what == "time":
                row.append("-" if r is None else _cell_time(r))
            else:
                row.append(_mem_cell(r))
        for hc, base in pairs:
            a, b = cells.get((hc, seconds, batch)), cells.get((base, seconds, batch))
            ok = a is not None and b is not None and a.status == b.status == "ok"
            if ok and what == "time":
                row.append(_ratio(a.time_s, b.time_s))
            elif ok and min(a.peak_mem_mb or 0, b.peak_mem_mb or 0) >= MIN_RATIO_MB:
                row.append(_ratio(a.peak_mem_mb, b.peak_mem_mb))
            else:
                row.append("-")
        rows.append(row)
    return _table(header, rows, left=2)


def wer_table(folders: Sequence[ResultFolder]) -> str:
    splits = sorted({w.split for f in folders for w in f.wers})
    header = ["results", "parameters", *(f"{s} WER %" for s in splits)]
    rows = []
    for f in folders:
        by_split = {w.split: w for w in f.wers}
        row = [f.label, _fmt_params(f.params)]
        for split in splits:
            w = by_split.get(split)
            if f.error or w is None:
                row.append(f.error or "-")
            elif w.error:
                row.append(w.error)
            else:
                note = " (partial)" if w.partial else ""
                row.append(f"{w.wer:.2f} ({w.edits} / {w.words}){note}")
        rows.append(row)
    pairs = pair_up([(f.label, f.is_hyper) for f in folders if not f.error])
    by_label = {f.label: f for f in folders}
    for hc, base in pairs:
        a = {w.split: w.wer for w in by_label[hc].wers}
        b = {w.split: w.wer for w in by_label[base].wers}
        ratios = [_ratio(a.get(s), b.get(s)) for s in splits]
        rows.append([f"*{hc} / {base}*", "", *ratios])
    return _table(header, rows)


def plot_sweep(
    results: Sequence[CellResult],
    models: Sequence[ModelInfo],
    pairs: Sequence[tuple[str, str]],
    what: str,
    path: Path,
    title: str,
) -> bool:
    """Time or memory against length, log-log, a panel per batch size and a
    line per model (a pair shares a colour; the baseline is dashed).
    Returns False (and writes nothing) when there is nothing to plot."""
    attr = "time_s" if what == "time" else "peak_mem_mb"
    # Below 1 MiB a CPU peak is allocator noise (the tables say "<1 MiB").
    floor = 0.0 if what == "time" else 1.0
    ok = [r for r in results if r.status == "ok" and (getattr(r, attr) or 0) > floor]
    if not ok:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10").colors
    colour_of: dict[str, tuple] = {}
    for i, (hc, base) in enumerate(pairs):
        colour_of[hc] = colour_of[base] = colours[i % len(colours)]
    for m in models:
        colour_of.setdefault(m.label, colours[len(colour_of) % len(colours)])
    hyper = {m.label for m in models if m.is_hyper}

    batches = sorted({r.batch for r in results})
    lengths = sorted({r.seconds for r in results})
    fig, axes = plt.subplots(
        1, len(batches), figsize=(5.2 * len(batches), 4.2), squeeze=False
    )
    for ax, batch in zip(axes[0], batches, strict=True):
        for m in models:
            points = sorted(
                (r.seconds, getattr(r, attr))
                for r in ok
                if r.model == m.label and r.batch == batch
            )
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            ax.plot(
                xs,
                ys,
                marker="o",
                linestyle="-" if m.label in hyper else "--",
                color=colour_of[m.label],
                label=m.label,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(lengths, [_fmt_len(s) for s in lengths])
        ax.minorticks_off()
        ax.set_xlabel("audio length" + ("" if batch == 1 else " (longest in batch)"))
        ax.set_ylabel("time (s)" if what == "time" else "peak memory (MiB)")
        ax.set_title(f"batch {batch}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def machine_lines(settings_threads: int, devices: Sequence[str]) -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [
                ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    lines = [f"| CPU | {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} |"]
    lines.append(f"| threads | {settings_threads} (torch) |")
    if torch.cuda.is_available():
        lines.append(f"| GPU | {torch.cuda.get_device_name(0)} |")
    else:
        lines.append("| GPU | none (CUDA not available) |")
    lines.append(f"| devices measured | {', '.join(devices)} |")

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "?"

    lines.append(
        f"| versions | Python {platform.python_version()}, torch {torch.__version__}, "
        f"speechbrain {version('speechbrain')}, "
        f"hyperconformer {version('hyperconformer')} |"
    )
    return lines


@dataclass
class Run:
    """Everything a report is made of."""

    command: str
    mode: str
    settings: Settings
    devices: list[str]
    models: list[ModelInfo]
    lengths: list[float]
    batches: list[int]
    train_batch: int
    train_seconds: list[float]
    inference: dict[str, list[CellResult]] = field(default_factory=dict)
    training: dict[str, list[CellResult]] = field(default_factory=dict)
    results: list[ResultFolder] = field(default_factory=list)
    note: str = ""
    started: str = ""
    seconds: float = 0.0
    load: tuple[float, float] | None = None


def write_report(run: Run, out: Path, name: str = "report.md") -> Path:
    """Writes the markdown report and its PNG plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem
    s = run.settings
    models = run.models
    labels = [m.label for m in models]
    pairs = pair_up([(m.label, m.is_hyper) for m in models if not m.error])
    md: list[str] = [
        "# HyperConformer vs Conformer: parameters, WER, speed, memory",
        "",
    ]
    md += [
        f"Generated by `{run.command}` ({run.mode} mode) on {run.started}, "
        f"in {run.seconds / 60:.1f} min.",
        "",
    ]
    if run.note:
        md += [run.note, ""]
    md += ["| machine | |", "|:---|:---|", *machine_lines(s.threads, run.devices)]
    clock = {
        "wall": "wall clock",
        "cpu": "CPU time of the process (`--clock cpu`): the work done, "
        "unaffected by waiting for a busy CPU",
    }[s.clock]
    md.append(f"| CPU timing | {clock}; CUDA: CUDA events |")
    if run.load:
        md.append(
            f"| load average | {run.load[0]:.1f} before, {run.load[1]:.1f} after, "
            f"on {os.cpu_count()} CPUs |"
        )
    md.append("")
    if run.load and max(run.load) > 0.5 * (os.cpu_count() or 1):
        md += [
            "**The CPU was busy with other work during this run** (load average "
            "above): CPU timings are indicative, more so with `--clock wall`. "
            "Rerun on a quiet machine for reference numbers.",
            "",
        ]
    if s.overrides:
        over = ", ".join(f"{k}={v}" for k, v in s.overrides.items())
        md += [
            f"**Models shrunk with overrides** ({over}): these numbers only check "
            "the tool, they say nothing about the real models.",
            "",
        ]
    if "cuda" not in run.devices or not torch.cuda.is_available():
        md += [
            "No CUDA measurement in this run (no GPU here). On a GPU machine: "
            "`python tools/compare.py --device cuda`.",
            "",
        ]
    if pairs:
        md += [
            "Ratios are HyperConformer / Conformer for the pairs "
            + ", ".join(f"{hc} / {base}" for hc, base in pairs)
            + ": below 1, HyperConformer is smaller, faster or more accurate.",
            "",
        ]

    md += ["## Parameters", "", params_table(models, pairs), ""]
    md += [
        "Encoder: the `Transformer`'s parameters outside its decoder and target "
        "embedding (input projection and encoder layers); front-end: `CNN`; "
        "output layers: `ctc_lin` + `seq_lin`; total: `model`, as the recipe "
        "counts and checkpoints it. Frame: the encoder frame period. "
        "`ConvFrontEnd` (hyperconformer) computes the same function as "
        "SpeechBrain's `ConvolutionFrontEnd`, with a faster memory layout.",
        "",
    ]

    md += ["## Test WER", ""]
    if run.results:
        md += [wer_table(run.results), ""]
        md += [
            "From the `wer_<split>.txt` files of `recipes/LibriSpeech/ASR/train.py`: "
            "WER % (errors / reference words); parameters from the folder's "
            "`summary.json`.",
            "",
        ]
    else:
        md += [
            "No result folders given. Add the output folders of trained runs: "
            "`--results results/hyperconformer_8M/7775 results/conformer_small/7775`.",
            "",
        ]

    budget = f"{s.budget_s:g} s" if s.budget_s else "none"
    oom_limit = f"{s.max_memory_gb:g} GiB" if s.max_memory_gb else "machine's"
    where = "all models in one process" if s.in_process else "a fresh process"
    cpu_mem = (
        "peak RSS above the RSS before the cell (after model construction, with "
        f"freed heap memory returned to the OS), {where} per model and batch "
        "size, cells in increasing length"
    )
    md += ["## Inference: encoder with front-end", ""]
    md += [
        "`Transformer.encode(CNN(feats), wav_lens)` in eval mode under "
        f"`torch.inference_mode()`, on random fbank-shaped inputs (100 frames/s, "
        f"{N_MELS} bins). Time: median of {s.repeats} run(s) after one warm-up "
        "(± half the spread when over 20%). Batch 1: one utterance of the given "
        "length; a larger batch is padded, its lengths spread evenly from 50% to "
        f"100% of the given one. Memory, CPU: {cpu_mem}; CUDA: "
        "`torch.cuda.max_memory_allocated` above the memory after model "
        f"construction. Per-cell budget {budget}: `skipped (~N s)` means one "
        "run was predicted (from the shorter cells) to take N s, over the "
        "budget; `skipped (OOM before)` that a shorter input already ran out of "
        f"memory. OOM on CPU: over the {oom_limit} address-space budget "
        "(`--max-memory-gb`). Memory ratios only where both sides use at least "
        f"{MIN_RATIO_MB:g} MiB.",
        "",
    ]
    for device, results in run.inference.items():
        md += [
            f"### Time, {device}",
            "",
            cell_table(results, labels, pairs, "time"),
            "",
        ]
        md += [
            f"### Peak memory, {device}",
            "",
            cell_table(results, labels, pairs, "memory"),
            "",
        ]
        plots = []
        for what in ("time", "memory"):
            png = f"{stem}_{what}_{device}.png"
            threads = f"{s.threads} thread{'s' if s.threads > 1 else ''}"
            title = f"Inference {what} ({device}, {threads})"
            if device == "cuda":
                title = f"Inference {what} (cuda)"
            if plot_sweep(results, models, pairs, what, out / png, title):
                plots += [f"![inference {what}, {device}]({png})", ""]
        if plots:
            md += plots
            md += [
                "Solid: HyperConformer, dashed: its Conformer pair. A line that "
                "stops early: the longer cells were skipped or failed (tables).",
                "",
            ]

    md += ["## Training step", ""]
    md += [
        f"One forward + backward pass (no optimiser step) in train mode on "
        f"{run.train_batch} utterances of "
        + " / ".join(_fmt_len(x) for x in run.train_seconds)
        + f" with random fbank-shaped features and {TOKENS_PER_SECOND:g} random "
        "tokens per second. Loss: "
        + "; ".join(sorted({m.loss for m in models if m.loss}) or ["-"])
        + ". Feature normalisation and augmentation are left out. Time and "
        "memory are measured as for inference.",
        "",
    ]
    for device, results in run.training.items():
        md += [
            f"### {device}",
            "",
            "Time per step:",
            "",
            cell_table(results, labels, pairs, "time", first="utterances"),
            "",
            "Peak memory:",
            "",
            cell_table(results, labels, pairs, "memory", first="utterances"),
            "",
        ]
    path = out / name
    path.write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--hparams", nargs="+", default=[str(p) for p in DEFAULT_HPARAMS])
    p.add_argument(
        "--results", nargs="*", default=[], metavar="DIR", help="trained result folders"
    )
    p.add_argument("--out", type=Path, default=Path("results/compare"))
    p.add_argument("--report", default="report.md", help="report file name in --out")
    p.add_argument("--quick", action="store_true", help="tiny models, CI-sized sweep")
    p.add_argument(
        "--device",
        nargs="+",
        choices=("cpu", "cuda"),
        default=None,
        help="default: cpu, and cuda when available",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--lengths", type=float, nargs="+", help="seconds of audio")
    p.add_argument("--batch", type=int, nargs="+", help="inference batch sizes")
    p.add_argument("--repeats", type=int)
    p.add_argument("--train-batch", type=int, help="utterances per training step")
    p.add_argument("--train-seconds", type=float, nargs="+", help="their length")
    p.add_argument("--no-inference", action="store_true")
    p.add_argument("--no-training", action="store_true")
    p.add_argument(
        "--max-seconds-per-cell",
        type=float,
        help="skip a cell predicted to run longer (0: no limit); "
        f"default {FULL.budget_s:g}, --quick {QUICK.budget_s:g}",
    )
    p.add_argument(
        "--max-memory-gb",
        type=float,
        default=16.0,
        help="CPU: address-space budget of a cell process (0: none)",
    )
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time (robust to other load with --threads 1)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="CPU: all cells in this process (faster start, approximate memory)",
    )
    p.add_argument(
        "--overrides",
        default=None,
        help="YAML mapping applied to every hparams file, e.g. '{d_model: 64}'",
    )
    p.add_argument("--note", default="", help="a paragraph for the report header")
    p.add_argument("--json", type=Path, help="also save the raw results here")
    p.add_argument("--series", help=argparse.SUPPRESS)  # internal, JSON
    return p.parse_args(argv)


def _command_line(argv: Sequence[str]) -> str:
    return " ".join(["python tools/compare.py", *(shlex.quote(a) for a in argv)])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    if args.series:
        return _series_main(json.loads(args.series))

    preset = QUICK if args.quick else FULL
    overrides = dict(preset.overrides)
    if args.overrides:
        import yaml

        overrides.update(yaml.safe_load(args.overrides) or {})
    missing = [h for h in args.hparams if not Path(h).is_file()]
    if missing:
        print(f"error: no such hparams file: {', '.join(missing)}", file=sys.stderr)
        return 2
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    threads = args.threads or preset.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    budget = args.max_seconds_per_cell
    settings = Settings(
        device="cpu",
        threads=threads,
        repeats=args.repeats or preset.repeats,
        budget_s=(preset.budget_s if budget is None else budget) or None,
        max_memory_gb=args.max_memory_gb or None,
        clock=args.clock,
        in_process=args.in_process or preset.in_process,
        overrides=overrides,
    )
    start = time.perf_counter()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    run = Run(
        command=_command_line(argv),
        mode="quick" if args.quick else "full",
        settings=settings,
        devices=devices,
        models=[],
        lengths=list(args.lengths or preset.lengths),
        batches=list(args.batch or preset.batches),
        train_batch=args.train_batch or preset.train_batch,
        train_seconds=list(args.train_seconds or preset.train_seconds),
        note=args.note,
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    print(f"# {run.command}", flush=True)
    for path in args.hparams:
        info = describe_model(path, overrides)
        run.models.append(info)
        print(
            f"{info.label}: {info.error or info.description}, "
            f"{_fmt_params(info.params.get('total'))}",
            flush=True,
        )
    run.results = read_results(args.results)

    def log(line: str) -> None:
        print(line, flush=True)

    for device in devices:
        # CUDA cells are timed with CUDA events, whatever --clock says.
        clock = settings.clock if device == "cpu" else "wall"
        dev_settings = replace(settings, device=device, clock=clock)
        if not args.no_inference:
            run.inference[device] = run_sweep(
                "inference", run.models, run.lengths, run.batches, dev_settings, log
            )
        if not args.no_training:
            run.training[device] = run_sweep(
                "training",
                run.models,
                run.train_seconds,
                [run.train_batch],
                dev_settings,
                log,
            )
    run.seconds = time.perf_counter() - start
    if load_before is not None:
        run.load = (load_before, os.getloadavg()[0])
    report = write_report(run, args.out, args.report)
    print(f"report: {report}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(run), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

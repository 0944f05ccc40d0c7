#!/usr/bin/env python3
"""HyperConformer vs Conformer, trained end to end on the embedded corpus.

Run by ``make demo``. On a 2-core CPU it takes about 17 minutes (each model
13-16 minutes of CPU time in bf16, the two trained at once):

1. generates the synthetic LibriSpeech-format corpus into ``data/`` (real
   eSpeak NG speech; test voices never occur in training), unless present;
2. trains ``hparams/LibriSpeech/hyperconformer_demo.yaml`` and
   ``conformer_demo.yaml`` with the LibriSpeech recipe
   (``recipes/LibriSpeech/ASR/train.py``), which also decodes the held-out
   test split (joint CTC/attention beam search) and exports each model;
3. decodes the test split again with each exported model's CTC head alone;
4. prints a side-by-side table (test WER joint and CTC-only, parameters,
   training time, peak memory, decoding real-time factor), also saved as
   ``<out>/results.md``;
5. transcribes a few held-out files with the exported HyperConformer model.

Options: ``python tools/demo.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "recipes" / "LibriSpeech" / "ASR" / "train.py"
HPARAMS = ROOT / "hparams" / "LibriSpeech"
MODELS = {
    "HyperConformer": "hyperconformer_demo.yaml",
    "Conformer": "conformer_demo.yaml",
    # `make demo-streaming`: the same, trained for offline and streaming use.
    "HyperConformer streaming": "hyperconformer_demo_streaming.yaml",
}
DEFAULT_MODELS = ["HyperConformer", "Conformer"]

sys.path.insert(0, str(ROOT / "tools"))


# dev and test: a fixed number of utterances, so that a bigger training set
# does not make the evaluation slower.
EVAL_UTTS = 200


def make_data(folder: Path, hours: float, seed: int) -> Path:
    """The corpus folder (containing LibriSpeech/), generated if needed."""
    from make_synthetic_librispeech import format_summary, make_corpus

    summary = make_corpus(folder, hours=hours, seed=seed, eval_utts=EVAL_UTTS)
    print(format_summary(summary), flush=True)
    return folder / "LibriSpeech"


def _batch_progress(console: Path) -> str:
    """The latest `done/total` of the recipe's own progress bar, if any."""
    try:
        with open(console, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4000))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    found = re.findall(r"(\d+)/(\d+) \[", tail)
    return f"batch {found[-1][0]}/{found[-1][1]}" if found else ""


def _threads(jobs: int) -> int:
    """Threads per training process when `jobs` run at once."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    return max(1, (cores or os.cpu_count() or 1) // jobs)


def train_all(runs: dict[str, Path], data: Path, extra: list[str]) -> dict:
    """Trains every model at once, each on its share of the CPU cores.

    Small models use one core poorly when given several threads: one process
    per model, each with cores / n threads, finishes both sooner than one
    after the other. Returns each run's summary.json.
    """
    from tqdm import tqdm

    threads = _threads(len(runs))
    procs, bars = {}, {}
    for position, (name, out) in enumerate(runs.items()):
        hparams = HPARAMS / MODELS[name]
        with open(hparams, encoding="utf-8") as f:
            epochs = int(re.search(r"^number_of_epochs: *(\d+)", f.read(), re.M)[1])
        for arg in extra:
            if arg.startswith("--number_of_epochs="):
                epochs = int(arg.split("=", 1)[1])
        out.mkdir(parents=True, exist_ok=True)
        console = open(out / "console.log", "w", encoding="utf-8")
        cmd = [
            sys.executable,
            str(TRAIN),
            str(hparams),
            f"--data_folder={data}",
            f"--output_folder={out}",
            *extra,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        procs[name] = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=console, stderr=subprocess.STDOUT
        )
        bars[name] = tqdm(
            total=epochs, desc=f"{name:>14} epochs", position=position, leave=True
        )
    while any(p.poll() is None for p in procs.values()):
        time.sleep(2)
        for name, out in runs.items():
            log = out / "train_log.txt"
            done = log.read_text().count("epoch: ") if log.exists() else 0
            bar = bars[name]
            bar.update(min(done, bar.total) - bar.n)
            state = "testing + export" if done >= bar.total else ""
            if procs[name].poll() is not None:
                state = "done" if procs[name].returncode == 0 else "FAILED"
            bar.set_postfix_str(state or _batch_progress(out / "console.log"))
    for bar in bars.values():
        bar.close()
    failed = [name for name, p in procs.items() if p.returncode != 0]
    if failed:
        logs = ", ".join(str(runs[name] / "console.log") for name in failed)
        sys.exit(f"error: training {', '.join(failed)} failed (see {logs})")
    return {
        name: json.loads((out / "summary.json").read_text())
        for name, out in runs.items()
    }


def training_precision(extra: list[str]) -> str:
    """The ``--precision`` for train.py: as given in ``extra``, else bf16
    autocast where the CPU has bf16 matrix instructions (a training step of
    either demo model 1.3x faster, validation accuracy within 0.015 of fp32 at
    every epoch), else fp32 (emulated bf16 would be slower)."""
    for i, arg in enumerate(extra):
        if arg.startswith("--precision="):
            return arg.split("=", 1)[1]
        if arg == "--precision" and i + 1 < len(extra):
            return extra[i + 1]
    import torch

    try:
        fast = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        fast = False
    return "bf16" if fast else "fp32"


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def results_table(
    summaries: dict[str, dict], split: str, threads: int, precision: str = "fp32"
) -> str:
    """Markdown table, one column per model."""
    names = list(summaries)
    rows = [
        ("test WER (held-out voices)", lambda s: f"{s['test'][split]['wer']:.2f} %"),
        ("test WER, CTC head alone", lambda s: f"{s['test'][split]['ctc_wer']:.2f} %"),
        ("parameters", lambda s: f"{s['parameters'] / 1e6:.2f} M"),
        ("training time (wall)", lambda s: _minutes(s["train_seconds"])),
        ("training time (CPU)", lambda s: _minutes(s["train_cpu_seconds"])),
        ("epochs", lambda s: str(s["epochs"])),
        ("training precision", lambda s: precision),
        ("peak memory (RSS)", lambda s: f"{s['peak_rss_mb'] / 1024:.2f} GiB"),
        ("decoding real-time factor", lambda s: f"{s['test'][split]['rtf']:.3f}"),
    ]
    width = max(len(r[0]) for r in rows)
    cols = [max(len(n), 16) for n in names]
    lines = [
        "| "
        + " | ".join(
            [" " * width, *(n.ljust(c) for n, c in zip(names, cols, strict=True))]
        )
        + " |",
        "|-" + "-|-".join(["-" * width, *("-" * c for c in cols)]) + "-|",
    ]
    for label, fmt in rows:
        cells = [fmt(summaries[n]).rjust(c) for n, c in zip(names, cols, strict=True)]
        lines.append("| " + " | ".join([label.ljust(width), *cells]) + " |")
    first = summaries[names[0]]["test"][split]
    lines.append(
        f"\n{split}: {first['utterances']} utterances, "
        f"{first['audio_seconds'] / 60:.1f} min of audio, voices unseen in "
        "training; joint CTC/attention beam search in batches; real-time factor "
        "= decoding wall time / audio duration. The models trained at the same "
        f"time, {threads} thread(s) each; wall times grow if other programs "
        "use the CPU, CPU times do not."
    )
    return "\n".join(lines)


def split_transcripts(data: Path, split: str) -> dict[Path, str]:
    """Audio file -> reference transcript, for every utterance of a split."""
    transcripts = {}
    for trans in sorted((data / split).rglob("*.trans.txt")):
        for line in trans.read_text().splitlines():
            utt, text = line.split(" ", 1)
            transcripts[trans.parent / f"{utt}.flac"] = text
    return transcripts


def ctc_only_wer(model_dir: Path, data: Path, split: str) -> float:
    """Test WER (%) of an exported model decoded with its CTC head alone
    (greedy), the head that long-form stitching relies on."""
    from speechbrain.utils.edit_distance import wer_details_for_batch, wer_summary

    from hyperconformer import Transcriber

    refs = split_transcripts(data, split)
    files = sorted(refs)
    asr = Transcriber.from_pretrained(model_dir, ctc_only=True)
    hyps = [r.transcript or "" for r in asr.transcribe_files(files)]
    details = wer_details_for_batch(
        [f.stem for f in files],
        [refs[f].split() for f in files],
        [h.split() for h in hyps],
    )
    return wer_summary(details)["WER"]


def transcribe_examples(model_dir: Path, data: Path, split: str, count: int) -> None:
    """Prints reference and hypothesis for a few held-out files."""
    from tqdm import tqdm

    transcripts = split_transcripts(data, split)
    # One file per speaker, so the examples show different voices.
    files, speakers = [], set()
    for path in sorted(transcripts):
        speaker = path.name.split("-")[0]
        if speaker not in speakers:
            speakers.add(speaker)
            files.append(path)
    files = files[:count]

    try:
        from hyperconformer import Transcriber

        asr = Transcriber.from_pretrained(model_dir)
        transcribe = asr.transcribe_file
        how = "hyperconformer.Transcriber"
    except ImportError:
        from speechbrain.inference.ASR import EncoderDecoderASR

        asr = EncoderDecoderASR.from_hparams(
            source=str(model_dir), savedir=str(model_dir.parent / "pretrained")
        )
        transcribe = asr.transcribe_file
        how = "speechbrain EncoderDecoderASR"
    print(f"\n=== Held-out files transcribed with {model_dir} ({how}) ===")
    hyps = [transcribe(str(f)) for f in tqdm(files, desc="transcribing")]
    for path, hyp in zip(files, hyps, strict=True):
        ref = transcripts[path]
        mark = "ok " if hyp == ref else "ERR"
        print(f"{mark} {path.stem}\n    REF: {ref}\n    HYP: {hyp}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT / "data" / "synthetic",
        help="corpus folder (default: data/synthetic)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "results" / "demo",
        help="output folder (default: results/demo)",
    )
    parser.add_argument(
        "--hours",
        type=float,
        default=4.0,
        help="hours of training audio to generate (default: 4.0)",
    )
    parser.add_argument("--seed", type=int, default=1234, help="corpus seed")
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=DEFAULT_MODELS
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=5,
        help="held-out files to transcribe at the end",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue earlier runs in --out instead of starting over",
    )
    args, extra = parser.parse_known_args(argv)  # the rest goes to train.py

    start = time.perf_counter()
    print("=== Corpus ===", flush=True)
    data = make_data(args.data, args.hours, args.seed)

    runs = {name: args.out / Path(MODELS[name]).stem for name in args.models}
    if not args.resume:
        for out in runs.values():
            shutil.rmtree(out, ignore_errors=True)
    precision = training_precision(extra)
    if not any(a.split("=", 1)[0] == "--precision" for a in extra):
        extra = [*extra, f"--precision={precision}"]
    print(
        f"\n=== Training {', '.join(runs)}, {precision} "
        "(logs: <out>/<model>/console.log) ==="
    )
    summaries = train_all(runs, data, extra)

    split = next(iter(summaries[args.models[0]]["test"]))
    print("\n=== Test split decoded with the CTC head alone ===", flush=True)
    for name, out in runs.items():
        summaries[name]["test"][split]["ctc_wer"] = ctc_only_wer(
            out / "model", data, split
        )
    table = results_table(summaries, split, _threads(len(runs)), precision)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table + "\n")
    print(f"\n=== Results (also in {args.out / 'results.md'}) ===\n{table}", flush=True)

    if args.examples > 0:
        first = args.out / Path(MODELS[args.models[0]]).stem / "model"
        transcribe_examples(first, data, split, args.examples)

    print(f"\nDemo finished in {_minutes(time.perf_counter() - start)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

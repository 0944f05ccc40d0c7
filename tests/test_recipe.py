"""End-to-end checks of the LibriSpeech recipe on the tiny generated corpus.

Each run is a real `train.py` process: data preparation, tokenizer, a couple
of optimiser steps, dev/test beam search, WER files and the exported model.
Overrides keep the runs short (small vocabulary, two steps, short decoding).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "recipes" / "LibriSpeech" / "ASR" / "train.py"
HPARAMS = ROOT / "hparams" / "LibriSpeech"

# The embedded corpus only has these splits; the 960 h yamls list more.
SPLITS = [
    "--train_splits=[train-clean-100]",
    "--dev_splits=[dev-clean]",
    "--test_splits=[test-clean]",
]
# Small vocabulary, bounded decoding (untrained models never emit EOS), no
# beam search on the dev set: decoding is tested on the test split.
SHORT = [
    "--output_neurons=48",
    "--max_batch_len=10",
    "--valid_batch_size=40",
    "--test_batch_size=40",
    "--num_buckets=4",
    "--num_workers=0",
    "--valid_search_interval=0",
    "--test_beam_size=2",
    "--max_decode_ratio=0.2",
    "--noprogressbar",
]
# Shrinks a model to a few layers for the tests that are not about its size.
TINY_MODEL = [
    "--d_model=32",
    "--nhead=2",
    "--num_encoder_layers=1",
    "--num_decoder_layers=1",
    "--d_ffn=64",
]


def recipe_command(hparams, data_folder, output_folder, *extra, launcher=None):
    """The train.py command line and its environment."""
    cmd = [
        *(launcher or [sys.executable]),
        str(TRAIN),
        str(HPARAMS / hparams),
        f"--data_folder={data_folder}",
        f"--output_folder={output_folder}",
        *extra,
    ]
    # One thread per process: small models gain little from more, and an
    # oversubscribed CPU makes multi-threaded PyTorch many times slower.
    return cmd, {**os.environ, "OMP_NUM_THREADS": "1"}


def run_recipe(hparams, data_folder, output_folder, *extra, launcher=None, check=True):
    """Runs train.py and returns the completed process."""
    cmd, env = recipe_command(
        hparams, data_folder, output_folder, *extra, launcher=launcher
    )
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-5000:]}"
        )
    return proc


def wer_line(path):
    """The `%WER ...` line of an ErrorRateStats file."""
    first = Path(path).read_text().splitlines()[0]
    assert first.startswith("%WER "), first
    return first


def epochs_logged(output_folder):
    """Epoch numbers in train_log.txt, one per finished epoch."""
    lines = (Path(output_folder) / "train_log.txt").read_text().splitlines()
    return [
        int(line.split(",")[0].split()[1])
        for line in lines
        if line.startswith("epoch:")
    ]


def steps_logged(output_folder):
    """Optimiser steps at the end of each epoch, from train_log.txt."""
    text = (Path(output_folder) / "train_log.txt").read_text()
    return [int(n) for n in re.findall(r"steps: (\d+)", text)]


def intra_epoch_checkpoint(save_folder):
    """An intra-epoch checkpoint folder under ``save_folder``, or None."""
    for meta in Path(save_folder).glob("CKPT+*/CKPT.yaml"):
        if "brain_intra_epoch_ckpt" in meta.read_text():
            return meta.parent
    return None


@pytest.fixture(scope="session")
def data_folder(tiny_corpus):
    return Path(tiny_corpus) / "LibriSpeech"


@pytest.mark.parametrize(
    "hparams",
    [
        "hyperconformer_8M.yaml",
        "hyperconformer_22M.yaml",
        "conformer_small.yaml",
        "hyperconformer_demo.yaml",
        "conformer_demo.yaml",
    ],
)
def test_train_decode_wer_export(hparams, data_folder, tmp_path):
    out = tmp_path / "run"
    # Two optimiser steps of the full-size model.
    run_recipe(
        hparams,
        data_folder,
        out,
        *SPLITS,
        *SHORT,
        "--number_of_epochs=1",
        "--optimizer_step_limit=2",
    )

    wer_line(out / "wer_test-clean.txt")
    assert epochs_logged(out) == [1]
    for split in ("train-clean-100", "dev-clean", "test-clean"):
        assert (out / "save" / f"{split}.csv").is_file()
    model = out / "model"
    for name in ("hyperparams.yaml", "model.ckpt", "normalizer.ckpt", "tokenizer.ckpt"):
        assert (model / name).is_file(), name
    expected_class = "HyperConformerASR" if "hyper" in hparams else "TransformerASR"
    assert expected_class in (model / "hyperparams.yaml").read_text()


def test_resume_keeps_finished_epochs(data_folder, tmp_path):
    out = tmp_path / "run"
    common = [*SPLITS, *SHORT, *TINY_MODEL]
    run_recipe(
        "hyperconformer_demo.yaml", data_folder, out, "--number_of_epochs=1", *common
    )
    assert epochs_logged(out) == [1]

    # A second run with a larger budget resumes from the epoch-1 checkpoint.
    proc = run_recipe(
        "hyperconformer_demo.yaml", data_folder, out, "--number_of_epochs=2", *common
    )
    assert epochs_logged(out) == [1, 2]
    assert "Going into epoch 2" in proc.stderr + proc.stdout
    assert "Going into epoch 1" not in proc.stderr + proc.stdout
    # The schedule, which fell to zero at the end of the first run, is
    # stretched over both epochs instead of training the second at zero.
    steps = steps_logged(out)
    assert steps[1] == 2 * steps[0]
    newest = max(Path(out / "save").glob("CKPT+*"), key=lambda p: p.stat().st_mtime)
    schedule = torch.load(newest / "lr_scheduler.ckpt", weights_only=True)
    assert schedule["num_training_steps"] == steps[1]


def test_sigkill_mid_epoch_resumes_from_intra_epoch_checkpoint(data_folder, tmp_path):
    # One epoch of about 25 small batches, a checkpoint every 2 steps, no
    # decoding: only the training loop and its checkpoints are exercised.
    common = [
        *SPLITS[:2],
        "--test_splits=[]",
        *(arg for arg in SHORT if not arg.startswith("--max_batch_len")),
        "--max_batch_len=16",
        *TINY_MODEL,
        "--number_of_epochs=1",
        "--ckpt_interval_minutes=0",
        "--ckpt_interval_steps=2",
        "--wav_augment=null",  # random noise files: not replayed on resume
    ]
    whole = tmp_path / "whole"
    run_recipe("hyperconformer_demo.yaml", data_folder, whole, *common)
    expected = steps_logged(whole)
    assert len(expected) == 1 and expected[0] >= 8

    killed = tmp_path / "killed"
    cmd, env = recipe_command("hyperconformer_demo.yaml", data_folder, killed, *common)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while intra_epoch_checkpoint(killed / "save") is None:
        assert proc.poll() is None, "the run ended before an intra-epoch checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    checkpoint = intra_epoch_checkpoint(killed / "save")
    assert not (killed / "train_log.txt").is_file() or steps_logged(killed) == []

    resumed = run_recipe("hyperconformer_demo.yaml", data_folder, killed, *common)
    log = resumed.stdout + resumed.stderr
    assert f"Loading a checkpoint from {checkpoint}" in log, log[-2000:]
    assert steps_logged(killed) == expected, log[-2000:]
    # Training is deterministic here (no dropout, augmentation or speed
    # perturbation), so the lost steps are redone exactly: same losses.
    assert (killed / "train_log.txt").read_text() == (
        whole / "train_log.txt"
    ).read_text()


TORCHRUN = [
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--standalone",
    "--nproc_per_node=2",
]


def test_two_process_ddp_bf16_on_cpu(data_folder, tmp_path):
    out = tmp_path / "ddp"
    proc = run_recipe(
        "hyperconformer_demo.yaml",
        data_folder,
        out,
        *SPLITS,
        *SHORT,
        *TINY_MODEL,
        "--number_of_epochs=1",
        "--precision=bf16",
        launcher=TORCHRUN,
    )
    wer_line(out / "wer_test-clean.txt")
    assert (out / "model" / "model.ckpt").is_file()
    assert "Distributed run: 2 processes, gloo backend" in proc.stdout + proc.stderr
    # The ranks leave without finalizing the interpreter: what they wrote last
    # must still be on disk.
    assert epochs_logged(out) == [1]
    assert "Model exported" in (out / "log.txt").read_text()
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1


def test_two_process_ddp_trains_chunked_batches_in_both_modes(data_folder, tmp_path):
    # Two forward calls of the DDP-wrapped encoder per step (chunked, then
    # offline) before one backward: the gradients must still synchronise.
    out = tmp_path / "ddp_streaming"
    proc = run_recipe(
        "hyperconformer_demo_streaming.yaml",
        data_folder,
        out,
        *SPLITS,
        *SHORT,
        *TINY_MODEL,
        "--number_of_epochs=1",
        "--dynchunktrain_start_epoch=1",
        launcher=TORCHRUN,
    )
    assert "Distributed run: 2 processes, gloo backend" in proc.stdout + proc.stderr
    assert epochs_logged(out) == [1]
    wer_line(out / "wer_test-clean.txt")


def _last_line(proc):
    return (proc.stderr.strip().splitlines() or [""])[-1]


def test_wrong_data_folder_is_one_line_error(tmp_path):
    proc = run_recipe(
        "hyperconformer_demo.yaml",
        tmp_path / "no" / "such" / "LibriSpeech",
        tmp_path / "run",
        *SHORT,
        "--number_of_epochs=1",
        check=False,
    )
    assert proc.returncode != 0
    line = _last_line(proc)
    assert line.startswith("error: ") and "no/such/LibriSpeech" in line, proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_audio_is_one_line_error(data_folder, tmp_path):
    corpus = tmp_path / "LibriSpeech"
    shutil.copytree(data_folder, corpus)
    victim = sorted((corpus / "train-clean-100").rglob("*.flac"))[0]
    victim.write_bytes(b"this is not a FLAC file" * 10)
    proc = run_recipe(
        "hyperconformer_demo.yaml",
        corpus,
        tmp_path / "run",
        *SHORT,
        "--number_of_epochs=1",
        check=False,
    )
    assert proc.returncode != 0
    line = _last_line(proc)
    assert line.startswith("error: ") and victim.name in line, proc.stderr
    assert "Traceback" not in proc.stderr

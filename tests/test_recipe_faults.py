"""Faults of the recipe that only show under DDP or unusual augmentation.

In-process checks of `train.py`'s pieces: the ASR Brain with an augmenter that
replicates the batch, and the tokenizer step run by two real gloo processes.
"""

import csv
import datetime
import os
import time
from pathlib import Path

import pytest
import speechbrain as sb
import torch
import torch.multiprocessing as mp
import train
from hyperpyyaml import load_hyperpyyaml
from speechbrain.augment.augmenter import Augmenter
from speechbrain.augment.freq_domain import SpectrogramDrop
from speechbrain.dataio.batch import PaddedBatch

ROOT = Path(__file__).resolve().parents[1]


def demo_brain(tmp_path, augmenter, key="fea_augment", yaml="hyperconformer_demo.yaml"):
    """A demo recipe's ASR Brain, tiny, with ``augmenter`` as its ``key``
    (fea_augment or wav_augment) and no other augmentation."""
    with open(ROOT / "hparams/LibriSpeech" / yaml) as f:
        hparams = load_hyperpyyaml(
            f,
            {
                "data_folder": str(tmp_path),
                "output_folder": str(tmp_path / "out"),
                "output_neurons": 40,
                "d_model": 32,
                "nhead": 2,
                "num_encoder_layers": 1,
                "num_decoder_layers": 1,
                "d_ffn": 64,
                "wav_augment": None,  # no corpus noise files in tmp_path
            },
        )
    hparams["fea_augment"] = None
    hparams[key] = augmenter
    return train.ASR(
        modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"}
    )


def audio_batch(data_folder):
    """Two real utterances of different lengths, with token targets."""
    flacs = sorted((data_folder / "train-clean-100").rglob("*.flac"))[:2]
    rows = []
    for i, path in enumerate(flacs):
        ids = torch.arange(3 + i, 10 + 2 * i)  # different lengths per utterance
        rows.append(
            {
                "id": path.stem,
                "sig": train.read_audio(path, 16000),
                "wrd": "",
                "tokens_bos": torch.cat([torch.tensor([1]), ids]),
                "tokens_eos": torch.cat([ids, torch.tensor([2])]),
                "tokens": ids,
            }
        )
    return PaddedBatch(rows)


def train_loss(brain, batch):
    torch.manual_seed(0)
    with torch.no_grad():
        predictions = brain.compute_forward(batch, sb.Stage.TRAIN)
        return brain.compute_objectives(predictions, batch, sb.Stage.TRAIN)


@pytest.mark.parametrize("key", ["fea_augment", "wav_augment"])
@pytest.mark.parametrize(
    "concat_original, repeat_augment", [(True, 1), (False, 2), (True, 2)]
)
def test_labels_follow_a_replicated_batch(
    tiny_corpus, tmp_path, concat_original, repeat_augment, key
):
    # An augmentation that changes nothing: every replica of an utterance is
    # the utterance itself, so if each row gets its own targets the loss is
    # the loss of the plain batch.
    identity = (
        SpectrogramDrop(drop_count_low=0, drop_count_high=0)
        if key == "fea_augment"
        else torch.nn.Identity()
    )
    augmenter = Augmenter(
        concat_original=concat_original,
        repeat_augment=repeat_augment,
        min_augmentations=1,
        max_augmentations=1,
        augmentations=[identity],
    )
    torch.manual_seed(0)
    brain = demo_brain(tmp_path, augmenter, key)
    batch = audio_batch(Path(tiny_corpus) / "LibriSpeech")
    replicated = train_loss(brain, batch)
    setattr(brain.hparams, key, None)
    plain = train_loss(brain, batch)
    assert replicated.item() == pytest.approx(plain.item(), rel=1e-5)


SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "every cloud has a silver lining",
    "the early bird catches the worm",
    "pack my box with five dozen liquor jugs",
    "how vexingly quick daft zebras jump",
    "sphinx of black quartz judge my vow",
    "waltz bad nymph for quick jigs vex",
]


def _tokenizer_rank(rank, port, folder, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank))
    torch.distributed.init_process_group(
        "gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=15)
    )
    hparams = {
        "save_folder": folder,
        "train_splits": ["train"],
        "tokenizer_file": None,
        "output_neurons": 40,
        "token_type": "unigram",
        "blank_index": 0,
        "bos_index": 1,
        "eos_index": 2,
    }
    model = Path(folder) / "tokenizer.model"
    try:
        if rank == 1:
            # This rank is slow: by the time it looks, rank 0 has trained the
            # tokenizer and is waiting in the barrier.
            deadline = time.monotonic() + 20
            while not model.is_file() and time.monotonic() < deadline:
                time.sleep(0.05)
        path = train.prepare_tokenizer(hparams)
        # Both ranks must now be at the same collective.
        gathered = [None, None]
        torch.distributed.all_gather_object(gathered, (rank, str(path)))
        outcome = repr(gathered)
    except Exception as err:  # a mismatched collective times out
        outcome = f"error: {type(err).__name__}: {err}"
    Path(results, f"rank{rank}").write_text(outcome)


def test_tokenizer_barrier_is_taken_by_every_rank(tmp_path):
    with open(tmp_path / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "wrd"])
        for i in range(200):
            writer.writerow([i, SENTENCES[i % len(SENTENCES)]])
    port = 29500 + os.getpid() % 2000
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_tokenizer_rank, args=(r, port, str(tmp_path), tmp_path))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
        if p.is_alive():
            p.kill()
    outcomes = [(tmp_path / f"rank{r}").read_text() for r in range(2)]
    model = str(tmp_path / "tokenizer.model")
    expected = repr([(0, model), (1, model)])
    assert outcomes == [expected, expected]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_reverberation_keeps_few_fft_plans_on_gpu(tiny_corpus):
    """Batches of ever new lengths through the demo's AddReverb leave at most
    train.FFT_PLANS cuFFT plans (PyTorch's default keeps 4,096)."""
    from speechbrain.augment.time_domain import AddReverb
    from synthetic.layout import RIR_CSV

    data = tiny_corpus / "LibriSpeech"
    reverb = AddReverb(
        csv_file=str(data / RIR_CSV), replacements={"data_folder": str(data)}
    )
    train.bound_fft_plans("cuda")
    cache = torch.backends.cuda.cufft_plan_cache[torch.cuda.current_device()]
    for extra in range(3 * train.FFT_PLANS):
        reverb(torch.randn(2, 16000 + 97 * extra, device="cuda"))
    assert 0 < cache.size <= train.FFT_PLANS

"""Noise and reverberation in the demo recipes, from the corpus's own files."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch
from hyperpyyaml import load_hyperpyyaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["hyperconformer_demo.yaml", "conformer_demo.yaml"])
def test_demo_recipe_adds_noise_and_reverberation(name, tiny_corpus):
    data = Path(tiny_corpus) / "LibriSpeech"
    with open(ROOT / "hparams" / "LibriSpeech" / name) as f:
        hparams = load_hyperpyyaml(f, {"data_folder": str(data)})
    augment = hparams["wav_augment"]
    files = sorted((data / "train-clean-100").rglob("*.flac"))[:2]
    waves = [torch.from_numpy(sf.read(str(p), dtype="float32")[0]) for p in files]
    width = max(len(w) for w in waves)
    batch = torch.stack(
        [torch.nn.functional.pad(w, (0, width - len(w))) for w in waves]
    )
    lengths = torch.tensor([len(w) / width for w in waves])
    torch.manual_seed(0)
    changed = 0
    for _ in range(12):
        out, out_lengths = augment(batch, lengths)
        assert out.shape == batch.shape and torch.equal(out_lengths, lengths)
        changed += not torch.allclose(out, batch)
    # augment_prob 0.5: some batches untouched, some corrupted.
    assert 2 <= changed <= 10, changed

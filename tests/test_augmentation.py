"""Noise and reverberation made by the corpus tool, read by SpeechBrain's
AddNoise/AddReverb and applied by the demo recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch
from hyperpyyaml import load_hyperpyyaml

ROOT = Path(__file__).resolve().parents[1]


def speech_batch(split: Path, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, samples) padded signals of the first ``n`` files of a split,
    and their (batch,) relative lengths."""
    files = sorted(split.rglob("*.flac"))[:n]
    waves = [torch.from_numpy(sf.read(str(p), dtype="float32")[0]) for p in files]
    width = max(len(w) for w in waves)
    batch = torch.stack(
        [torch.nn.functional.pad(w, (0, width - len(w))) for w in waves]
    )
    return batch, torch.tensor([len(w) / width for w in waves])


@pytest.mark.parametrize(
    "name",
    [
        "hyperconformer_demo.yaml",
        "conformer_demo.yaml",
        "hyperconformer_demo_streaming.yaml",
    ],
)
def test_demo_recipe_adds_noise_and_reverberation(name, tiny_corpus):
    data = Path(tiny_corpus) / "LibriSpeech"
    with open(ROOT / "hparams" / "LibriSpeech" / name) as f:
        hparams = load_hyperpyyaml(f, {"data_folder": str(data)})
    augment = hparams["wav_augment"]
    batch, lengths = speech_batch(data / "train-clean-100")
    torch.manual_seed(0)
    changed = 0
    for _ in range(12):
        out, out_lengths = augment(batch, lengths)
        assert out.shape == batch.shape and torch.equal(out_lengths, lengths)
        changed += not torch.allclose(out, batch)
    # augment_prob 0.5: some batches untouched, some corrupted.
    assert 2 <= changed <= 10, changed


def test_noise_and_rooms_work_with_speechbrain(tiny_corpus: Path) -> None:
    from speechbrain.augment.time_domain import AddNoise, AddReverb
    from synthetic.layout import NOISE_CSV, RIR_CSV

    data = tiny_corpus / "LibriSpeech"
    replacements = {"data_folder": str(data)}
    batch, lengths = speech_batch(data / "test-clean")
    torch.manual_seed(0)
    noisy = AddNoise(
        csv_file=str(data / NOISE_CSV), snr_low=5, snr_high=5, pad_noise=True,
        replacements=replacements,
    )(batch, lengths)  # fmt: skip
    # 5 dB SNR: the added noise has about 10^(-5/20) of the speech's amplitude.
    ratio = (noisy - batch).pow(2).mean().sqrt() / batch.pow(2).mean().sqrt()
    assert 0.3 < ratio < 1.0
    reverberant = AddReverb(csv_file=str(data / RIR_CSV), replacements=replacements)(
        batch
    )
    assert reverberant.shape == batch.shape
    # Same timing (direct path kept in place), smeared waveform.
    corr = torch.nn.functional.cosine_similarity(reverberant, batch, dim=1)
    assert (corr > 0.3).all() and (corr < 0.99).all(), corr
    # The files are the tool's: a dozen or more of each, made from the seed.
    assert len(list((data / "augmentation" / "noise").glob("*.wav"))) >= 12
    assert len(list((data / "augmentation" / "rir").glob("*.wav"))) >= 12

"""The exported model folder loads with SpeechBrain's stock inference class."""

from pathlib import Path

import pytest
import sentencepiece as spm
import soundfile as sf
import torch
from conftest import train_sentencepiece
from hyperpyyaml import load_hyperpyyaml
from speechbrain.inference.ASR import EncoderDecoderASR

from hyperconformer import Transcriber
from hyperconformer.export import export_model_folder

ROOT = Path(__file__).resolve().parents[1]
HPARAMS = ROOT / "hparams" / "LibriSpeech"
VOCAB = 40
OVERRIDES = {
    "data_folder": "unused",
    "output_neurons": VOCAB,
    "d_model": 32,
    "nhead": 2,
    "num_encoder_layers": 1,
    "num_decoder_layers": 1,
    "d_ffn": 64,
    "test_beam_size": 2,
    "max_decode_ratio": 0.3,
}
KEYS = [
    "sample_rate",
    "compute_features",
    "normalizer",
    "CNN",
    "Transformer",
    "ctc_lin",
    "seq_lin",
    "asr_model",
    "tokenizer",
    "encoder",
    "decoder",
    "bos_index",
    "eos_index",
    "blank_index",
    "pretrainer",
    "modules",
]


@pytest.fixture(scope="module")
def tokenizer_file(tiny_corpus, tmp_path_factory):
    """A small unigram model trained on the tiny corpus transcripts."""
    folder = tmp_path_factory.mktemp("spm")
    lines = []
    for trans in sorted((Path(tiny_corpus) / "LibriSpeech").rglob("*.trans.txt")):
        lines += [line.split(" ", 1)[1] for line in trans.read_text().splitlines()]
    train_sentencepiece(lines, VOCAB, folder / "tok.model")
    return folder / "tok.model"


@pytest.fixture(scope="module")
def test_wavs(tiny_corpus):
    files = sorted((Path(tiny_corpus) / "LibriSpeech" / "test-clean").rglob("*.flac"))
    return files[:2]


# Every shipped yaml: global (8M, 22M, small) and per-utterance (demo) feature
# normalisation, both model classes and both front-ends.
@pytest.mark.parametrize("hparams", sorted(p.name for p in HPARAMS.glob("*.yaml")))
def test_export_loads_with_encoder_decoder_asr(
    hparams, tokenizer_file, test_wavs, tmp_path
):
    torch.manual_seed(0)
    with open(HPARAMS / hparams) as fin:
        hp = load_hyperpyyaml(fin, OVERRIDES)
    model, normalize = hp["model"], hp["normalize"]
    # Non-trivial normaliser statistics (global normalisation), as after training.
    normalize.train()
    normalize(torch.randn(4, 50, hp["n_mels"]) * 3 + 1, torch.ones(4))
    model.eval()
    normalize.eval()

    folder = export_model_folder(
        tmp_path / "model",
        HPARAMS / hparams,
        asr_model=model,
        normalizer=normalize,
        tokenizer_file=tokenizer_file,
        overrides=OVERRIDES,
    )
    names = {"hyperparams.yaml", "model.ckpt", "normalizer.ckpt", "tokenizer.ckpt"}
    assert names <= {p.name for p in folder.iterdir()}

    # model.ckpt is a plain state dict: safe loading works.
    state = torch.load(folder / "model.ckpt", weights_only=True)
    assert state.keys() == model.state_dict().keys()
    torch.load(folder / "normalizer.ckpt", weights_only=True)

    asr = EncoderDecoderASR.from_hparams(
        source=str(folder), savedir=str(tmp_path / "savedir")
    )
    for key in KEYS:
        assert hasattr(asr.hparams, key), key
    assert isinstance(asr.hparams.tokenizer, spm.SentencePieceProcessor)
    assert asr.hparams.tokenizer.get_piece_size() == VOCAB
    for name, value in asr.hparams.asr_model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert torch.equal(asr.hparams.normalizer.glob_mean, normalize.glob_mean)

    # Same encoder output as the recipe's pipeline on the original modules.
    wav, _ = sf.read(test_wavs[0], dtype="float32")
    wavs, lens = torch.from_numpy(wav)[None], torch.ones(1)
    with torch.no_grad():
        feats = normalize(hp["compute_features"](wavs), lens)
        expected = hp["Transformer"].encode(hp["CNN"](feats), lens)
        encoded = asr.encode_batch(wavs, lens)
    torch.testing.assert_close(encoded, expected)

    text = asr.transcribe_file(str(test_wavs[0]))
    assert isinstance(text, str)
    # The project's loader (exact allow-list) accepts it and agrees.
    assert Transcriber.from_pretrained(folder).transcribe_file(test_wavs[0]) == text
    words, tokens = asr.transcribe_batch(wavs, lens)
    assert len(words) == 1 and len(tokens) == 1

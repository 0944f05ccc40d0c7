"""hyperconformer-import: SpeechBrain checkpoint folder -> model folder.

The SpeechBrain checkpoint is written by SpeechBrain's own classes with
random weights, laid out like the LibriSpeech recipe's save folder, next to a
training yaml in the recipe's style (placeholders, seeding, searchers).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import train_sentencepiece
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR
from speechbrain.nnet.linear import Linear
from speechbrain.processing.features import InputNormalization

from hyperconformer import HyperConformerASR, Transcriber
from hyperconformer.importer import main

SR = 16000
VOCAB = 40
SIZES = dict(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2, d_ffn=64)

TRAINING_YAML = """
# Recipe-style training yaml (only what the import reads must be right).
seed: 1986
__set_seed: !apply:speechbrain.utils.seed.seed_everything [!ref <seed>]
output_folder: !ref results/hyperconformer/<seed>
save_folder: !ref <output_folder>/save
data_folder: !PLACEHOLDER  # e.g. /path/to/LibriSpeech
train_csv: !ref <data_folder>/train.csv

sample_rate: 16000
n_fft: 400
n_mels: 40
d_model: {d_model}
nhead: {nhead}
num_encoder_layers: {num_encoder_layers}
num_decoder_layers: {num_decoder_layers}
d_ffn: {d_ffn}
transformer_dropout: 0.1
activation: !name:torch.nn.GELU
output_neurons: {vocab}
attention_type: {attention_type}
encoder_module: conformer

blank_index: 0
pad_index: 0
bos_index: 1
eos_index: 2
min_decode_ratio: 0.0
max_decode_ratio: 0.3
test_beam_size: 3
ctc_weight_decode: 0.40

CNN: !new:speechbrain.lobes.models.convolution.ConvolutionFrontEnd
    input_shape: (8, 10, 40)
    num_blocks: 2
    num_layers_per_block: 1
    out_channels: (16, 16)
    kernel_sizes: (3, 3)
    strides: (2, 2)
    residuals: (False, False)

Transformer: !new:speechbrain.lobes.models.transformer.TransformerASR.TransformerASR
    input_size: 160
    tgt_vocab: !ref <output_neurons>
    d_model: !ref <d_model>
    nhead: !ref <nhead>
    num_encoder_layers: !ref <num_encoder_layers>
    num_decoder_layers: !ref <num_decoder_layers>
    d_ffn: !ref <d_ffn>
    dropout: !ref <transformer_dropout>
    activation: !ref <activation>
    encoder_module: !ref <encoder_module>
    attention_type: !ref <attention_type>
    normalize_before: True
    causal: False

ctc_lin: !new:speechbrain.nnet.linear.Linear
    input_size: !ref <d_model>
    n_neurons: !ref <output_neurons>

seq_lin: !new:speechbrain.nnet.linear.Linear
    input_size: !ref <d_model>
    n_neurons: !ref <output_neurons>

normalize: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    update_until_epoch: 4

compute_features: !new:speechbrain.lobes.features.Fbank
    sample_rate: !ref <sample_rate>
    n_fft: !ref <n_fft>
    n_mels: !ref <n_mels>

model: !new:torch.nn.ModuleList
    - [!ref <CNN>, !ref <Transformer>, !ref <seq_lin>, !ref <ctc_lin>]

test_search: !new:speechbrain.decoders.S2STransformerBeamSearcher
    modules: [!ref <Transformer>, !ref <seq_lin>]
    bos_index: !ref <bos_index>
    eos_index: !ref <eos_index>
    min_decode_ratio: !ref <min_decode_ratio>
    max_decode_ratio: !ref <max_decode_ratio>
    beam_size: !ref <test_beam_size>
    temperature: 1.15
    using_eos_threshold: False
    length_normalization: True

train_logger: !new:speechbrain.utils.train_logger.FileTrainLogger
    save_file: !ref <output_folder>/train_log.txt
"""


def training_yaml(attention_type: str = "hypermixing") -> str:
    return TRAINING_YAML.format(vocab=VOCAB, attention_type=attention_type, **SIZES)


def train_tokenizer(path: Path) -> Path:
    sentences = [
        "the quick brown fox jumps over the lazy dog",
        "a stitch in time saves nine",
        "she sells sea shells by the sea shore",
    ]
    train_sentencepiece(sentences * 10, VOCAB, path)
    return path


def speechbrain_model() -> tuple[torch.nn.ModuleList, InputNormalization, Fbank]:
    torch.manual_seed(0)
    cnn = ConvolutionFrontEnd(
        input_shape=(8, 10, 40),
        num_blocks=2,
        num_layers_per_block=1,
        out_channels=(16, 16),
        kernel_sizes=(3, 3),
        strides=(2, 2),
        residuals=(False, False),
    )
    transformer = TransformerASR(
        input_size=160,
        tgt_vocab=VOCAB,
        **SIZES,
        dropout=0.1,
        activation=torch.nn.GELU,
        encoder_module="conformer",
        attention_type="hypermixing",
        normalize_before=True,
        causal=False,
    )
    model = torch.nn.ModuleList(
        [
            cnn,
            transformer,
            Linear(input_size=SIZES["d_model"], n_neurons=VOCAB),
            Linear(input_size=SIZES["d_model"], n_neurons=VOCAB),
        ]
    ).eval()
    fbank = Fbank(sample_rate=SR, n_fft=400, n_mels=40)
    normalizer = InputNormalization(norm_type="global")
    normalizer(fbank(0.1 * torch.randn(2, SR)), torch.ones(2), epoch=0)
    normalizer.eval()
    return model, normalizer, fbank


@pytest.fixture(scope="module")
def speechbrain_dir(tmp_path_factory) -> Path:
    """A recipe save folder: two checkpoints, the newer one is the real one."""
    root = tmp_path_factory.mktemp("sb")
    save = root / "save"
    model, normalizer, _ = speechbrain_model()
    old = save / "CKPT+2024-01-01+00-00-00+00"
    new = save / "CKPT+2024-06-01+00-00-00+00"
    for folder in (old, new):
        folder.mkdir(parents=True)
        torch.save(normalizer._statistics_dict(), folder / "normalizer.ckpt")
    torch.save(model.state_dict(), new / "model.ckpt")
    torch.save({"0.bogus": torch.zeros(1)}, old / "model.ckpt")
    train_tokenizer(save / "tokenizer.ckpt")
    (root / "train.yaml").write_text(training_yaml())
    return root


@pytest.fixture(scope="module")
def imported(speechbrain_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "model"
    code = main(
        [
            "--speechbrain-dir",
            str(speechbrain_dir / "save"),
            "--hparams",
            str(speechbrain_dir / "train.yaml"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


def test_imported_model_computes_like_speechbrain(imported):
    sb_model, sb_norm, fbank = speechbrain_model()
    asr = Transcriber.from_pretrained(imported, ctc_only=True)
    cnn, ours, _, ctc_lin = asr.hparams["asr_model"]
    assert isinstance(ours, HyperConformerASR)
    with torch.no_grad():
        # Encoder and decoder on the same front-end output.
        feats = sb_norm(fbank(0.1 * torch.randn(2, 3 * SR)), torch.ones(2))
        src = sb_model[0](feats)
        lens = torch.ones(2)
        enc_sb = sb_model[1].encode(src, lens)
        enc_ours = ours.encode(cnn(feats), lens)
        assert (enc_sb - enc_ours).abs().max() <= 1e-4
        tgt = torch.randint(3, VOCAB, (2, 7))
        frames = torch.full((2,), enc_sb.size(1))
        dec_sb, _ = sb_model[1].decode(tgt, enc_sb, frames)
        dec_ours, _ = ours.decode(tgt, enc_sb, frames)
        assert (dec_sb - dec_ours).abs().max() <= 1e-4
        # The whole path from waveform to CTC posteriors.
        wav = 0.1 * torch.randn(1, 2 * SR)
        ref = sb_model[3](sb_model[1].encode(sb_model[0](sb_norm(fbank(wav))), None))
        mine = ctc_lin(asr.encoder(wav, torch.ones(1)))
        assert (ref - mine).abs().max() <= 1e-4


def test_imported_folder_transcribes(imported, tmp_path):
    from speechbrain.inference.ASR import EncoderDecoderASR

    rng = np.random.default_rng(0)
    wav = tmp_path / "x.wav"
    soundfile.write(wav, (0.1 * rng.standard_normal(SR)).astype("f4"), SR)
    asr = Transcriber.from_pretrained(imported)
    text = asr.transcribe_file(wav)
    assert isinstance(text, str)
    assert asr.decoder.temperature == pytest.approx(1.15)  # from test_search
    assert isinstance(
        Transcriber.from_pretrained(imported, ctc_only=True).transcribe_file(wav), str
    )
    stock = EncoderDecoderASR.from_hparams(
        source=str(imported), savedir=str(tmp_path / "sb")
    )
    assert stock.transcribe_file(str(wav)) == text


def run(capsys, speechbrain_dir, out, hparams=None, save=None, extra=()):
    code = main(
        [
            "--speechbrain-dir",
            str(save or speechbrain_dir / "save"),
            "--hparams",
            str(hparams or speechbrain_dir / "train.yaml"),
            "--out",
            str(out),
            *extra,
        ]
    )
    _, err = capsys.readouterr()
    return code, err


class CodeOnLoad:
    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_pickled_code_in_speechbrain_checkpoint_is_refused(
    capsys, speechbrain_dir, tmp_path
):
    save = shutil.copytree(speechbrain_dir / "save", tmp_path / "save")
    newest = sorted(save.glob("CKPT+*"))[-1]
    state = torch.load(newest / "model.ckpt", weights_only=True)
    sentinel = tmp_path / "sentinel"
    state["payload"] = CodeOnLoad(sentinel)
    torch.save(state, newest / "model.ckpt")
    code, err = run(capsys, speechbrain_dir, tmp_path / "out", save=save)
    assert code == 1 and "refusing to load" in err and err.count("\n") == 1
    assert not sentinel.exists() and not (tmp_path / "out").exists()


def test_code_running_yaml_tags_are_refused(capsys, speechbrain_dir, tmp_path):
    sentinel = tmp_path / "sentinel"
    hparams = tmp_path / "train.yaml"
    hparams.write_text(
        training_yaml() + f'\n__x: !applyref:os.system ["touch {sentinel}"]\n'
    )
    code, err = run(capsys, speechbrain_dir, tmp_path / "out", hparams=hparams)
    assert code == 1 and "refusing" in err and not sentinel.exists()
    # A module definition that escapes the allowed packages is refused too.
    hparams.write_text(
        training_yaml().replace(
            "!new:speechbrain.lobes.features.Fbank", "!new:torch.os.system"
        )
    )
    code, err = run(capsys, speechbrain_dir, tmp_path / "out", hparams=hparams)
    assert code == 1 and "refusing to load" in err


def test_not_a_hyperconformer(capsys, speechbrain_dir, tmp_path):
    hparams = tmp_path / "train.yaml"
    hparams.write_text(training_yaml("regularMHA"))
    code, err = run(capsys, speechbrain_dir, tmp_path / "out", hparams=hparams)
    assert code == 1 and "not a HyperConformer" in err


@pytest.mark.parametrize("part", ["normalizer.ckpt", "tokenizer.ckpt", "model.ckpt"])
def test_missing_parts(capsys, speechbrain_dir, tmp_path, part):
    save = shutil.copytree(speechbrain_dir / "save", tmp_path / "save")
    for path in save.rglob(part):
        path.unlink()
    code, err = run(capsys, speechbrain_dir, tmp_path / "out", save=save)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert part.split(".")[0] in err


def test_sizes_that_do_not_fit(capsys, speechbrain_dir, tmp_path):
    code, err = run(
        capsys, speechbrain_dir, tmp_path / "out", extra=["--overrides", "{d_ffn: 128}"]
    )
    assert code == 1 and "does not fit" in err

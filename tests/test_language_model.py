"""Shallow fusion with a Transformer LM trained here on the corpus text.

The LM and its tokenizer are saved as SpeechBrain publishes them (a folder
with lm.ckpt and tokenizer.ckpt); the recipe trains a small ASR model with
that tokenizer, then decodes the test split without and with the LM.
"""

from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from conftest import train_sentencepiece
from speechbrain.inference.ASR import EncoderDecoderASR
from speechbrain.lobes.models.transformer.TransformerLM import TransformerLM
from test_recipe import SHORT, SPLITS, TINY_MODEL, run_recipe, wer_line

from hyperconformer import Transcriber

VOCAB = 48


def transcripts(split_folder: Path) -> list[str]:
    return [
        line.split(" ", 1)[1].strip()
        for path in sorted(split_folder.rglob("*.trans.txt"))
        for line in path.read_text().splitlines()
    ]


def tiny_lm() -> TransformerLM:
    return TransformerLM(
        vocab=VOCAB,
        d_model=64,
        nhead=2,
        num_encoder_layers=2,
        num_decoder_layers=0,
        d_ffn=128,
        dropout=0.0,
        activation=torch.nn.GELU,
        normalize_before=False,
    )


def lm_batches(tokenizer, sentences, batch=16):
    """(input, target) pairs: BOS + ids -> ids + EOS, padded with 0."""
    seqs = [tokenizer.encode_as_ids(s) for s in sentences]
    for i in range(0, len(seqs), batch):
        chunk = seqs[i : i + batch]
        width = max(map(len, chunk)) + 1
        x = torch.zeros(len(chunk), width, dtype=torch.long)
        y = torch.zeros(len(chunk), width, dtype=torch.long)
        for j, ids in enumerate(chunk):
            x[j, : len(ids) + 1] = torch.tensor([1, *ids])
            y[j, : len(ids) + 1] = torch.tensor([*ids, 2])
        yield x, y


def lm_loss(lm, x, y):
    logits = lm(x)
    return torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), y.flatten(), ignore_index=0
    )


@pytest.fixture(scope="module")
def lm_folder(tiny_corpus, tmp_path_factory):
    """A folder like SpeechBrain's LM + tokenizer pair, trained on the text of
    the training split; its dev-split perplexity beats a uniform guess."""
    corpus = Path(tiny_corpus) / "LibriSpeech"
    folder = tmp_path_factory.mktemp("lm")
    train_text = transcripts(corpus / "train-clean-100")
    train_sentencepiece(train_text, VOCAB, folder / "tokenizer.ckpt")
    tokenizer = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.ckpt"))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only wait
    torch.manual_seed(0)
    lm = tiny_lm()
    optimizer = torch.optim.Adam(lm.parameters(), lr=2e-3)
    for _ in range(15):  # epochs over ~80 sentences
        for x, y in lm_batches(tokenizer, train_text):
            optimizer.zero_grad()
            lm_loss(lm, x, y).backward()
            optimizer.step()
    lm.eval()
    with torch.no_grad():
        dev = list(lm_batches(tokenizer, transcripts(corpus / "dev-clean"), 64))
        dev_loss = sum(lm_loss(lm, x, y).item() for x, y in dev) / len(dev)
    assert dev_loss < 0.8 * torch.tensor(VOCAB).log().item()
    torch.save(lm.state_dict(), folder / "lm.ckpt")
    torch.set_num_threads(threads)
    return folder


def test_fusion_changes_the_search_and_does_not_raise_wer(
    lm_folder, tiny_corpus, tmp_path
):
    data = Path(tiny_corpus) / "LibriSpeech"
    out = tmp_path / "run"
    common = [
        *SPLITS,
        *SHORT,
        *TINY_MODEL,  # SHORT sets output_neurons to 48, VOCAB
        "--number_of_epochs=1",
    ]
    run_recipe(
        "hyperconformer_demo.yaml",
        data,
        out,
        *common,
        f"--tokenizer_file={lm_folder / 'tokenizer.ckpt'}",
    )
    plain = (out / "wer_test-clean.txt").read_text()
    # Same run folder: training is done, the test split is decoded again, now
    # with the LM folder (its tokenizer is the one the model was trained with).
    lm_sizes = {"d_model": 64, "nhead": 2, "num_layers": 2, "d_ffn": 128}
    run_recipe(
        "hyperconformer_demo.yaml",
        data,
        out,
        *common,
        f"--pretrained_lm_tokenizer_path={lm_folder}",
        *(f"--lm_{key}={value}" for key, value in lm_sizes.items()),
    )
    fused = (out / "wer_test-clean.txt").read_text()
    assert fused.splitlines()[1:] != plain.splitlines()[1:]  # other hypotheses

    def wer(text):
        return float(text.split()[1])

    # Measured: 83.8% with the LM, 101.7% without, after one epoch.
    assert wer(fused) <= wer(plain), (wer_line(out / "wer_test-clean.txt"), plain[:60])

    # The exported folder carries the LM: both loaders decode with it, alike.
    folder = out / "model"
    exported = torch.load(folder / "lm.ckpt", weights_only=True)
    trained = torch.load(lm_folder / "lm.ckpt", weights_only=True)
    assert all(torch.equal(exported[k], v) for k, v in trained.items())
    flacs = sorted((data / "test-clean").rglob("*.flac"))[:2]
    ours = Transcriber.from_pretrained(folder)
    assert ours.decoder.scorer.weights["transformerlm"] == 0.6
    theirs = EncoderDecoderASR.from_hparams(
        source=str(folder), savedir=str(tmp_path / "savedir")
    )
    assert "transformerlm" in theirs.mods.decoder.scorer.full_scorers
    for flac in flacs:
        assert ours.transcribe_file(flac) == theirs.transcribe_file(str(flac))


def test_language_model_errors_name_the_culprit(lm_folder, tmp_path):
    import train

    folder = {"lm_file": None, "tokenizer_file": None}
    with pytest.raises(train.DataError, match=r"has no lm\.ckpt"):
        train.resolve_language_model(
            {**folder, "pretrained_lm_tokenizer_path": tmp_path}
        )
    with pytest.raises(train.DataError, match="both set"):
        train.resolve_language_model(
            {**folder, "lm_file": "x.ckpt", "pretrained_lm_tokenizer_path": lm_folder}
        )
    hparams = {**folder, "pretrained_lm_tokenizer_path": str(lm_folder)}
    train.resolve_language_model(hparams)
    assert hparams["lm_file"] == str(lm_folder / "lm.ckpt")
    assert hparams["tokenizer_file"] == str(lm_folder / "tokenizer.ckpt")
    # An LM of other sizes than lm_model says so instead of a traceback.
    hparams["lm_model"] = lambda: TransformerLM(
        vocab=VOCAB, d_model=32, nhead=2, num_encoder_layers=1, d_ffn=64
    )
    with pytest.raises(train.DataError, match="does not fit lm_model"):
        train.load_language_model(hparams)
    hparams["lm_model"] = tiny_lm
    assert not train.load_language_model(hparams).training

"""Fast joint CTC/attention search: incremental decoding equals full
recomputation, CTC prefix scores equal SpeechBrain's, and the hypotheses equal
those of SpeechBrain's ``S2STransformerBeamSearcher``.

The search test decodes the tiny corpus's 12 shortest dev/test utterances with
a small model trained here for a few seconds on 8 of them, so that on those its
attention and CTC heads are confident and agree, as a trained model's do; the
other 4 it has not seen.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import soundfile
import torch
from conftest import train_sentencepiece
from speechbrain.decoders.ctc import CTCPrefixScore
from speechbrain.decoders.scorer import CTCScorer, ScorerBuilder, TransformerLMScorer
from speechbrain.decoders.seq2seq import S2STransformerBeamSearcher
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR
from speechbrain.lobes.models.transformer.TransformerLM import TransformerLM
from speechbrain.nnet.linear import Linear
from speechbrain.utils.edit_distance import wer_details_for_batch

from hyperconformer import ConvFrontEnd, HyperConformerASR
from hyperconformer.ctc_prefix import CTCPrefixScorer
from hyperconformer.incremental import IncrementalDecoder, IncrementalLM
from hyperconformer.joint_search import JointBeamSearcher

VOCAB = 60


def asr_models():
    torch.manual_seed(0)
    return {
        "hyperconformer": HyperConformerASR(
            input_size=8, tgt_vocab=30, d_model=32, nhead=4, num_encoder_layers=1,
            num_decoder_layers=2, d_ffn=64,
        ),
        "conformer_relpos": TransformerASR(
            30, 8, 32, 4, 1, 2, 64, encoder_module="conformer",
            attention_type="RelPosMHAXL", normalize_before=True, causal=False,
        ),
        "transformer_post_norm": TransformerASR(
            30, 8, 32, 4, 1, 2, 64, normalize_before=False, causal=False
        ),
    }  # fmt: skip


@pytest.mark.parametrize(
    "name", ["hyperconformer", "conformer_relpos", "transformer_post_norm"]
)
def test_incremental_decoder_equals_full_recomputation(name):
    model = asr_models()[name].eval()
    fc = Linear(input_size=32, n_neurons=30)
    batch, beam, time = 3, 2, 25
    enc = torch.randn(batch, time, 32)
    lens = torch.tensor([25, 17, 9])
    decoder = IncrementalDecoder(model, fc, temperature=1.15)
    decoder.start(enc, lens, beam, max_steps=20)
    tokens = torch.randint(3, 30, (batch * beam, 8))
    tokens[:, 0] = 1
    for step in range(8):
        if step == 4:  # beam pruning: rows continue other rows (within an utterance)
            order = torch.tensor([1, 1, 2, 3, 5, 4])
            decoder.select(order)
            tokens = tokens[order]
        mine = decoder.step(tokens[:, step])
        pred, _ = model.decode(
            tokens[:, : step + 1],
            enc.repeat_interleave(beam, 0),
            lens.repeat_interleave(beam),
        )
        full = torch.log_softmax(fc(pred)[:, -1] / 1.15, dim=-1)
        assert (mine - full).abs().max() < 1e-5


def test_incremental_lm_equals_full_recomputation():
    torch.manual_seed(0)
    lm = TransformerLM(
        vocab=30, d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=0,
        d_ffn=64, dropout=0.0,
    ).eval()  # fmt: skip
    inc = IncrementalLM(lm, temperature=1.15)
    inc.start(rows=6, max_steps=10, like=torch.zeros(1))
    tokens = torch.randint(3, 30, (6, 8))
    tokens[:, 0] = 1
    for step in range(8):
        if step == 3:
            inc.select(torch.tensor([0, 0, 1, 5, 4, 4]))
            tokens = tokens[[0, 0, 1, 5, 4, 4]]
        full = torch.log_softmax(lm(tokens[:, : step + 1])[:, -1] / 1.15, dim=-1)
        assert (inc.step(tokens[:, step]) - full).abs().max() < 1e-5


def test_ctc_prefix_scores_equal_speechbrains():
    torch.manual_seed(0)
    batch, time, vocab, beam = 2, 40, 12, 3
    log_probs = (3 * torch.randn(batch, time, vocab)).log_softmax(-1)
    lens = torch.tensor([40, 27])
    reference = CTCPrefixScore(log_probs.clone(), lens, 0, 2)
    mine = CTCPrefixScorer(log_probs, lens, 0, 2, beam)
    last = torch.ones(batch * beam, dtype=torch.long)
    state = None
    rows = torch.arange(batch * beam).repeat_interleave(vocab)
    for _ in range(6):
        delta, state = reference.forward_step(last, state, None, None)
        psi = mine.score(rows, torch.arange(vocab).repeat(batch * beam), last)
        psi = psi.view(batch * beam, vocab)
        psi[:, 2] = mine.eos_scores()
        possible = state[1] > -1e10
        assert possible[:, 3:].all()
        ours = (psi - mine.psi_prev[:, None]).float()
        assert (ours - delta)[possible].abs().max() < 1e-4
        # Every hypothesis continues with a random token (not blank/eos).
        cand = torch.stack([torch.randperm(beam * vocab)[:beam] for _ in range(batch)])
        cand = torch.where(cand % vocab < 3, cand + 3, cand)
        state = reference.permute_mem(state, cand)
        pred = (cand // vocab + torch.arange(batch)[:, None] * beam).flatten()
        tokens = (cand % vocab).flatten()
        mine.advance(pred, tokens, psi[pred, tokens], last)
        last = tokens
        # Prefix scores never grow along a hypothesis (what the search relies on).
        assert (mine.psi_prev <= psi.max(1).values[pred] + 1e-9).all()


# ---------------------------------------------------------------- search


@pytest.fixture(scope="module")
def trained(tiny_corpus):
    """A small model trained for a few seconds; test-split encoder outputs."""
    import sentencepiece as spm
    from speechbrain.lobes.features import Fbank

    root = Path(tiny_corpus) / "LibriSpeech"
    texts = {}
    for split in ("dev-clean", "test-clean"):
        for trans in sorted((root / split).rglob("*.trans.txt")):
            for line in trans.read_text().splitlines():
                key, text = line.split(" ", 1)
                texts[key] = text
    length = {k: soundfile.info(next(root.rglob(k + ".flac"))).frames for k in texts}
    ids = sorted(texts, key=lambda k: (length[k], k))[:12]
    model_bytes = train_sentencepiece([texts[i] for i in ids], VOCAB)
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    wavs = [
        torch.from_numpy(
            soundfile.read(next(root.rglob(i + ".flac")), dtype="float32")[0]
        )
        for i in ids
    ]
    width = max(w.numel() for w in wavs)
    signal = torch.stack(
        [torch.nn.functional.pad(w, (0, width - w.numel())) for w in wavs]
    )
    wav_lens = torch.tensor([w.numel() / width for w in wavs])
    feats = Fbank(n_mels=40)(signal)
    feats = (feats - feats.mean(1, keepdim=True)) / (feats.std(1, keepdim=True) + 1e-5)

    torch.manual_seed(0)
    cnn = ConvFrontEnd(
        input_shape=[None, None, 40], num_blocks=2, num_layers_per_block=1,
        out_channels=(16, 16), kernel_sizes=(3, 3), strides=(2, 2),
        residuals=(False, False),
    )  # fmt: skip
    model = HyperConformerASR(
        input_size=160, tgt_vocab=VOCAB, d_model=64, nhead=4, num_encoder_layers=2,
        num_decoder_layers=1, d_ffn=128, dropout=0.0,
    )  # fmt: skip
    ctc_lin = Linear(input_size=64, n_neurons=VOCAB)
    seq_lin = Linear(input_size=64, n_neurons=VOCAB)
    params = [p for m in (cnn, model, ctc_lin, seq_lin) for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=2e-3)
    half = 8
    tokens = [sp.encode(texts[i]) for i in ids[:half]]
    longest = max(map(len, tokens))
    bos = torch.tensor([[1, *t] + [0] * (longest - len(t)) for t in tokens])
    eos = torch.tensor([[*t, 2] + [0] * (longest - len(t)) for t in tokens])
    train_feats = feats[:half]
    for _ in range(100):
        enc, dec = model(cnn(train_feats), bos, wav_lens[:half])
        ctc = torch.nn.functional.ctc_loss(
            ctc_lin(enc).log_softmax(-1).transpose(0, 1),
            torch.tensor(sum(tokens, [])),
            (wav_lens[:half] * enc.size(1)).round().long(),
            torch.tensor([len(t) for t in tokens]),
            zero_infinity=True,
        )
        att = torch.nn.functional.cross_entropy(
            seq_lin(dec).transpose(1, 2), eos, ignore_index=0
        )
        optimizer.zero_grad()
        (0.5 * ctc + 0.5 * att).backward()
        optimizer.step()
    for m in (cnn, model, ctc_lin, seq_lin):
        m.eval()
    with torch.no_grad():
        enc = model.encode(cnn(feats), wav_lens)
    refs = [texts[i].split() for i in ids]
    return model, seq_lin, ctc_lin, enc, wav_lens, sp, refs


def searchers(model, seq_lin, ctc_lin, mode, beam, ctc_weight, lm_weight=0.0):
    torch.manual_seed(1)
    lm = TransformerLM(
        vocab=VOCAB, d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=0,
        d_ffn=64, dropout=0.0,
    ).eval()  # fmt: skip
    full, partial, weights = [], [], {}
    if ctc_weight:
        scorer = CTCScorer(ctc_fc=ctc_lin, blank_index=0, eos_index=2)
        (full if mode == "full" else partial).append(scorer)
        weights["ctc"] = ctc_weight
    if lm_weight:
        full.append(TransformerLMScorer(lm, temperature=1.15))
        weights["transformerlm"] = lm_weight
    scorer = ScorerBuilder(full_scorers=full, partial_scorers=partial, weights=weights)
    settings = dict(
        modules=[model, seq_lin], bos_index=1, eos_index=2, min_decode_ratio=0.0,
        max_decode_ratio=1.0, beam_size=beam, temperature=1.15,
        using_eos_threshold=False, length_normalization=True, scorer=scorer,
    )  # fmt: skip
    return S2STransformerBeamSearcher(**settings), JointBeamSearcher(**settings)


@pytest.mark.parametrize(
    "mode, beam, ctc_weight, lm_weight",
    [("full", 10, 0.4, 0.0), ("full", 4, 0.4, 0.6), ("partial", 4, 0.4, 0.0)],
)
def test_same_hypotheses_as_speechbrain(trained, mode, beam, ctc_weight, lm_weight):
    model, seq_lin, ctc_lin, enc, wav_lens, sp, refs = trained
    stock, fast = searchers(model, seq_lin, ctc_lin, mode, beam, ctc_weight, lm_weight)
    assert fast.fallback_reason() is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, _, their_scores, _ = stock(enc, wav_lens)
    ours, _, our_scores, _ = fast(enc, wav_lens)
    same = sum(a == b for a, b in zip(theirs, ours, strict=True))
    assert same >= 0.99 * len(theirs), (same, len(theirs))
    assert (our_scores - their_scores).abs().max() < 1e-3

    def wer(hyps, refs=refs):
        words = [sp.decode_ids([int(t) for t in h]).split() for h in hyps]
        keys = [str(i) for i in range(len(words))]
        details = wer_details_for_batch(keys, refs[: len(words)], words)
        errors = sum(d["num_edits"] for d in details)
        return 100 * errors / sum(len(r) for r in refs[: len(words)])

    assert abs(wer(theirs) - wer(ours)) <= 0.1
    # The model was trained on the first eight: it must transcribe them.
    assert wer(ours[:8]) < 30


def test_unsupported_settings_fall_back_to_speechbrain(trained):
    model, seq_lin, ctc_lin, enc, wav_lens, *_ = trained
    stock, fast = searchers(model, seq_lin, ctc_lin, "full", 3, 1.0)
    assert "CTC weight 1" in fast.fallback_reason()
    lengths = torch.round(wav_lens[:3] * enc.size(1))
    frames = int(lengths.max())
    enc, wav_lens = enc[:3, :frames], lengths / frames
    assert fast(enc, wav_lens)[0] == stock(enc, wav_lens)[0]

"""HyperMixing, the HyperConformer encoder and model, and SpeechBrain compatibility."""

import pytest
import torch
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR
from torch.utils._python_dispatch import TorchDispatchMode

from hyperconformer import (
    HyperConformerASR,
    HyperConformerEncoder,
    HyperMixing,
    convert_speechbrain_state_dict,
)

SIZES = dict(
    input_size=40,
    tgt_vocab=50,
    d_model=32,
    nhead=4,
    num_encoder_layers=2,
    num_decoder_layers=2,
    d_ffn=64,
    normalize_before=True,
)


def speechbrain_hypermixing(**overrides) -> TransformerASR:
    return TransformerASR(
        **{**SIZES, **overrides},
        encoder_module="conformer",
        attention_type="hypermixing",
        causal=False,
    ).eval()


def converted(sb: TransformerASR, **overrides) -> HyperConformerASR:
    ours = HyperConformerASR(**{**SIZES, **overrides}).eval()
    ours.load_state_dict(convert_speechbrain_state_dict(sb.state_dict()), strict=True)
    return ours


class ShapeRecorder(TorchDispatchMode):
    """Records the shape of every tensor an operator produces."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


@pytest.mark.parametrize("tied", [False, True])
def test_conversion_matches_speechbrain(tied):
    torch.manual_seed(0)
    sb = speechbrain_hypermixing()
    if tied:
        for layer in sb.encoder.layers:
            layer.mha_layer.hyper.w2_gen = layer.mha_layer.hyper.w1_gen
            layer.mha_layer.hyper.tied = True
    ours = converted(sb, tied=tied)
    src = torch.randn(2, 70, 40)
    tgt = torch.randint(1, 50, (2, 9))
    with torch.no_grad():
        enc_sb, enc_ours = sb.encode(src), ours.encode(src)
        assert (enc_sb - enc_ours).abs().max() <= 1e-4
        dec_sb, att_sb = sb.decode(tgt, enc_sb)
        dec_ours, att_ours = ours.decode(tgt, enc_ours)
        assert (dec_sb - dec_ours).abs().max() <= 1e-4
        assert (att_sb - att_ours).abs().max() <= 1e-4
        lens = torch.ones(2)
        for a, b in zip(sb(src, tgt, lens), ours(src, tgt, lens), strict=True):
            assert (a - b).abs().max() <= 1e-4


def test_conversion_rejects_foreign_state_dict():
    conformer = TransformerASR(
        **SIZES, encoder_module="conformer", attention_type="RelPosMHAXL", causal=False
    )
    with pytest.raises(ValueError, match="unexpected keys"):
        convert_speechbrain_state_dict(conformer.state_dict())


def test_padding_exact_where_speechbrain_is_not():
    torch.manual_seed(1)
    sb = speechbrain_hypermixing()
    ours = converted(sb)
    lengths = torch.tensor([80, 53, 21])
    src = torch.randn(3, 80, 40)
    with torch.no_grad():
        batch_ours = ours.encode(src, lengths / 80)
        batch_sb = sb.encode(src, lengths / 80)
        worst_ours = worst_sb = 0.0
        for i, n in enumerate(lengths.tolist()):
            alone = src[i : i + 1, :n]
            worst_ours = max(
                worst_ours, (batch_ours[i, :n] - ours.encode(alone)[0]).abs().max()
            )
            worst_sb = max(
                worst_sb, (batch_sb[i, :n] - sb.encode(alone)[0]).abs().max()
            )
    assert worst_ours <= 1e-4
    # The same weights in SpeechBrain's layers leak padding into valid frames.
    assert worst_sb > 1e-2


def test_encoder_padding_exact_with_garbage_padding():
    torch.manual_seed(2)
    enc = HyperConformerEncoder(num_layers=3, d_model=24, d_ffn=48, nhead=3).eval()
    x = torch.randn(2, 64, 24)
    x[1, 40:] = 1e3  # padded frames full of large garbage
    pad = torch.arange(64)[None, :] >= torch.tensor([[64], [40]])
    with torch.no_grad():
        batch = enc(x, pad)
        alone = enc(x[1:, :40])
    assert (batch[1, :40] - alone[0]).abs().max() <= 1e-4


def test_no_length_squared_tensor_and_linear_memory():
    model = HyperConformerASR(**SIZES).eval()
    recorded = {}
    for frames in (600, 1200):
        rec = ShapeRecorder()
        with torch.no_grad(), rec:
            model.encode(torch.randn(1, frames, 40), torch.ones(1))
        recorded[frames] = rec.shapes
        assert all(sum(d >= frames for d in s) < 2 for s in rec.shapes), (
            "a (time, time) tensor was built"
        )
    # Largest intermediate grows linearly: doubling the length doubles it.
    biggest = {
        f: max(torch.Size(s).numel() for s in shapes) for f, shapes in recorded.items()
    }
    assert biggest[1200] <= 2.05 * biggest[600]


def test_speechbrain_builds_quadratic_tensor():
    # Guards the test above: the recorder does see SpeechBrain's dummy L x L.
    sb = speechbrain_hypermixing()
    rec = ShapeRecorder()
    with torch.no_grad(), rec:
        sb.encode(torch.randn(1, 600, 40))
    assert any(sum(d >= 600 for d in s) >= 2 for s in rec.shapes)


def test_no_length_cap():
    # SpeechBrain precomputes 3000 positions; ours has no cap.
    model = HyperConformerASR(**{**SIZES, "num_encoder_layers": 1}).eval()
    with torch.no_grad():
        out = model.encode(torch.randn(1, 5000, 40))
    assert out.shape == (1, 5000, 32)
    assert torch.isfinite(out).all()


def test_gradients_reach_every_parameter():
    torch.manual_seed(3)
    model = HyperConformerASR(**SIZES).train()
    src = torch.randn(2, 30, 40)
    tgt = torch.randint(1, 50, (2, 6))
    enc, dec = model(src, tgt, torch.tensor([1.0, 0.7]))
    (enc.square().mean() + dec.square().mean()).backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()
    ]
    assert not missing, missing


def test_bf16_autocast_cpu_is_finite():
    model = HyperConformerASR(**SIZES).eval()
    src = torch.randn(2, 50, 40)
    tgt = torch.randint(1, 50, (2, 5))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        enc, dec = model(src, tgt, torch.tensor([1.0, 0.5]))
        step, _ = model.decode(tgt, enc, torch.tensor([50, 25]))
    for t in (enc, dec, step):
        assert torch.isfinite(t.float()).all()


def test_mixing_masks_padding_and_heads_split():
    torch.manual_seed(4)
    mix = HyperMixing(d_model=16, hypernet_size=32, num_heads=4).eval()
    x = torch.randn(1, 10, 16)
    pad = torch.zeros(1, 10, dtype=torch.bool)
    pad[0, 7:] = True
    with torch.no_grad():
        masked = mix(x, pad)
        changed = x.clone()
        changed[0, 7:] = torch.randn(3, 16)
        assert torch.allclose(masked[0, :7], mix(changed, pad)[0, :7], atol=1e-6)
        assert torch.allclose(masked[0, :7], mix(x[:, :7])[0], atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(d_model=30, hypernet_size=64, num_heads=4), "divisible by num_heads"),
        (dict(d_model=32, hypernet_size=30, num_heads=4), "hypernet_size"),
    ],
)
def test_mixing_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HyperMixing(**kwargs)


def test_model_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="divisible by nhead"):
        HyperConformerASR(**{**SIZES, "d_model": 30})
    with pytest.raises(ValueError, match="causal"):
        HyperConformerASR(**SIZES, causal=True)
    model = HyperConformerASR(**SIZES)
    with pytest.raises(ValueError, match=r"\(batch, time, 40\)"):
        model.encode(torch.randn(50, 40))
    with pytest.raises(ValueError, match=r"\(batch, time, 40\)"):
        model.encode(torch.randn(1, 50, 41))
    with pytest.raises(ValueError, match="HyperMixing expects"):
        HyperMixing(16, 32, 4)(torch.randn(10, 16))

"""Training from scratch as SpeechBrain's HyperConformer does.

Same initial distributions, same train-mode loss and gradients, and a position
table that is computed once per encoder call instead of growing a buffer.
"""

import copy

import pytest
import test_core
import torch
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR
from speechbrain.nnet.linear import Linear
from speechbrain.nnet.losses import ctc_loss, kldiv_loss
from torch.utils._python_dispatch import TorchDispatchMode

from hyperconformer import HyperConformerASR, convert_speechbrain_state_dict

# test_core's sizes, with dropout off: train mode is then deterministic.
SIZES = {**test_core.SIZES, "dropout": 0.0}


def speechbrain_model(**overrides) -> TransformerASR:
    return TransformerASR(
        **{**SIZES, **overrides},
        encoder_module="conformer",
        attention_type="hypermixing",
        causal=False,
    )


def joint_loss(model, heads, src, tokens, lens):
    """Recipe loss: 0.3 CTC + 0.7 attention (no label smoothing), batchmean."""
    ctc_lin, seq_lin = heads
    bos = torch.cat([torch.ones_like(tokens[:, :1]), tokens], 1)
    eos = torch.cat([tokens, torch.full_like(tokens[:, :1], 2)], 1)
    torch.manual_seed(0)
    enc, dec = model(src, bos, lens, pad_idx=0)
    p_ctc = ctc_lin(enc).log_softmax(-1)
    p_seq = seq_lin(dec).log_softmax(-1)
    loss_ctc = ctc_loss(p_ctc, tokens, lens, lens, blank_index=0)
    loss_seq = kldiv_loss(p_seq, eos, length=lens, label_smoothing=0.0)
    return 0.3 * loss_ctc + 0.7 * loss_seq


def test_train_mode_loss_and_gradients_equal_speechbrain():
    torch.manual_seed(0)
    sb = speechbrain_model().train()
    ours = HyperConformerASR(**SIZES).train()
    ours.load_state_dict(convert_speechbrain_state_dict(sb.state_dict()), strict=True)
    heads_sb = (
        Linear(input_size=32, n_neurons=50),
        Linear(input_size=32, n_neurons=50),
    )
    heads_ours = copy.deepcopy(heads_sb)
    src = torch.randn(3, 60, 40)  # unpadded batch
    tokens = torch.randint(3, 50, (3, 8))
    lens = torch.ones(3)

    loss_sb = joint_loss(sb, heads_sb, src, tokens, lens)
    loss_ours = joint_loss(ours, heads_ours, src, tokens, lens)
    loss_sb.backward()
    loss_ours.backward()
    assert abs(loss_sb.item() - loss_ours.item()) <= 1e-4

    grads_sb = convert_speechbrain_state_dict(
        {n: p.grad for n, p in sb.named_parameters()}
    )
    grads_ours = {n: p.grad for n, p in ours.named_parameters()}
    assert grads_sb.keys() == grads_ours.keys()
    for name, grad in grads_ours.items():
        assert (grad - grads_sb[name]).abs().max() <= 1e-4, name
    for a, b in zip(heads_sb, heads_ours, strict=True):
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            assert (pa.grad - pb.grad).abs().max() <= 1e-4


def test_initial_weights_drawn_as_speechbrain_draws_them():
    sizes = {**SIZES, "d_model": 144, "nhead": 8, "d_ffn": 576, "num_encoder_layers": 4}
    torch.manual_seed(0)
    sb = convert_speechbrain_state_dict(speechbrain_model(**sizes).state_dict())
    ours = HyperConformerASR(**sizes).state_dict()
    old = HyperConformerASR(**sizes, mixing_init="head_uniform").state_dict()
    for name, value in sb.items():
        if value.dim() < 2 or "norm" in name:
            continue
        # Sample stds of n draws agree within a few standard errors (~1/sqrt(2n)).
        rel = 4 / value.numel() ** 0.5
        assert ours[name].std().item() == pytest.approx(value.std().item(), rel=rel), (
            name
        )
    # The other choice really differs (its generator weights are much wider).
    w1 = "encoder.layers.0.mixing.gen_w1"
    assert old[w1].std() > 2 * sb[w1].std()


class OpCounter(TorchDispatchMode):
    """Counts calls of one aten operator."""

    def __init__(self, op):
        super().__init__()
        self.op, self.calls = op, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func.overloadpacket is self.op
        return func(*args, **(kwargs or {}))


def test_one_position_table_per_encoder_call_and_no_growing_buffer():
    model = HyperConformerASR(**{**SIZES, "num_encoder_layers": 3}).train()
    buffers = {n: (b.shape, b.data_ptr()) for n, b in model.named_buffers()}
    for length in (3000, 5000):  # beyond any initial table
        counter = OpCounter(torch.ops.aten.sin)
        with counter:
            enc = model.encode(torch.randn(1, length, 40), torch.ones(1))
        # Three layers, one table: the encoder computes it once per call.
        assert counter.calls == 1
        enc.sum().backward()
    # Nothing changed size or storage in forward: under DDP every rank keeps
    # the buffers it was wrapped with.
    assert {n: (b.shape, b.data_ptr()) for n, b in model.named_buffers()} == buffers

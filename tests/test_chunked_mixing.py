"""Chunked HyperMixing: cumulative sums over chunks in training, a carried
state in a stream, the same outputs either way."""

import pytest
import torch
from test_core import ShapeRecorder

from hyperconformer import HyperMixing, MixingState

LENGTHS = (97, 60, 13)
SUMMARIES = ["sum", "mean"]


def mixer(summary: str) -> HyperMixing:
    """A small mixer; "mean" scaled to a sum over 50 frames."""
    return HyperMixing(48, 96, 4, summary=summary, summary_frames=50)


def padded_batch(d_model: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(LENGTHS), max(LENGTHS), d_model, generator=gen)
    pad = torch.arange(max(LENGTHS))[None] >= torch.tensor(LENGTHS)[:, None]
    return x, pad


@pytest.mark.parametrize("summary", SUMMARIES)
def test_one_chunk_is_offline_mixing(summary):
    torch.manual_seed(0)
    mix = mixer(summary).eval()
    x, pad = padded_batch(48)
    offline = mix(x, pad)
    for chunk_size in (97, 400):
        assert torch.allclose(mix(x, pad, chunk_size=chunk_size), offline, atol=1e-6)
    # A chunk smaller than the input is a different computation.
    assert (mix(x, pad, chunk_size=8) - offline).abs().max() > 1e-2


@pytest.mark.parametrize("summary", SUMMARIES)
def test_frames_see_their_chunk_and_the_past_only(summary):
    torch.manual_seed(1)
    mix = mixer(summary).eval()
    x = torch.randn(1, 40, 48)
    changed = x.clone()
    changed[:, 21] += 1.0  # a frame of chunk 2 (frames 16..23)
    before, after = mix(x, chunk_size=8), mix(changed, chunk_size=8)
    diff = (before - after).abs().amax(-1)[0]
    assert diff[:16].max() == 0  # earlier chunks do not see it
    assert diff[16:].min() > 1e-4  # its own chunk and later ones do


@pytest.mark.parametrize("summary", SUMMARIES)
def test_chunked_mixing_is_padding_exact(summary):
    torch.manual_seed(2)
    mix = mixer(summary).eval()
    x, pad = padded_batch(48)
    x = x.masked_fill(pad.unsqueeze(-1), 1e3)  # garbage in the padding
    batch = mix(x, pad, chunk_size=8)
    for i, length in enumerate(LENGTHS):
        alone = mix(x[i : i + 1, :length], chunk_size=8)
        assert (batch[i, :length] - alone[0]).abs().max() <= 1e-5


@pytest.mark.parametrize("summary", SUMMARIES)
def test_stream_equals_chunked_pass_with_a_constant_state(summary):
    torch.manual_seed(3)
    mix = mixer(summary).eval()
    x = torch.randn(2, 203, 48)
    outputs, state, sizes = [], None, set()
    for start in range(0, 203, 16):
        out, state = mix.stream(x[:, start : start + 16], state)
        outputs.append(out)
        sizes.add(tuple(t.shape for t in state))
    assert isinstance(state, MixingState)
    assert sizes == {((4, 2, 12, 12), (4, 2, 1, 12), (2,))}
    assert state.count.tolist() == [203.0, 203.0]
    streamed = torch.cat(outputs, 1)
    assert (streamed - mix(x, chunk_size=16)).abs().max() <= 1e-5


def test_chunked_training_builds_no_length_squared_tensor():
    mix = HyperMixing(48, 96, 4)
    for frames in (600, 1200):
        x = torch.randn(1, frames, 48, requires_grad=True)
        rec = ShapeRecorder()
        with rec:
            mix(x, chunk_size=8).sum().backward()
        assert all(sum(d >= frames for d in s) < 2 for s in rec.shapes)


def test_mean_summaries_keep_their_scale_as_the_stream_grows():
    offset = torch.randn(48, generator=torch.Generator().manual_seed(4))
    rms = {}
    for summary, frames in (("sum", 1), ("mean", 1), ("mean", 160)):
        torch.manual_seed(4)  # the same weights for each summary
        mix = HyperMixing(48, 96, 4, summary=summary, summary_frames=frames).eval()
        pre_norm = []
        mix.norm.register_forward_hook(
            lambda _m, a, _o, seen=pre_norm: seen.append(a[0])
        )
        gen = torch.Generator().manual_seed(5)
        state = None
        with torch.no_grad():
            for _ in range(100):  # 1600 frames, about a minute
                chunk = torch.randn(1, 16, 48, generator=gen) + offset
                _, state = mix.stream(chunk, state)
        rms[summary, frames] = [p.pow(2).mean().sqrt().item() for p in pre_norm]
    assert rms["sum", 1][-1] / rms["sum", 1][9] > 5  # a sum over 10x more frames
    for frames in (1, 160):
        assert 0.5 < rms["mean", frames][-1] / rms["mean", frames][0] < 2
    # At 160 frames the scaled mean is the sum.
    assert rms["mean", 160][9] == pytest.approx(rms["sum", 1][9], rel=1e-4)
    assert rms["mean", 160][9] > 10 * rms["mean", 1][9]


def test_mean_scaled_to_the_input_length_is_the_sum():
    torch.manual_seed(6)
    summed = HyperMixing(48, 96, 4, summary="sum").eval()
    meaned = HyperMixing(48, 96, 4, summary="mean", summary_frames=97).eval()
    meaned.load_state_dict(summed.state_dict())
    x = torch.randn(2, 97, 48)
    assert torch.allclose(meaned(x), summed(x), atol=1e-5)
    # Chunked, only the chunk whose running count is 97 (the last) agrees.
    diff = (meaned(x, chunk_size=16) - summed(x, chunk_size=16)).abs()
    assert diff[:, 96:].max() <= 1e-5
    assert diff[:, :96].amax(-1).min() > 1e-4


def test_bad_summary_and_chunk_size():
    with pytest.raises(ValueError, match="summary must be one of"):
        HyperMixing(16, 32, 4, summary="max")
    with pytest.raises(ValueError, match="summary_frames must be positive"):
        HyperMixing(16, 32, 4, summary="mean", summary_frames=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        HyperMixing(16, 32, 4)(torch.randn(1, 5, 16), chunk_size=0)

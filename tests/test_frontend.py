"""ConvFrontEnd must be a drop-in replacement for SpeechBrain's ConvolutionFrontEnd."""

import pytest
import torch
from speechbrain.lobes.models.convolution import ConvolutionFrontEnd

from hyperconformer.frontend import ConvFrontEnd

# The HyperConformer recipes' front-end.
RECIPE = dict(
    input_shape=(8, 10, 80),
    num_blocks=2,
    num_layers_per_block=1,
    out_channels=(64, 32),
    kernel_sizes=(3, 3),
    strides=(2, 2),
    residuals=(False, False),
)
# Residual blocks, two layers per block, a stride-1 block, mixed kernel sizes.
RESIDUAL = dict(
    input_shape=(8, 10, 40),
    num_blocks=3,
    num_layers_per_block=2,
    out_channels=(8, 16, 4),
    kernel_sizes=(3, 5, 3),
    strides=(1, 2, 2),
    residuals=(True, True, False),
)
# Dilation with stride 1 and 2 (SpeechBrain pads k // 2 when strided).
DILATED = dict(
    input_shape=(8, 10, 40),
    num_blocks=2,
    num_layers_per_block=2,
    out_channels=(6, 6),
    kernel_sizes=(3, 3),
    strides=(1, 2),
    dilations=(2, 3),
    residuals=(False, False),
)
CAUSAL = dict(RECIPE, input_shape=(8, 10, 40), padding="causal")
VALID = dict(RECIPE, input_shape=(8, 10, 40), padding="valid", conv_bias=False)
FOUR_D = dict(
    input_shape=(8, 10, 24, 3),
    num_blocks=2,
    num_layers_per_block=1,
    out_channels=(8, 4),
    kernel_sizes=(3, 3),
    strides=(2, 2),
    residuals=(True, False),
    activation=torch.nn.GELU,
)
CONFIGS = {
    "recipe": RECIPE,
    "residual": RESIDUAL,
    "dilated": DILATED,
    "causal": CAUSAL,
    "valid": VALID,
    "4d": FOUR_D,
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: threading only adds overhead (a lot on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_pair(config, **kwargs):
    """A SpeechBrain front-end and ours with the same (randomised) weights."""
    torch.manual_seed(0)
    sb = ConvolutionFrontEnd(**config)
    with torch.no_grad():  # non-trivial norm affine parameters
        for name, p in sb.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    ours = ConvFrontEnd(**config, **kwargs)
    ours.load_state_dict(sb.state_dict(), strict=True)
    return sb.eval(), ours.eval()


def features(config, batch, frames, seed=1):
    torch.manual_seed(seed)
    return torch.randn(batch, frames, *config["input_shape"][2:])


def test_state_dict_round_trip():
    sb = ConvolutionFrontEnd(**RESIDUAL)
    ours = ConvFrontEnd(**RESIDUAL)
    sb_sd, ours_sd = sb.state_dict(), ours.state_dict()
    assert list(sb_sd) == list(ours_sd)
    assert all(sb_sd[k].shape == ours_sd[k].shape for k in sb_sd)
    ours.load_state_dict(sb_sd, strict=True)  # SB -> ours
    for p in ours.parameters():
        torch.nn.init.normal_(p)
    sb.load_state_dict(ours.state_dict(), strict=True)  # ours -> SB
    for k, v in sb.state_dict().items():
        assert torch.equal(v, ours.state_dict()[k])


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("chunk_elements", [2**20, 1], ids=["default", "tiny"])
def test_matches_speechbrain(name, chunk_elements):
    config = CONFIGS[name]
    sb, ours = make_pair(config, chunk_elements=chunk_elements)
    for batch, frames in [(1, 9), (2, 10), (3, 57), (2, 200), (1, 301)]:
        x = features(config, batch, frames)
        with torch.no_grad():
            expected = sb(x)
            got = ours(x)
        assert got.shape == expected.shape
        assert got.is_contiguous()
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
        # Chunked inference path.
        with torch.inference_mode():
            torch.testing.assert_close(ours(x), expected, atol=1e-4, rtol=0)
        assert ours.output_frames(frames) == expected.shape[1]
    assert ours.output_size == expected.shape[2] * expected.shape[3]


def test_recipe_shapes_and_filter_properties():
    sb, ours = make_pair(RECIPE)
    x = features(RECIPE, 2, 1000)
    assert ours(x).shape == (2, 250, 20, 32)
    assert ours.output_size == 640
    assert ours.get_filter_properties() == sb.get_filter_properties()


def test_gradients_flow_and_match():
    sb, ours = make_pair(RESIDUAL)
    x = features(RESIDUAL, 2, 41)
    x_sb, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    (sb(x_sb) ** 2).sum().backward()
    (ours(x_ours) ** 2).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_sb.grad, atol=1e-3, rtol=1e-4)
    sb_params = dict(sb.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        torch.testing.assert_close(
            p.grad, sb_params[name].grad, atol=1e-3, rtol=1e-4, msg=name
        )


def test_train_mode_applies_dropout():
    ours = ConvFrontEnd(**RECIPE, dropout=0.5).train()
    x = features(RECIPE, 1, 40)
    with torch.no_grad():
        assert not torch.equal(ours(x), ours(x))


def test_bfloat16_autocast_cpu():
    sb, ours = make_pair(RECIPE)
    x = features(RECIPE, 2, 123)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        expected, got = sb(x), ours(x)
    assert got.dtype == expected.dtype
    torch.testing.assert_close(got.float(), expected.float(), atol=0.1, rtol=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast():
    sb, ours = make_pair(RECIPE)
    sb, ours = sb.cuda(), ours.cuda()
    x = features(RECIPE, 2, 301).cuda()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), sb(x), atol=1e-3, rtol=1e-3)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            expected, got = sb(x), ours(x)
    assert got.dtype == expected.dtype
    torch.testing.assert_close(got.float(), expected.float(), atol=0.1, rtol=0.05)


def test_bad_input_rank():
    ours = ConvFrontEnd(**RECIPE)
    with pytest.raises(ValueError, match="3-D input"):
        ours(torch.randn(2, 10, 80, 1))
    with pytest.raises(ValueError, match="3-D input"):
        ours(torch.randn(10, 80))
    with pytest.raises(ValueError, match="80 frequency bins"):
        ours(torch.randn(2, 10, 40))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(conv_module=torch.nn.Conv2d), "conv_module"),
        (dict(padding="full"), "padding"),
        (dict(kernel_sizes=(2, 2)), "odd"),
        (dict(kernel_sizes=((3, 5), 3)), "kernel_sizes"),
        (dict(out_channels=(64,)), "out_channels"),
        (dict(residuals=(True, False), norm=None), "norm"),
        (dict(input_shape=(8, 10)), "input_shape"),
    ],
)
def test_unsupported_configurations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvFrontEnd(**{**RECIPE, **kwargs})

"""Convolutional front-end that keeps activations in (batch, time, freq, channel).

:class:`ConvFrontEnd` is a drop-in replacement for SpeechBrain's
``speechbrain.lobes.models.convolution.ConvolutionFrontEnd``: it takes the same
constructor arguments, has the same state-dict keys and parameter shapes, and
returns the same outputs.  It differs only in how the computation is laid out:

* SpeechBrain stores activations as ``(B, T, F, C)`` but transposes them to
  ``(B, C, F, T)`` for every convolution and back afterwards, so each layer pays
  for a reflect-padding copy of a non-contiguous tensor, a strided convolution
  input, and a full ``contiguous()`` copy inside ``LayerNorm``.
* Here activations stay physically ``(B, T, F, C)``.  Every convolution runs on
  the ``(B, C, T, F)`` *channels-last view* of that memory (no copy), with the
  kernel transposed once per call to ``(out, in, k_time, k_freq)``.  The output
  of a channels-last convolution is again physically ``(B, T, F, C)``, so the
  normalisation over ``(F, C)`` reads contiguous memory.
* On CPU in inference (grad disabled, eval mode) the input is processed in
  chunks of output frames, each chunk carrying the few context frames its
  receptive field needs.  Every intermediate activation of a chunk then stays
  in cache and no full-length intermediate tensor is ever allocated; only the
  final output is.  Reflect padding at the true start and end of the sequence
  is reproduced exactly, so chunked and unchunked results are identical up to
  floating-point summation order.

The "same" padding rules of SpeechBrain's ``Conv2d`` are reproduced exactly,
including their quirks: with a stride above one the padding is ``k // 2`` on
both sides whatever the dilation; with stride one it is ``d * (k - 1) // 2``;
the padding mode is ``"reflect"``.  ``"causal"`` pads the *frequency* axis on
the left with zeros, like SpeechBrain does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from speechbrain.nnet.CNN import Conv2d as SBConv2d
from speechbrain.nnet.normalization import BatchNorm2d as SBBatchNorm2d
from speechbrain.nnet.normalization import LayerNorm as SBLayerNorm
from speechbrain.utils.filter_analysis import (
    FilterProperties,
    stack_filter_properties,
)

__all__ = ["ConvFrontEnd"]

_PADDINGS = ("same", "valid", "causal")

# Activations that act element-wise, hence frame-locally: chunking over time is
# exact for them.  Anything else falls back to a single whole-sequence pass.
_ELEMENTWISE_ACTIVATIONS = (
    torch.nn.LeakyReLU,
    torch.nn.ReLU,
    torch.nn.ReLU6,
    torch.nn.PReLU,
    torch.nn.GELU,
    torch.nn.SiLU,
    torch.nn.Mish,
    torch.nn.ELU,
    torch.nn.CELU,
    torch.nn.SELU,
    torch.nn.Tanh,
    torch.nn.Sigmoid,
    torch.nn.LogSigmoid,
    torch.nn.Hardswish,
    torch.nn.Hardtanh,
    torch.nn.Hardsigmoid,
    torch.nn.Softplus,
    torch.nn.Identity,
)

# Normalisations that only look at one frame at a time in eval mode.
_FRAME_LOCAL_NORMS = (SBLayerNorm, SBBatchNorm2d)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """Returns ``value`` as a pair of ints, as SpeechBrain's ``Conv2d`` does."""
    if isinstance(value, int):
        return value, value
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _same_padding(stride: int, kernel: int, dilation: int) -> int:
    """Per-side padding of SpeechBrain's ``Conv2d(padding="same")``."""
    if stride > 1:
        return kernel // 2
    return dilation * (kernel - 1) // 2


def _conv_len(n: int, pad: int, kernel: int, stride: int, dilation: int) -> int:
    """Output length of a convolution over ``n`` samples with ``pad`` in total."""
    return (n + pad - dilation * (kernel - 1) - 1) // stride + 1


class _ConvLayer(torch.nn.Module):
    """One SpeechBrain-``Conv2d``-compatible convolution on (B, T, F, C) data.

    The parameters live in ``self.conv`` (a ``torch.nn.Conv2d`` with SpeechBrain's
    weight layout ``(out, in, k_freq, k_time)``), so the state-dict keys are the
    ones of ``speechbrain.nnet.CNN.Conv2d``.

    Arguments
    ---------
    in_channels : int
        Input channels (1 for a 3-D ``(B, T, F)`` input).
    out_channels : int
        Output channels.
    kernel_size, stride, dilation : int or pair of ints
        As in SpeechBrain: the first element applies to frequency, the second
        to time.
    padding : str
        "same", "valid" or "causal".
    bias : bool
        Whether the convolution has a bias.
    conv_init : str, optional
        "kaiming", "zero" or None (PyTorch default), as in SpeechBrain.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        dilation: int | Sequence[int] = 1,
        padding: str = "same",
        bias: bool = True,
        conv_init: str | None = None,
    ):
        super().__init__()
        k_f, k_t = _pair(kernel_size, "kernel_size")
        s_f, s_t = _pair(stride, "stride")
        d_f, d_t = _pair(dilation, "dilation")
        if padding not in _PADDINGS:
            raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
        if padding != "valid" and (k_f % 2 == 0 or k_t % 2 == 0):
            raise ValueError(
                f"kernel sizes must be odd unless padding='valid', got {(k_f, k_t)}"
            )
        self.k_t, self.k_f = k_t, k_f
        self.s_t, self.s_f = s_t, s_f
        self.d_t, self.d_f = d_t, d_f
        self.padding = padding
        if padding == "same":
            p_t = _same_padding(s_t, k_t, d_t)
            p_f = _same_padding(s_f, k_f, d_f)
            self.pad_t = (p_t, p_t)
            self.pad_f = (p_f, p_f)
        elif padding == "causal":
            # SpeechBrain pads dim -2 of its (B, C, F, T) tensor, i.e. frequency.
            self.pad_t = (0, 0)
            self.pad_f = ((k_f - 1) * d_t, 0)
        else:
            self.pad_t = (0, 0)
            self.pad_f = (0, 0)
        self.conv = torch.nn.Conv2d(
            in_channels,
            out_channels,
            (k_f, k_t),
            stride=(s_f, s_t),
            dilation=(d_f, d_t),
            bias=bias,
        )
        if conv_init == "kaiming":
            torch.nn.init.kaiming_normal_(self.conv.weight)
        elif conv_init == "zero":
            torch.nn.init.zeros_(self.conv.weight)

    def out_frames(self, n: int) -> int:
        """Number of output frames for ``n`` input frames."""
        return _conv_len(n, sum(self.pad_t), self.k_t, self.s_t, self.d_t)

    def out_freq(self, n: int) -> int:
        """Number of output frequency bins for ``n`` input bins."""
        return _conv_len(n, sum(self.pad_f), self.k_f, self.s_f, self.d_f)

    def need(self, a: int, b: int, n_in: int) -> tuple[int, int, int, int]:
        """Input frames needed to produce output frames ``[a, b)``.

        Returns ``(lo, hi, pad_left, pad_right)``: the input frames ``[lo, hi)``
        that exist and how many padding frames must be added on each side.
        Padding is only ever needed at the true start or end of the sequence.
        """
        want_lo = a * self.s_t - self.pad_t[0]
        want_hi = (b - 1) * self.s_t - self.pad_t[0] + self.d_t * (self.k_t - 1) + 1
        lo, hi = max(want_lo, 0), min(want_hi, n_in)
        return lo, hi, lo - want_lo, want_hi - hi

    def time_freq_weight(self) -> torch.Tensor:
        """The kernel as ``(out, in, k_time, k_freq)``, channels-last in memory."""
        return self.conv.weight.transpose(2, 3).contiguous(
            memory_format=torch.channels_last
        )

    def convolve(
        self,
        x: torch.Tensor,
        pad_left: int,
        pad_right: int,
        weight: torch.Tensor,
    ) -> torch.Tensor:
        """Convolves a chunk of frames.

        Arguments
        ---------
        x : torch.Tensor
            ``(B, n, F)`` or ``(B, n, F, C)``, the frames of the chunk.
        pad_left, pad_right : int
            Time padding to add (non-zero only at the sequence ends).
        weight : torch.Tensor
            The result of :meth:`time_freq_weight`.

        Returns
        -------
        torch.Tensor
            ``(B, n', F', C_out)``, physically contiguous.
        """
        v = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
        if self.padding == "same":
            pads = (self.pad_f[0], self.pad_f[1], pad_left, pad_right)
            if any(pads):
                v = F.pad(v, pads, mode="reflect")
        elif self.padding == "causal" and self.pad_f[0]:
            v = F.pad(v, (self.pad_f[0], 0, 0, 0))
        y = F.conv2d(
            v,
            weight,
            self.conv.bias,
            stride=(self.s_t, self.s_f),
            dilation=(self.d_t, self.d_f),
        )
        return y.permute(0, 2, 3, 1)


def _build_norm(norm: Callable, shape: tuple[int, ...]) -> torch.nn.Module:
    """Instantiates ``norm`` the way SpeechBrain's ``Sequential`` does."""
    try:
        spec = inspect.getfullargspec(norm)
    except TypeError as err:
        raise ValueError(f"norm must be a class, got {norm!r}") from err
    if "input_shape" not in spec.args + spec.kwonlyargs:
        raise ValueError(
            f"norm {norm!r} must accept an `input_shape` argument, "
            "like speechbrain.nnet.normalization.LayerNorm"
        )
    return norm(input_shape=torch.Size(shape))


class _ConvBlock(torch.nn.Module):
    """Counterpart of SpeechBrain's ``ConvBlock`` (same submodule names)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_layers: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int],
        dilation: int | Sequence[int],
        residual: bool,
        activation: Callable[[], torch.nn.Module],
        norm: Callable | None,
        dropout: float,
        conv_bias: bool,
        padding: str,
        conv_init: str | None,
    ):
        super().__init__()
        batch, frames, freq = input_shape[:3]
        channels = input_shape[3] if len(input_shape) == 4 else 1
        self.convs = torch.nn.ModuleDict()
        self.layer_sizes: list[tuple[int, int]] = []  # (freq, channels) outputs
        self.layer_names: list[tuple[str, str | None, str, str]] = []
        for i in range(num_layers):
            layer = _ConvLayer(
                channels,
                out_channels,
                kernel_size,
                stride=stride if i == num_layers - 1 else 1,
                dilation=dilation,
                padding=padding,
                bias=conv_bias,
                conv_init=conv_init,
            )
            frames, freq = layer.out_frames(frames), layer.out_freq(freq)
            channels = out_channels
            self.layer_sizes.append((freq, channels))
            self.convs[f"conv_{i}"] = layer
            norm_name = None
            if norm is not None:
                norm_name = f"norm_{i}"
                self.convs[norm_name] = _build_norm(
                    norm, (batch, frames, freq, channels)
                )
            self.convs[f"act_{i}"] = activation()
            self.convs[f"dropout_{i}"] = torch.nn.Dropout(dropout)
            self.layer_names.append(
                (f"conv_{i}", norm_name, f"act_{i}", f"dropout_{i}")
            )

        self.reduce_conv: torch.nn.ModuleDict | None = None
        self.drop: torch.nn.Dropout | None = None
        if residual:
            if norm is None:
                raise ValueError("residual blocks need a norm (as in SpeechBrain)")
            in_channels = input_shape[3] if len(input_shape) == 4 else 1
            res = _ConvLayer(in_channels, out_channels, 1, stride=stride)
            res_shape = (
                batch,
                res.out_frames(input_shape[1]),
                res.out_freq(input_shape[2]),
                out_channels,
            )
            if res_shape[1:] != (frames, freq, channels):
                raise ValueError(
                    f"residual branch shape {res_shape[1:]} does not match the "
                    f"convolution branch shape {(frames, freq, channels)}"
                )
            self.reduce_conv = torch.nn.ModuleDict(
                {"conv": res, "norm": _build_norm(norm, res_shape)}
            )
            self.drop = torch.nn.Dropout(dropout)
        self.output_shape = (batch, frames, freq, channels)
        self.filter_properties = [
            FilterProperties(
                window_size=layer.k_t, stride=layer.s_t, dilation=layer.d_t
            )
            for layer in self.conv_layers()
        ]

    def step_modules(self) -> list[torch.nn.Module]:
        """Every conv, norm, activation and dropout of the block."""
        modules = list(self.convs.values())
        if self.reduce_conv is not None:
            modules += list(self.reduce_conv.values())
        return modules

    def conv_layers(self) -> list[_ConvLayer]:
        """The convolution layers of the main branch, in order."""
        return [self.convs[names[0]] for names in self.layer_names]

    def all_conv_layers(self) -> list[_ConvLayer]:
        """All convolutions, the residual one last."""
        layers = self.conv_layers()
        if self.reduce_conv is not None:
            layers.append(self.reduce_conv["conv"])
        return layers

    def frame_lengths(self, n: int) -> list[int]:
        """Input frame count of each main-branch layer, plus the output count."""
        lengths = [n]
        for layer in self.conv_layers():
            lengths.append(layer.out_frames(lengths[-1]))
        return lengths

    def plan(self, a: int, b: int, lengths: list[int]) -> tuple[int, int, tuple]:
        """Block-input frames ``[lo, hi)`` needed for block-output frames
        ``[a, b)``, and what :meth:`run` needs to know about them."""
        pads = []
        lo, hi = a, b
        for layer, n_in in zip(
            reversed(self.conv_layers()), reversed(lengths[:-1]), strict=True
        ):
            lo, hi, p_l, p_r = layer.need(lo, hi, n_in)
            pads.append((p_l, p_r))
        pads.reverse()
        if self.reduce_conv is None:
            return lo, hi, (pads, (0, hi - lo), None)
        stride = self.reduce_conv["conv"].s_t
        r_lo, r_hi = a * stride, (b - 1) * stride + 1
        u_lo, u_hi = min(lo, r_lo), max(hi, r_hi)
        return (
            u_lo,
            u_hi,
            (pads, (lo - u_lo, hi - u_lo), (r_lo - u_lo, r_hi - u_lo)),
        )

    def run(
        self,
        x: torch.Tensor,
        plan: tuple,
        weights: list[torch.Tensor],
        inplace: bool,
    ) -> torch.Tensor:
        """Runs the block on the chunk ``x`` prepared according to ``plan``."""
        pads, (c_lo, c_hi), res_range = plan
        h = x if (c_lo, c_hi) == (0, x.shape[1]) else x[:, c_lo:c_hi]
        for (conv, norm, act, drop), (p_l, p_r), w in zip(
            self.layer_names, pads, weights, strict=False
        ):
            h = self.convs[conv].convolve(h, p_l, p_r, w)
            if norm is not None:
                h = self.convs[norm](h)
            h = _activate(self.convs[act], h, inplace)
            if self.training:
                h = self.convs[drop](h)
        if res_range is not None:
            r = self.reduce_conv["conv"].convolve(
                x[:, res_range[0] : res_range[1]], 0, 0, weights[-1]
            )
            r = self.reduce_conv["norm"](r)
            h = h.add_(r) if inplace and h.dtype == r.dtype else h + r
            if self.training:
                h = self.drop(h)
        return h

    def get_filter_properties(self) -> FilterProperties:
        """Receptive field of the block along time."""
        return stack_filter_properties(self.filter_properties)


def _activate(act: torch.nn.Module, h: torch.Tensor, inplace: bool) -> torch.Tensor:
    """Applies ``act``, in place for the common cases when autograd is off."""
    if inplace:
        if type(act) is torch.nn.LeakyReLU:
            return F.leaky_relu_(h, act.negative_slope)
        if type(act) is torch.nn.ReLU:
            return h.relu_()
    return act(h)


class ConvFrontEnd(torch.nn.Module):
    """Layout-efficient equivalent of SpeechBrain's ``ConvolutionFrontEnd``.

    Same constructor arguments, same state-dict keys and shapes, same outputs
    (up to float rounding): a stack of ``num_blocks`` blocks of
    ``num_layers_per_block`` x (conv2d -> norm -> activation -> dropout), the
    last conv of each block strided, optionally with a residual 1x1 conv.
    Activations are kept physically ``(batch, time, freq, channels)`` and
    convolved through a channels-last view, so no layout copies are needed.

    Arguments
    ---------
    input_shape : Iterable
        Expected input shape: ``(batch, time, n_mels)`` or
        ``(batch, time, freq, channels)``.  Batch and time may be None; the
        frequency (and channel) sizes are required.
    num_blocks : int
        Number of blocks.
    num_layers_per_block : int
        Convolutions per block.
    out_channels : list of int
        Output channels of each block.
    kernel_sizes : list of int
        Kernel size of each block (odd unless padding="valid").
    strides : list of int
        Stride of each block, applied at its last convolution.
    dilations : list of int
        Dilation of each block.
    residuals : list of bool
        Whether each block has a residual connection.
    conv_module : type
        Must be ``speechbrain.nnet.CNN.Conv2d`` (the only supported one).
    activation : Callable
        Activation class, instantiated without arguments.
    norm : type or None
        Normalisation class taking ``input_shape`` (default: SpeechBrain's
        ``LayerNorm``, normalising over ``(freq, channels)``).
    dropout : float
        Dropout probability.
    conv_bias : bool
        Whether the convolutions have a bias.
    padding : str
        "same", "valid" or "causal" (SpeechBrain semantics).
    conv_init : str, optional
        "kaiming", "zero" or None (PyTorch default initialisation).
    chunk_elements : int, optional
        Keyword-only, not part of SpeechBrain's signature.  On CPU, in eval mode
        and with autograd off, the time axis is processed in chunks holding
        about this many intermediate elements (default 2**20, ~4 MB in
        float32).  0 disables chunking.

    Example
    -------
    >>> import torch
    >>> fe = ConvFrontEnd(
    ...     input_shape=(8, 10, 80),
    ...     num_blocks=2,
    ...     num_layers_per_block=1,
    ...     out_channels=(64, 32),
    ...     kernel_sizes=(3, 3),
    ...     strides=(2, 2),
    ...     residuals=(False, False),
    ... )
    >>> feats = torch.rand(4, 101, 80)  # (batch, time, n_mels)
    >>> fe(feats).shape  # (batch, time', freq', channels)
    torch.Size([4, 26, 20, 32])
    >>> fe.output_frames(101)
    26

    Loading SpeechBrain's weights:

    >>> from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
    >>> sb = ConvolutionFrontEnd(
    ...     input_shape=(8, 10, 80),
    ...     num_blocks=2,
    ...     num_layers_per_block=1,
    ...     out_channels=(64, 32),
    ...     kernel_sizes=(3, 3),
    ...     strides=(2, 2),
    ...     residuals=(False, False),
    ... )
    >>> _ = fe.load_state_dict(sb.state_dict())
    >>> _ = fe.eval(), sb.eval()
    >>> bool((fe(feats) - sb(feats)).abs().max() < 1e-4)
    True
    """

    def __init__(
        self,
        input_shape: Iterable,
        num_blocks: int = 3,
        num_layers_per_block: int = 5,
        out_channels: Sequence[int] = (128, 256, 512),
        kernel_sizes: Sequence[int] = (3, 3, 3),
        strides: Sequence[int] = (1, 2, 2),
        dilations: Sequence[int] = (1, 1, 1),
        residuals: Sequence[bool] = (True, True, True),
        conv_module: type = SBConv2d,
        activation: Callable[[], torch.nn.Module] = torch.nn.LeakyReLU,
        norm: Callable | None = SBLayerNorm,
        dropout: float = 0.1,
        conv_bias: bool = True,
        padding: str = "same",
        conv_init: str | None = None,
        *,
        chunk_elements: int = 2**20,
    ):
        super().__init__()
        shape = list(input_shape)
        if len(shape) not in (3, 4):
            raise ValueError(
                "input_shape must be (batch, time, freq) or "
                f"(batch, time, freq, channels), got {tuple(input_shape)}"
            )
        if any(d is None for d in shape[2:]):
            raise ValueError(f"input_shape needs the freq/channel sizes: {shape}")
        # SpeechBrain infers shapes from a dummy input of this size.
        shape[0] = 1 if shape[0] is None else shape[0]
        shape[1] = 256 if shape[1] is None else shape[1]
        if conv_module is not SBConv2d:
            raise ValueError(
                "ConvFrontEnd only supports conv_module=speechbrain.nnet.CNN.Conv2d"
                f", got {conv_module!r}"
            )
        if padding not in _PADDINGS:
            raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
        if num_blocks < 1 or num_layers_per_block < 1:
            raise ValueError("num_blocks and num_layers_per_block must be >= 1")
        for name, seq in (
            ("out_channels", out_channels),
            ("kernel_sizes", kernel_sizes),
            ("strides", strides),
            ("dilations", dilations),
            ("residuals", residuals),
        ):
            if len(seq) < num_blocks:
                raise ValueError(
                    f"{name} has {len(seq)} entries but num_blocks={num_blocks}"
                )
            if name in ("kernel_sizes", "strides", "dilations") and not all(
                isinstance(v, int) and v >= 1 for v in seq[:num_blocks]
            ):
                # SpeechBrain's front-end only works with ints here as well.
                raise ValueError(f"{name} must be positive ints, got {seq!r}")

        self.input_rank = len(shape)
        self.in_freq = int(shape[2])
        self.in_channels = int(shape[3]) if len(shape) == 4 else 1
        self.chunk_elements = int(chunk_elements)
        block_shape = tuple(shape)
        for i in range(num_blocks):
            block = _ConvBlock(
                block_shape,
                num_layers=num_layers_per_block,
                out_channels=out_channels[i],
                kernel_size=kernel_sizes[i],
                stride=strides[i],
                dilation=dilations[i],
                residual=bool(residuals[i]),
                activation=activation,
                norm=norm,
                dropout=dropout,
                conv_bias=conv_bias,
                padding=padding,
                conv_init=conv_init,
            )
            self.add_module(f"convblock_{i}", block)
            block_shape = block.output_shape
        self.out_freq, self.out_channels = block_shape[2], block_shape[3]
        # Chunking over time is exact only if every module is frame-local.
        frame_local = (
            _ConvLayer,
            torch.nn.Dropout,
            *_ELEMENTWISE_ACTIVATIONS,
            *_FRAME_LOCAL_NORMS,
        )
        self._chunkable = all(
            isinstance(m, frame_local)
            for block in self.blocks
            for m in block.step_modules()
        )
        # Intermediate elements per output frame and batch item: each layer's
        # output (and its padded copy) for all the frames one output frame uses.
        per_frame, ratio = 0, 1
        for block in reversed(self.blocks):
            for layer, (freq, chans) in zip(
                reversed(block.conv_layers()), reversed(block.layer_sizes), strict=True
            ):
                per_frame += 2 * ratio * freq * chans
                ratio *= layer.s_t
        self._elements_per_frame = max(per_frame, 1)

    @property
    def blocks(self) -> list[_ConvBlock]:
        """The blocks, ``convblock_0`` first."""
        return list(self.children())

    @property
    def output_size(self) -> int:
        """Features per output frame once freq and channels are flattened."""
        return self.out_freq * self.out_channels

    def output_frames(self, n_frames: int) -> int:
        """Number of output frames for ``n_frames`` input frames."""
        for block in self.blocks:
            n_frames = block.frame_lengths(n_frames)[-1]
        return n_frames

    def get_filter_properties(self) -> FilterProperties:
        """Receptive field along time, as SpeechBrain's front-end reports it."""
        return stack_filter_properties(b.get_filter_properties() for b in self.blocks)

    def _chunk_frames(self, x: torch.Tensor, n_out: int) -> int:
        """Output frames per chunk (``n_out`` means a single pass)."""
        use_chunks = (
            self.chunk_elements > 0
            and self._chunkable
            and x.device.type == "cpu"
            and not self.training
            and not torch.is_grad_enabled()
        )
        if not use_chunks:
            return n_out
        per_chunk = self.chunk_elements // (x.shape[0] * self._elements_per_frame)
        return max(per_chunk, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the front-end.

        Arguments
        ---------
        x : torch.Tensor
            ``(batch, time, n_mels)`` features, or ``(batch, time, freq,
            channels)`` when the front-end was built with a 4-D input_shape.

        Returns
        -------
        torch.Tensor
            ``(batch, time', freq', channels')``, contiguous.
        """
        if x.dim() != self.input_rank:
            expected = (
                "(batch, time, n_mels)"
                if self.input_rank == 3
                else "(batch, time, freq, channels)"
            )
            raise ValueError(
                f"ConvFrontEnd expects a {self.input_rank}-D input {expected}, "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[2] != self.in_freq or (
            self.input_rank == 4 and x.shape[3] != self.in_channels
        ):
            raise ValueError(
                f"ConvFrontEnd built for {self.in_freq} frequency bins"
                + (f" and {self.in_channels} channels" if self.input_rank == 4 else "")
                + f", got shape {tuple(x.shape)}"
            )
        lengths = []
        n = x.shape[1]
        for block in self.blocks:
            lengths.append(block.frame_lengths(n))
            n = lengths[-1][-1]
        n_out = n
        if n_out < 1:
            raise ValueError(f"input of {x.shape[1]} frames is too short")
        inplace = not torch.is_grad_enabled()
        weights = [
            [layer.time_freq_weight() for layer in block.all_conv_layers()]
            for block in self.blocks
        ]
        step = self._chunk_frames(x, n_out)
        if step >= n_out:
            return self._run_chunk(x, 0, n_out, lengths, weights, inplace)
        out = None
        for a in range(0, n_out, step):
            b = min(a + step, n_out)
            y = self._run_chunk(x, a, b, lengths, weights, inplace)
            if out is None:
                out = y.new_empty((y.shape[0], n_out, *y.shape[2:]))
            out[:, a:b] = y
        return out

    def _run_chunk(
        self,
        x: torch.Tensor,
        a: int,
        b: int,
        lengths: list[list[int]],
        weights: list[list[torch.Tensor]],
        inplace: bool,
    ) -> torch.Tensor:
        """Computes output frames ``[a, b)`` from the full input ``x``."""
        plans = []
        for block, block_lengths in zip(
            reversed(self.blocks), reversed(lengths), strict=True
        ):
            a, b, plan = block.plan(a, b, block_lengths)
            plans.append(plan)
        plans.reverse()
        h = x if (a, b) == (0, x.shape[1]) else x[:, a:b]
        for block, plan, w in zip(self.blocks, plans, weights, strict=True):
            h = block.run(h, plan, w, inplace)
        return h

"""The HyperConformer encoder: Conformer blocks with HyperMixing for attention.

Each block is pre-norm and macaron-style::

    x = x + ½ FFN(x)
    x = x + HyperMixing(LN(x))
    x = x + Conv(x)
    x = LN(x + ½ FFN(x))

Padding is exact: a padded frame never changes a valid frame's output, so an
utterance encodes the same alone or in any batch. The encoder computes one
sinusoidal position table per call and hands it to every block's mixing.

SpeechBrain's Conformer layer defines a dropout after the attention (here
mixing) branch but never applies it; ``mixing_dropout=False`` (the default)
does the same, ``True`` applies ``dropout`` there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from speechbrain.nnet.activations import Swish
from torch import nn

from hyperconformer.mixing import HyperMixing
from hyperconformer.positional import sinusoidal_encoding

__all__ = [
    "ConvolutionModule",
    "FeedForwardModule",
    "HyperConformerEncoder",
    "HyperConformerLayer",
]


def _zero_padded(x: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded frames of (batch, time, d) ``x``; mask is (batch, time)."""
    if pad_mask is None:
        return x
    return x.masked_fill(pad_mask.unsqueeze(-1), 0.0)


class FeedForwardModule(nn.Module):
    """Pre-norm position-wise feed-forward: LN, Linear, act, Linear.

    Input and output: (batch, time, d_model).

    Example
    -------
    >>> FeedForwardModule(16, 64)(torch.randn(2, 5, 16)).shape
    torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        d_model: int,
        d_ffn: int,
        dropout: float = 0.0,
        activation: type[nn.Module] = Swish,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.activation = activation()
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.activation(self.linear1(self.norm(x))))
        return self.dropout(self.linear2(x))


class ConvolutionModule(nn.Module):
    """Conformer convolution module.

    LN, pointwise conv + GLU, depthwise conv, LN, activation, pointwise conv.
    The pointwise convolutions are linear layers on (batch, time, d_model),
    which avoids two layout changes. Padded frames are zeroed right before the
    depthwise convolution: that is the only place where neighbouring frames
    meet, and zeroing any earlier would be undone by the norm and bias.

    Example
    -------
    >>> conv = ConvolutionModule(16, kernel_size=31)
    >>> conv(torch.randn(2, 40, 16)).shape
    torch.Size([2, 40, 16])
    """

    def __init__(
        self,
        d_model: int,
        kernel_size: int = 31,
        dropout: float = 0.0,
        activation: type[nn.Module] = Swish,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model, bias=bias)
        self.depthwise = nn.Conv1d(
            d_model,
            d_model,
            kernel_size,
            padding=kernel_size // 2,
            groups=d_model,
            bias=bias,
        )
        self.depthwise_norm = nn.LayerNorm(d_model)
        self.activation = activation()
        self.pointwise_out = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def _depthwise_time_major(self, y: torch.Tensor) -> torch.Tensor:
        """Depthwise conv of (batch, time, d_model), output in the same layout.

        Seen as a channels-last (batch, d_model, 1, time) image, the input needs
        no transpose copy, and the channels-last depthwise kernel is several
        times faster on CPU than ``Conv1d`` on the transposed tensor.
        """
        conv = self.depthwise
        weight = conv.weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        out = F.conv2d(
            y.transpose(1, 2).unsqueeze(2),
            weight,
            conv.bias,
            padding=(0, conv.padding[0]),
            groups=conv.groups,
        )
        return out.squeeze(2).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, pad_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, time, d_model) -> (batch, time, d_model); mask (batch, time)."""
        y = F.glu(self.pointwise_in(self.norm(x)), dim=-1)
        y = _zero_padded(y, pad_mask)
        y = self._depthwise_time_major(y)
        y = self.pointwise_out(self.activation(self.depthwise_norm(y)))
        return _zero_padded(self.dropout(y), pad_mask)


class HyperConformerLayer(nn.Module):
    """One HyperConformer block (see the module docstring).

    Arguments
    ---------
    d_model : int
        Model width.
    d_ffn : int
        Hidden size of the feed-forward modules.
    nhead : int
        Number of HyperMixing heads.
    hypernet_size : int, optional
        Hidden size of the generated token-mixing MLP; defaults to ``d_ffn``.
    kernel_size : int
        Depthwise convolution kernel.
    dropout : float
        Dropout after each module.
    activation : type
        Activation of the feed-forward and convolution modules.
    bias : bool
        Bias in the convolution module.
    tied : bool
        Tie HyperMixing's W1 and W2.
    mixing_init : str
        HyperMixing's init, "xavier" (SpeechBrain's) or "head_uniform".
    mixing_dropout : bool
        Apply ``dropout`` to the mixing branch (SpeechBrain does not).

    Example
    -------
    >>> layer = HyperConformerLayer(d_model=16, d_ffn=64, nhead=4)
    >>> layer(torch.randn(2, 30, 16)).shape
    torch.Size([2, 30, 16])
    """

    def __init__(
        self,
        d_model: int,
        d_ffn: int,
        nhead: int,
        hypernet_size: int | None = None,
        kernel_size: int = 31,
        dropout: float = 0.0,
        activation: type[nn.Module] = Swish,
        bias: bool = True,
        tied: bool = False,
        mixing_init: str = "xavier",
        mixing_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.ffn1 = FeedForwardModule(d_model, d_ffn, dropout, activation)
        self.mixing_norm = nn.LayerNorm(d_model)
        self.mixing = HyperMixing(
            d_model, hypernet_size or d_ffn, nhead, tied=tied, init=mixing_init
        )
        self.mixing_dropout = nn.Dropout(dropout) if mixing_dropout else nn.Identity()
        self.conv = ConvolutionModule(d_model, kernel_size, dropout, activation, bias)
        self.ffn2 = FeedForwardModule(d_model, d_ffn, dropout, activation)
        self.final_norm = nn.LayerNorm(d_model)

    def forward(
        self,
        x: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(batch, time, d_model) -> (batch, time, d_model); mask (batch, time).

        ``positions`` is the (time, d_model) table for the mixing (computed
        by the mixing if not given).
        """
        x = x + 0.5 * self.ffn1(x)
        mixed = self.mixing(self.mixing_norm(x), pad_mask, positions)
        x = x + self.mixing_dropout(mixed)
        x = x + self.conv(x, pad_mask)
        return self.final_norm(x + 0.5 * self.ffn2(x))


class HyperConformerEncoder(nn.Module):
    """A stack of HyperConformer blocks followed by a layer norm.

    Arguments
    ---------
    num_layers : int
        Number of blocks.
    d_model, d_ffn, nhead, hypernet_size, kernel_size, dropout, activation,
    bias, tied, mixing_init, mixing_dropout
        As in :class:`HyperConformerLayer`.

    Example
    -------
    >>> enc = HyperConformerEncoder(num_layers=2, d_model=16, d_ffn=64, nhead=4)
    >>> x = torch.randn(3, 40, 16)
    >>> pad = torch.arange(40)[None, :] >= torch.tensor([[40], [25], [10]])
    >>> enc(x, src_key_padding_mask=pad).shape
    torch.Size([3, 40, 16])
    """

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        d_ffn: int,
        nhead: int,
        hypernet_size: int | None = None,
        kernel_size: int = 31,
        dropout: float = 0.0,
        activation: type[nn.Module] = Swish,
        bias: bool = True,
        tied: bool = False,
        mixing_init: str = "xavier",
        mixing_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(
            HyperConformerLayer(
                d_model,
                d_ffn,
                nhead,
                hypernet_size,
                kernel_size,
                dropout,
                activation,
                bias,
                tied,
                mixing_init,
                mixing_dropout,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model, eps=1e-6)

    def forward(
        self, src: torch.Tensor, src_key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode (batch, time, d_model) into (batch, time, d_model).

        ``src_key_padding_mask`` is (batch, time) bool, True at padded frames.
        """
        if src.dim() != 3 or src.size(-1) != self.d_model:
            raise ValueError(
                "HyperConformerEncoder expects input of shape "
                f"(batch, time, {self.d_model}), got {tuple(src.shape)}"
            )
        x = src
        # One float32 table for all blocks, computed per call: no buffer that
        # grows in forward (DDP broadcasts buffers and expects fixed sizes).
        positions = sinusoidal_encoding(src.size(1), self.d_model, src.device)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask, positions)
        return self.norm(x)

"""The HyperConformer encoder: Conformer blocks with HyperMixing for attention.

Each block is pre-norm and macaron-style::

    x = x + ½ FFN(x)
    x = x + HyperMixing(LN(x))
    x = x + Conv(x)
    x = LN(x + ½ FFN(x))

Padding is exact: a padded frame never changes a valid frame's output, so an
utterance encodes the same alone or in any batch. The encoder computes one
sinusoidal position table per call and hands it to every block's mixing.

Chunked (streaming) encoding: with ``chunk_size`` (encoder frames) every
frame sees its own chunk and all earlier ones. HyperMixing sums over the
chunks so far (:mod:`hyperconformer.mixing`); the depthwise convolution sees
the frames of earlier chunks it reaches and zeros past the end of its own
chunk (SpeechBrain's dynamic chunk convolution); positions count from each
chunk's start (:func:`hyperconformer.positional.chunk_positions`). ``stream``
encodes one chunk at a time from a :class:`LayerState` per block, whose size
does not grow with the stream, and gives the chunked pass's outputs.

SpeechBrain's Conformer layer defines a dropout after the attention (here
mixing) branch but never applies it; ``mixing_dropout=False`` (the default)
does the same, ``True`` applies ``dropout`` there.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from speechbrain.nnet.activations import Swish
from torch import nn

from hyperconformer.convolution import ConvolutionModule
from hyperconformer.mixing import HyperMixing, MixingState
from hyperconformer.positional import chunk_positions

__all__ = [
    "ConvolutionModule",
    "FeedForwardModule",
    "HyperConformerEncoder",
    "HyperConformerLayer",
    "LayerState",
]


class LayerState(NamedTuple):
    """What one block carries from a chunk of a stream to the next.

    mixing : the HyperMixing sums (:class:`hyperconformer.MixingState`).
    conv : (batch, kernel_size // 2, d_model), the last frames that entered
        the depthwise convolution (its left context for the next chunk).
    """

    mixing: MixingState
    conv: torch.Tensor


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
    mixing_summary : str
        HyperMixing's ``summary``: "sum" (SpeechBrain's) or "mean".
    mixing_summary_frames : float
        HyperMixing's ``summary_frames``: the mean's scale, in frames.

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
        mixing_summary: str = "sum",
        mixing_summary_frames: float = 1.0,
    ) -> None:
        super().__init__()
        self.ffn1 = FeedForwardModule(d_model, d_ffn, dropout, activation)
        self.mixing_norm = nn.LayerNorm(d_model)
        self.mixing = HyperMixing(
            d_model,
            hypernet_size or d_ffn,
            nhead,
            tied=tied,
            init=mixing_init,
            summary=mixing_summary,
            summary_frames=mixing_summary_frames,
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
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """(batch, time, d_model) -> (batch, time, d_model); mask (batch, time).

        ``positions`` is the (time, d_model) table for the mixing (computed
        by the mixing if not given); ``chunk_size`` chunks the encoding
        (module docstring).
        """
        x = x + 0.5 * self.ffn1(x)
        mixed = self.mixing(self.mixing_norm(x), pad_mask, positions, chunk_size)
        x = x + self.mixing_dropout(mixed)
        x = x + self.conv(x, pad_mask, chunk_size)
        return self.final_norm(x + 0.5 * self.ffn2(x))

    def stream(
        self,
        chunk: torch.Tensor,
        state: LayerState | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, LayerState]:
        """One chunk (batch, frames, d_model) of a stream -> its output and
        the state for the next chunk."""
        x = chunk + 0.5 * self.ffn1(chunk)
        mixed, mixing_state = self.mixing.stream(
            self.mixing_norm(x), state and state.mixing, positions
        )
        x = x + self.mixing_dropout(mixed)
        conv, conv_state = self.conv.stream(x, state and state.conv)
        x = x + conv
        return self.final_norm(x + 0.5 * self.ffn2(x)), LayerState(
            mixing_state, conv_state
        )


class HyperConformerEncoder(nn.Module):
    """A stack of HyperConformer blocks followed by a layer norm.

    Arguments
    ---------
    num_layers : int
        Number of blocks.
    d_model, d_ffn, nhead, hypernet_size, kernel_size, dropout, activation,
    bias, tied, mixing_init, mixing_dropout, mixing_summary,
    mixing_summary_frames
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
        mixing_summary: str = "sum",
        mixing_summary_frames: float = 1.0,
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
                mixing_summary,
                mixing_summary_frames,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model, eps=1e-6)

    def _check_src(self, src: torch.Tensor) -> None:
        if src.dim() != 3 or src.size(-1) != self.d_model:
            raise ValueError(
                "HyperConformerEncoder expects input of shape "
                f"(batch, time, {self.d_model}), got {tuple(src.shape)}"
            )

    def forward(
        self,
        src: torch.Tensor,
        src_key_padding_mask: torch.Tensor | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Encode (batch, time, d_model) into (batch, time, d_model).

        ``src_key_padding_mask`` is (batch, time) bool, True at padded frames.
        ``chunk_size`` (frames): chunked encoding, as :meth:`stream` computes
        it chunk by chunk (module docstring); None: offline.
        """
        self._check_src(src)
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size}")
        x = src
        # One float32 table for all blocks, computed per call: no buffer that
        # grows in forward (DDP broadcasts buffers and expects fixed sizes).
        t = src.size(1)
        positions = chunk_positions(t, chunk_size or t, self.d_model, src.device)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask, positions, chunk_size)
        return self.norm(x)

    def stream(
        self, chunk: torch.Tensor, states: list[LayerState] | None = None
    ) -> tuple[torch.Tensor, list[LayerState]]:
        """Encode the next chunk of a stream.

        Arguments
        ---------
        chunk : torch.Tensor
            (batch, frames, d_model): one chunk, ``chunk_size`` frames (fewer
            only at the end of the stream).
        states : list of LayerState, optional
            Returned with the previous chunk; None at the start.

        Returns
        -------
        out : torch.Tensor
            (batch, frames, d_model), the chunked pass's outputs for them.
        states : list of LayerState
            One per block, of a size that does not grow with the stream.

        Example
        -------
        >>> enc = HyperConformerEncoder(num_layers=2, d_model=16, d_ffn=64, nhead=4)
        >>> x = torch.randn(1, 20, 16)
        >>> first, states = enc.stream(x[:, :8])
        >>> second, states = enc.stream(x[:, 8:16], states)
        >>> last, _ = enc.stream(x[:, 16:], states)
        >>> chunked = enc(x, chunk_size=8)
        >>> bool((torch.cat((first, second, last), 1) - chunked).abs().max() < 1e-4)
        True
        """
        self._check_src(chunk)
        positions = chunk_positions(chunk.size(1), chunk.size(1), self.d_model)
        positions = positions.to(chunk.device)
        x, new_states = chunk, []
        for i, layer in enumerate(self.layers):
            x, state = layer.stream(x, states[i] if states else None, positions)
            new_states.append(state)
        return self.norm(x), new_states

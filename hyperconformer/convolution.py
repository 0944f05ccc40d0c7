"""The Conformer convolution module, offline, chunked or streamed.

LN, pointwise conv + GLU, depthwise conv, LN, activation, pointwise conv.
Offline the depthwise convolution sees ``kernel_size // 2`` frames on each
side. Chunked (``chunk_size``), a frame sees the frames of earlier chunks it
reaches and zeros past the end of its own chunk, as SpeechBrain's dynamic
chunk convolution does; a stream (:meth:`ConvolutionModule.stream`) carries
the last ``kernel_size // 2`` frames that entered the depthwise convolution
as the next chunk's left context, and gives the chunked outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from speechbrain.nnet.activations import Swish
from torch import nn

__all__ = ["ConvolutionModule"]


def _zero_padded(x: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded frames of (batch, time, d) ``x``; mask is (batch, time)."""
    if pad_mask is None:
        return x
    return x.masked_fill(pad_mask.unsqueeze(-1), 0.0)


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

    def _depthwise_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """Depthwise conv of (n, d_model, context + L) windows, zeros past
        their end: (n, d_model, L)."""
        reach = self.depthwise.padding[0]
        return F.conv1d(
            F.pad(windows, (0, reach)),
            self.depthwise.weight,
            self.depthwise.bias,
            groups=self.depthwise.groups,
        )

    def _depthwise_chunked(self, y: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """Depthwise conv of (batch, time, d_model) where each chunk sees the
        frames of earlier chunks it reaches and zeros past its own end."""
        b, t, d = y.shape
        reach = self.depthwise.padding[0]
        n = -(-t // chunk_size)
        y = F.pad(y, (0, 0, reach, n * chunk_size - t))
        windows = y.unfold(1, chunk_size + reach, chunk_size)  # (b, n, d, c+r)
        out = self._depthwise_windows(windows.reshape(b * n, d, -1))
        return out.view(b, n, d, chunk_size).transpose(2, 3).reshape(b, -1, d)[:, :t]

    def _before_depthwise(
        self, x: torch.Tensor, pad_mask: torch.Tensor | None
    ) -> torch.Tensor:
        return _zero_padded(F.glu(self.pointwise_in(self.norm(x)), dim=-1), pad_mask)

    def _after_depthwise(
        self, y: torch.Tensor, pad_mask: torch.Tensor | None
    ) -> torch.Tensor:
        y = self.pointwise_out(self.activation(self.depthwise_norm(y)))
        return _zero_padded(self.dropout(y), pad_mask)

    def forward(
        self,
        x: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """(batch, time, d_model) -> (batch, time, d_model); mask (batch, time).

        With ``chunk_size`` the depthwise convolution does not look past the
        end of each frame's chunk.
        """
        y = self._before_depthwise(x, pad_mask)
        if chunk_size is None:
            y = self._depthwise_time_major(y)
        else:
            y = self._depthwise_chunked(y, min(chunk_size, y.size(1)))
        return self._after_depthwise(y, pad_mask)

    def stream(
        self, chunk: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk (batch, frames, d_model) of a stream -> its output and
        the (batch, kernel_size // 2, d_model) context for the next chunk."""
        y = self._before_depthwise(chunk, None)
        reach = self.depthwise.padding[0]
        if context is None:  # the start of the stream: zeros, as offline
            context = y.new_zeros(y.size(0), reach, y.size(2))
        seen = torch.cat((context, y), 1)
        out = self._depthwise_windows(seen.transpose(1, 2)).transpose(1, 2)
        return self._after_depthwise(out, None), seen[:, seen.size(1) - reach :]

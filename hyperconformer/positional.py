"""Sinusoidal absolute position encodings, computed for any length.

SpeechBrain precomputes a fixed table (2500 or 3000 positions) and fails on
longer inputs; here the table grows on demand, so an hour of audio encodes as
easily as ten seconds.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SinusoidalPositions", "sinusoidal_encoding"]


def sinusoidal_encoding(
    length: int,
    d_model: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Return the (length, d_model) sinusoidal table of Vaswani et al.

    Even channels hold ``sin(pos / 10000^(2i/d))``, odd channels the cosine.

    Example
    -------
    >>> sinusoidal_encoding(5, 8).shape
    torch.Size([5, 8])
    """
    if d_model % 2 != 0:
        raise ValueError(f"sinusoidal encodings need an even d_model, got {d_model}")
    # Angles are computed in float32 whatever the output dtype: bf16 angles
    # would be useless beyond a few hundred positions.
    positions = torch.arange(length, device=device, dtype=torch.float32)
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
        * (-math.log(10000.0) / d_model)
    )
    angles = positions[:, None] * inv_freq[None, :]
    table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)
    return table.to(dtype)


class SinusoidalPositions(nn.Module):
    """Cached sinusoidal positions of unbounded length.

    The cache is a non-persistent buffer: it follows ``.to(device)`` but never
    enters the state dict, and it doubles whenever a longer input arrives.

    Arguments
    ---------
    d_model : int
        Feature size of the encodings.

    Example
    -------
    >>> pos = SinusoidalPositions(16)
    >>> pos(torch.zeros(2, 7000, 16)).shape
    torch.Size([7000, 16])
    """

    def __init__(self, d_model: int, initial_length: int = 1024) -> None:
        super().__init__()
        self.d_model = d_model
        self.register_buffer(
            "table", sinusoidal_encoding(initial_length, d_model), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the encodings for ``x`` of shape (batch, time, d_model).

        Output: (time, d_model), in the dtype and on the device of ``x``.
        """
        length = x.size(1)
        if length > self.table.size(0) or self.table.device != x.device:
            size = max(length, 2 * self.table.size(0))
            self.table = sinusoidal_encoding(size, self.d_model, device=x.device)
        return self.table[:length].to(x.dtype)

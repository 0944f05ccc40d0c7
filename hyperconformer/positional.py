"""Sinusoidal absolute position encodings, computed for any length.

SpeechBrain precomputes a fixed table (2500 or 3000 positions) and fails on
longer inputs; here the table is computed for each input's length, so an hour
of audio encodes as easily as ten seconds. There is no cached buffer: a buffer
that grows inside ``forward`` changes size mid-training, which DDP (buffers
broadcast from rank 0 every step) does not allow, and the table costs far less
than one encoder layer ((time, d_model) sines, computed once per encoder call).

Streams: in chunked encoding each frame's position counts from the start of
its chunk (:func:`chunk_positions`), not from the start of the stream.
Absolute positions grow without bound: after an hour (90,000 encoder frames)
they would be far past any training utterance (LibriSpeech: under 35 s,
about 900 frames), the slowest sinusoid (period 2π·10000 ≈ 63,000 frames)
wraps around, and the hypernetwork would see inputs it never saw in training.
Chunk positions stay below ``chunk_size``, are the same in training (chunked
pass) and in a stream, and are the same at the first minute and the sixtieth.
Offline, positions are absolute as before; one chunk covering the whole input
gives the offline table.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SinusoidalPositions", "chunk_positions", "sinusoidal_encoding"]


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


def chunk_positions(
    length: int,
    chunk_size: int,
    d_model: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(length, d_model) table of each frame's position within its chunk.

    Frames are cut into chunks of ``chunk_size``; frame ``i`` gets the
    encoding of position ``i % chunk_size``. With ``chunk_size >= length``
    this is the absolute table.

    Example
    -------
    >>> table = chunk_positions(10, 4, 8)
    >>> bool((table[5] == sinusoidal_encoding(4, 8)[1]).all())
    True
    """
    table = sinusoidal_encoding(min(chunk_size, length), d_model, device)
    if chunk_size >= length:
        return table
    index = torch.arange(length, device=device) % chunk_size
    return table[index]


class SinusoidalPositions(nn.Module):
    """Sinusoidal positions of unbounded length, with no state.

    Holds no buffer: every call computes the table for its input's length, so
    the module is the same on every rank and in every state dict.

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

    def __init__(self, d_model: int) -> None:
        super().__init__()
        if d_model % 2 != 0:
            raise ValueError(
                f"sinusoidal encodings need an even d_model, got {d_model}"
            )
        self.d_model = d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the encodings for ``x`` of shape (batch, time, d_model).

        Output: (time, d_model), in the dtype and on the device of ``x``.
        """
        return sinusoidal_encoding(x.size(1), self.d_model, x.device, x.dtype)

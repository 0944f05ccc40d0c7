"""Filterbank features that can be computed over a stream.

SpeechBrain's ``Fbank`` floors its log-mel values at the utterance's maximum
minus ``top_db`` (80 dB): the maximum of the whole utterance, which a stream
only knows at its end. On the synthetic LibriSpeech-shaped corpus that floor
is active on 1-10 % of the (frame, mel) values (pauses hold digital
silence), so a stream cannot reproduce those features. :class:`CausalFbank`
floors frame ``t`` at the maximum over frames ``0..t`` minus ``top_db``
instead, computed the same way over a whole utterance (training) and over a
stream (carried as one number per stream), so one model serves both. Its
frames depend only on the audio up to the end of their window; in a padded
batch the padding changes no valid frame.
"""

from __future__ import annotations

import math

import torch
from speechbrain.lobes.features import Fbank

__all__ = ["CausalFbank"]


class CausalFbank(Fbank):
    """SpeechBrain's ``Fbank`` with a running-maximum dB floor.

    Same arguments as ``speechbrain.lobes.features.Fbank`` (deltas and
    context windows are not supported) and the same values wherever the floor
    does not apply (module docstring).

    Example
    -------
    >>> fbank = CausalFbank(n_mels=40)
    >>> wav = torch.randn(2, 16000)
    >>> feats = fbank(wav)  # (batch, frames, n_mels)
    >>> feats.shape
    torch.Size([2, 101, 40])
    >>> first, peak = fbank.floor(fbank.log_mel(wav[:, :8000])[:, :45])
    >>> bool((first - feats[:, :45]).abs().max() < 1e-4)
    True
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if self.deltas or self.context:
            raise ValueError("CausalFbank does not support deltas or context")
        self.top_db = float(self.compute_fbanks.top_db)
        # SpeechBrain's per-utterance floor off: forward applies the causal one.
        self.compute_fbanks.top_db = math.inf

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, frames, n_mels) log-mel, unfloored."""
        return super().forward(wav)

    def floor(
        self, feats: torch.Tensor, peak: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Floor (batch, frames, n_mels) log-mels at the running maximum
        minus ``top_db``; ``peak`` (batch,) is the maximum of the frames
        before these (None at the start). Returns the floored features and
        the new peak."""
        running = feats.amax(-1)
        if peak is not None:
            running = torch.maximum(running, peak[:, None])
        running = running.cummax(1).values
        floored = torch.maximum(feats, (running - self.top_db).unsqueeze(-1))
        return floored, running[:, -1]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, frames, n_mels)."""
        return self.floor(self.log_mel(wav))[0]

"""Features and their normalisation, computed the same over a stream.

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

Per-sentence normalisation (SpeechBrain's ``InputNormalization`` with
``norm_type="sentence"``) needs the statistics of the whole utterance, so
streaming models normalise with global statistics, which adapt to nothing.
:class:`CausalNormalization` applies the global statistics and then
normalises frame ``t`` by the mean and variance of frames ``0..t`` of its
utterance, started from a prior of ``prior_frames`` frames of the global
statistics: a speaker- and channel-adaptive normalisation that a stream
computes from three running sums, the same as a whole utterance.
"""

from __future__ import annotations

import math

import torch
from speechbrain.lobes.features import Fbank
from speechbrain.processing.features import InputNormalization

__all__ = ["CausalFbank", "CausalNormalization", "NormalizationState"]

# Running sums of a stream: (frames so far (batch,), sum and sum of squares of
# the globally normalised features (batch, n_feats)), in float64 so that an
# hour of frames adds up exactly enough.
NormalizationState = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


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


class CausalNormalization(InputNormalization):
    """Global normalisation, then per-utterance normalisation by the
    statistics of the frames so far (module docstring).

    After the global statistics (SpeechBrain's ``InputNormalization``,
    ``norm_type="global"``: same arguments, same checkpoint), frame ``t``
    becomes ``(x_t - m_t) / s_t`` with ``m_t`` and ``s_t**2`` the mean and
    variance of ``x_0..x_t`` and of ``prior_frames`` frames of mean 0 and
    variance 1 (the global statistics). The first frames are thus normalised
    almost globally, and after a few seconds by their utterance.

    Arguments
    ---------
    prior_frames : float
        Weight of the global statistics, in frames (100: one second of 10 ms
        frames).
    **kwargs
        ``InputNormalization``'s other arguments (``norm_type`` is global).

    Example
    -------
    >>> norm = CausalNormalization(prior_frames=100).eval()
    >>> norm.glob_mean, norm.glob_std = torch.zeros(40), torch.ones(40)
    >>> feats = torch.randn(2, 1000, 40) * 3 + 1  # (batch, frames, n_feats)
    >>> whole = norm(feats, torch.ones(2))
    >>> first, state = norm.causal(norm.global_norm(feats[:, :120]))
    >>> rest, state = norm.causal(norm.global_norm(feats[:, 120:]), state)
    >>> bool((torch.cat((first, rest), 1) - whole).abs().max() < 1e-5)
    True
    >>> later = whole[:, 500:]  # adapted to the utterance's statistics
    >>> abs(float(later.mean())) < 0.2, abs(float(later.std()) - 1) < 0.2
    (True, True)
    """

    def __init__(self, prior_frames: float = 100.0, **kwargs: object) -> None:
        if kwargs.pop("norm_type", "global") != "global":
            raise ValueError("CausalNormalization applies global statistics first")
        super().__init__(norm_type="global", **kwargs)
        self.prior_frames = float(prior_frames)

    def global_norm(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        epoch: int | None = None,
    ) -> torch.Tensor:
        """(batch, frames, n_feats) -> the same, by the global statistics
        (updated in training as ``InputNormalization`` updates them)."""
        return super().forward(x, lengths, epoch=epoch)

    def causal(
        self, x: torch.Tensor, state: NormalizationState | None = None
    ) -> tuple[torch.Tensor, NormalizationState | None]:
        """Normalise globally normalised (batch, frames, n_feats) features by
        the statistics of the frames so far; ``state`` holds those of the
        frames before ``x`` (None at the start of an utterance). Returns the
        features and the new state. Frame ``t`` depends only on frames
        ``0..t``, so padding at the end changes no valid frame."""
        if x.size(1) == 0:
            return x, state
        x64 = x.double()
        if state is None:  # the start of an utterance: no frames yet
            zeros = x64.new_zeros(x.size(0), x.size(2))
            state = (zeros[:, 0], zeros, zeros)
        steps = torch.arange(1, x.size(1) + 1, device=x.device, dtype=torch.float64)
        count = state[0][:, None] + steps
        total = state[1][:, None] + x64.cumsum(1)
        squares = state[2][:, None] + x64.square().cumsum(1)
        weight = (count + self.prior_frames).unsqueeze(-1)
        mean = total / weight
        var = (squares + self.prior_frames) / weight - mean.square()
        out = (x64 - mean) / var.clamp(min=self.epsilon).sqrt()
        return out.to(x.dtype), (count[:, -1], total[:, -1], squares[:, -1])

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        epoch: int | None = None,
    ) -> torch.Tensor:
        """(batch, frames, n_feats) -> the same: global, then causal."""
        return self.causal(self.global_norm(x, lengths, epoch))[0]

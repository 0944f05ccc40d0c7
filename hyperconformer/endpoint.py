"""Endpoints of a stream: where a segment of speech ends, decided causally.

A stream is cut into segments at pauses: each segment is decoded once it
ends (:mod:`hyperconformer.live`). The decision is taken frame by frame from
the audio that has arrived, so it cannot use what
:func:`hyperconformer.find_pauses` uses (percentiles of the whole
recording's frame energies). :class:`CausalSilence` applies the same test
to each 10 ms frame as it arrives, with running estimates instead of the
percentiles: a frame is silent when its energy is within ``margin_db``
(10 dB) of the noise floor or more than ``range_db`` (30 dB) below the
speech level, where the floor follows any drop at once and rises by at most
``floor_rise_db`` (1 dB) per second (the minimum of the past, forgetting
slowly: 20 s of speech without a pause lift it by 20 dB, still short of
speech 30 to 50 dB above it), and the speech level follows any rise at once
and falls by at most ``level_fall_db`` (2 dB) per second. On a minute of the
synthetic corpus's test audio it finds the same 14 pauses of 0.3 s or more as
:func:`~hyperconformer.find_pauses` over the whole recording, their edges
within 10 ms (checked by a test).

:class:`Endpointer` ends a segment after a run of ``pause_frames`` silent
encoder frames (0.5 s by default: the synthetic corpus's pauses between
sentences are 0.25 to 0.8 s plus eSpeak's own sentence-final silence, the
gaps between words and stop closures are under 0.2 s) if the segment holds
speech, and drops it without a result if it does not; a segment that reaches
``max_frames`` (20 s) ends there whatever it holds, so a stream without
pauses still ends segments. Why energy and not CTC blanks: CTC outputs are
peaky, blank on most frames within speech too, so a run of blanks says that
no token was emitted, not that nobody speaks, and a blank rule needs long
runs (WeNet's default asks for 1 s) to tell a pause from the gap between
two words; the energy test also works for a model still in training.
"""

from __future__ import annotations

import math
from collections import deque

import torch

from hyperconformer.pauses import (
    FRAME_SECONDS,
    MARGIN_DB,
    RANGE_DB,
    frame_hop,
    frame_power,
)

__all__ = ["CausalSilence", "Endpointer"]


class CausalSilence:
    """Which 10 ms frames of a stream are silent, decided as they arrive.

    Arguments
    ---------
    sample_rate : int
        Samples per second.
    margin_db, range_db : float
        The tests of :func:`hyperconformer.find_pauses` (module docstring).
    floor_rise_db, level_fall_db : float
        How fast, in dB per second, the running noise floor may rise and the
        running speech level may fall.

    Example
    -------
    >>> tone = torch.sin(torch.arange(4800) * 0.3)
    >>> silence = CausalSilence(16000)
    >>> silence.push(torch.cat([1e-4 * torch.randn(3200), tone]))
    >>> flags = silence.take(50)  # 20 frames of faint noise, 30 of tone
    >>> all(flags[:20]), any(flags[20:])
    (True, False)
    >>> silence.take(2)  # after the end of what has arrived: nothing there
    [True, True]
    """

    def __init__(
        self,
        sample_rate: int,
        margin_db: float = MARGIN_DB,
        range_db: float = RANGE_DB,
        floor_rise_db: float = 1.0,
        level_fall_db: float = 2.0,
    ) -> None:
        self.hop = frame_hop(sample_rate)
        self.margin_db, self.range_db = margin_db, range_db
        self.rise = floor_rise_db * FRAME_SECONDS
        self.fall = level_fall_db * FRAME_SECONDS
        self.floor = self.level = math.nan  # set by the first frame
        self.rest = torch.zeros(0)  # samples of the frame not yet complete
        self.flags: deque[bool] = deque()  # decided, not yet taken

    def push(self, samples: torch.Tensor) -> None:
        """Add (samples,) audio; decides the 10 ms frames it completes."""
        x = torch.cat((self.rest, samples.detach().float().cpu()))
        n = x.numel() // self.hop
        self.rest = x[n * self.hop :]
        energy = 10.0 * torch.log10(frame_power(x, self.hop) + 1e-10)  # dB
        for e in energy.tolist():
            if math.isnan(self.floor):
                self.floor = self.level = e
            self.floor = min(self.floor + self.rise, e)
            self.level = max(self.level - self.fall, e)
            threshold = max(self.floor + self.margin_db, self.level - self.range_db)
            self.flags.append(e < threshold)

    def take(self, count: int) -> list[bool]:
        """The next ``count`` frames' flags (True: silent); frames past the
        audio that has arrived (the stream's end) count as silent."""
        return [self.flags.popleft() if self.flags else True for _ in range(count)]

    def state_bytes(self) -> int:
        """Bytes held (samples and flags), about."""
        return self.rest.numel() * 4 + len(self.flags)


class Endpointer:
    """Ends segments of a stream at pauses, frame by frame (module docstring).

    Arguments
    ---------
    pause_frames : int
        Silent frames in a row that end a segment.
    max_frames : int
        A segment ends at this length whatever it holds.

    Example
    -------
    >>> ends = Endpointer(pause_frames=2, max_frames=4)
    >>> [ends.step(s) for s in (True, True, False, True, True, False)]
    [None, 'drop', None, None, 'final', None]
    """

    FINAL, DROP = "final", "drop"

    def __init__(self, pause_frames: int, max_frames: int) -> None:
        if pause_frames < 1 or max_frames < 1:
            raise ValueError(
                "a pause and a segment must be at least one frame long, got "
                f"pause_frames={pause_frames}, max_frames={max_frames}"
            )
        self.pause_frames, self.max_frames = pause_frames, max_frames
        self.frames = self.run = 0
        self.speech = False

    def step(self, silent: bool) -> str | None:
        """One more frame of the segment: :data:`FINAL` (the segment ends
        with this frame and holds speech), :data:`DROP` (it ends and holds
        none) or None."""
        self.frames += 1
        self.run = self.run + 1 if silent else 0
        self.speech |= not silent
        if self.run < self.pause_frames and self.frames < self.max_frames:
            return None
        end = self.FINAL if self.speech else self.DROP
        self.frames = self.run = 0
        self.speech = False
        return end

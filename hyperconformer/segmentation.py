"""Long recordings cut at pauses, each piece decoded like an utterance.

A model trained on utterances (LibriSpeech: 2-35 s, a few sentences each)
decodes best what looks like an utterance. Fixed windows
(:func:`hyperconformer.longform.decode_in_windows`) hold several utterances
and cut words at their edges, so their attention hypotheses end early or skip
words. Here the recording is cut in its pauses instead
(:func:`hyperconformer.pauses.find_pauses`, which sets its silence threshold
from the recording's own noise floor and speech level): from the start of
each piece, the next cut goes to the centre of the longest pause that leaves
a piece of ``min_seconds`` to ``max_seconds``. Pieces then need no overlap
and no stitching: no word straddles a cut that lies in silence. Where a
stretch of ``max_seconds`` holds no pause (continuous speech, or noise that
hides the pauses), the cut falls where the energy, averaged over 0.2 s, is
lowest in the second half of the stretch. Pieces that lie wholly in a pause
are not decoded.

Cost: one pass of the encoder over the recording (no overlap), plus an
energy computation (well under 1 ms per second of audio).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from speechbrain.utils.data_utils import batch_pad_right

from hyperconformer.longform import Word
from hyperconformer.pauses import FRAME_SECONDS, find_pauses, frame_hop, frame_power

__all__ = ["decode_segments", "pause_segments"]

# The fallback cut: the power of 10 ms frames (those of find_pauses),
# averaged over 0.2 s (a short pause, a gap between words) so that one quiet
# frame inside a word does not win.
SMOOTH_SECONDS = 0.2


def _quietest(wav: torch.Tensor, lo: int, hi: int, sample_rate: int) -> int:
    """Sample in [lo, hi) where the smoothed energy is lowest."""
    hop = frame_hop(sample_rate)
    energy = frame_power(wav[lo:hi], hop)
    width = max(round(SMOOTH_SECONDS / FRAME_SECONDS), 1)
    if energy.numel() > width:
        energy = torch.nn.functional.avg_pool1d(
            energy[None, None],
            width,
            stride=1,
            padding=width // 2,
            count_include_pad=False,
        )[0, 0, : energy.numel()]
    return lo + int(energy.argmin()) * hop + hop // 2


def pause_segments(
    wav: torch.Tensor,
    sample_rate: int,
    max_seconds: float = 20.0,
    min_seconds: float = 2.0,
) -> list[tuple[int, int]]:
    """Cut a recording at pauses into pieces of at most ``max_seconds``.

    From the start of each piece, the next cut is the centre of the longest
    pause whose centre leaves a piece of ``min_seconds`` to ``max_seconds``
    (the later one of equally long pauses); without a pause there, the
    quietest point of the second half of that stretch. Pieces that lie
    wholly in a pause are left out.

    Arguments
    ---------
    wav : torch.Tensor
        (samples,) signal.
    sample_rate : int
        Samples per second.
    max_seconds, min_seconds : float
        Longest piece, and shortest piece a cut may leave behind it.

    Returns
    -------
    list of (start, end)
        Sample ranges in time order.

    Example
    -------
    >>> speech = torch.sin(torch.arange(16000 * 6) * 0.3)
    >>> pause = torch.zeros(8000)
    >>> wav = torch.cat([speech, pause, speech, pause, speech])
    >>> [(s / 16000, e / 16000) for s, e in pause_segments(wav, 16000, 10.0)]
    [(0.0, 6.25), (6.25, 12.75), (12.75, 19.0)]
    """
    if not 0 < min_seconds < max_seconds:
        raise ValueError(
            f"need 0 < min_seconds < max_seconds, got {min_seconds} and {max_seconds}"
        )
    total = wav.numel()
    pauses = [
        (a * sample_rate, b * sample_rate) for a, b in find_pauses(wav, sample_rate)
    ]
    longest, shortest = max_seconds * sample_rate, min_seconds * sample_rate
    cuts, pos = [0], 0
    while total - pos > longest:
        lo, hi = pos + shortest, pos + longest
        fits = [(b - a, (a + b) / 2) for a, b in pauses if lo <= (a + b) / 2 <= hi]
        if fits:
            cut = round(max(fits)[1])
        else:
            cut = _quietest(wav, round(pos + longest / 2), round(hi), sample_rate)
        cuts.append(cut)
        pos = cut
    cuts.append(total)
    return [
        (start, end)
        for start, end in zip(cuts[:-1], cuts[1:], strict=True)
        if not any(a <= start and end <= b for a, b in pauses)
    ]


def decode_segments(
    wav: torch.Tensor,
    segments: list[tuple[int, int]],
    decode: Callable[[torch.Tensor, torch.Tensor], list[list[Word]]],
    batch_size: int,
    sample_rate: int,
) -> list[Word]:
    """Timed words of a recording decoded piece by piece.

    Arguments
    ---------
    wav : torch.Tensor
        (samples,) signal.
    segments : list of (start, end)
        Sample ranges in time order (see :func:`pause_segments`).
    decode : callable
        (batch, samples) padded pieces and their (batch,) relative lengths ->
        each piece's words, timed from the piece's start.
    batch_size : int
        Pieces decoded together (similar lengths batched together).
    sample_rate : int
        Samples per second.

    Returns
    -------
    list[Word]
        Words timed from the start of ``wav``, in time order.

    Example
    -------
    >>> def decode(batch, lens):
    ...     return [[Word("A", 0.5, 0.7)] for _ in batch]
    >>> words = decode_segments(torch.zeros(40), [(0, 10), (10, 40)], decode, 8, 10)
    >>> [(w.text, w.start) for w in words]
    [('A', 0.5), ('A', 1.5)]
    """
    order = sorted(range(len(segments)), key=lambda i: segments[i][1] - segments[i][0])
    words: list[list[Word]] = [[] for _ in segments]
    for first in range(0, len(order), batch_size):
        chunk = order[first : first + batch_size]
        batch, lens = batch_pad_right(
            [wav[s:e] for s, e in (segments[i] for i in chunk)]
        )
        for i, piece_words in zip(chunk, decode(batch, lens), strict=True):
            offset = segments[i][0] / sample_rate
            words[i] = [
                Word(w.text, w.start + offset, w.end + offset) for w in piece_words
            ]
    return [w for piece in words for w in piece]

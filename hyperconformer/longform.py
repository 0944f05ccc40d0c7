"""Long recordings: equally spaced overlapping windows, stitched by time.

HyperMixing is linear in time, so memory alone does not rule out encoding a
10-minute file in one pass (15 000 encoder frames). Two things make it a poor
default: HyperMixing's token summary is a sum over all frames without length
normalisation, so on 10 minutes it is far outside what a model trained on
utterances of at most 30 s has seen, and attention decoding over 10 minutes
of memory would run thousands of steps, each attending over all of it.
Recordings longer than ``chunk_seconds`` are therefore cut: by default in
their pauses (:mod:`hyperconformer.segmentation`), or, with
``long_form="windows"``, as here, into equally spaced windows of
``chunk_seconds`` overlapping by at least ``overlap_seconds`` (5 s),
decoded ``batch_size`` windows at a time with the chosen decoder, and
stitched by time. Each word gets its frame span: from the CTC spikes (greedy
CTC), from the prefix beam search, or, for attention hypotheses, from a CTC
forced alignment of the hypothesis to the window's CTC posteriors
(:func:`ctc_align`). Each pair of neighbouring windows is cut at the widest
pause between words within the middle half of their overlap, and each window
contributes the words whose centre lies between its cuts, so a word cut by a
window edge comes from the neighbouring window, which saw it whole
(:func:`stitch_windows`). Joint attention/CTC decoding of the windows runs in
batches with :class:`hyperconformer.JointBeamSearcher`, SpeechBrain's full
CTC scoring at a fraction of its cost (SpeechBrain's own costs frames x beams
x vocabulary per step, about 8 s per step of a 30 s window with 5000 tokens
on one CPU core). Word times are absolute: each window's words are shifted by
the window's start before stitching.

Cost: 1.2x the encoder work of one pass (30 / 25), one Viterbi alignment
per window (milliseconds), and memory set by ``batch_size`` windows whatever
the file length; measured in ``docs/benchmarks_longform.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "Word",
    "ctc_align",
    "ctc_spans",
    "decode_in_windows",
    "stitch_windows",
    "token_words",
    "window_starts",
]


@dataclass
class Word:
    """A decoded word and its time span in seconds."""

    text: str
    start: float
    end: float

    @property
    def centre(self) -> float:
        return 0.5 * (self.start + self.end)


def ctc_align(
    log_probs: torch.Tensor, tokens: Sequence[int], blank: int = 0
) -> list[tuple[int, int]] | None:
    """Viterbi (forced) alignment of a token sequence to CTC posteriors.

    Arguments
    ---------
    log_probs : torch.Tensor
        (time, vocab) log-probabilities of one utterance, padding removed.
    tokens : sequence of int
        The hypothesis, without blanks.
    blank : int
        Blank index.

    Returns
    -------
    list of (start, end) or None
        Frame span ``[start, end)`` of each token; None if the tokens do not
        fit in ``time`` frames.

    Example
    -------
    >>> lp = torch.full((6, 3), -9.0)
    >>> lp[[0, 3, 4], 0] = 0.0; lp[[1, 2], 1] = 0.0; lp[5, 2] = 0.0
    >>> ctc_align(lp, [1, 2])
    [(1, 3), (5, 6)]
    """
    n_frames = log_probs.size(0)
    if not tokens:
        return []
    ext = np.full(2 * len(tokens) + 1, blank, dtype=np.int64)
    ext[1::2] = tokens
    repeats = sum(a == b for a, b in zip(tokens[:-1], tokens[1:], strict=False))
    if len(tokens) + repeats > n_frames:
        return None
    emit = log_probs.detach().float().cpu().numpy()[:, ext]  # (time, states)
    states = ext.size
    # A skip over a blank is allowed into a token unless it repeats the last.
    skip_ok = np.zeros(states, dtype=bool)
    skip_ok[3::2] = ext[3::2] != ext[1:-2:2]
    alpha = np.full(states, -np.inf)
    alpha[:2] = emit[0, :2]
    back = np.zeros((n_frames, states), dtype=np.int8)
    for t in range(1, n_frames):
        stay = alpha
        step = np.concatenate(([-np.inf], alpha[:-1]))
        skip = np.concatenate(([-np.inf, -np.inf], alpha[:-2]))
        skip = np.where(skip_ok, skip, -np.inf)
        cand = np.stack((stay, step, skip))
        back[t] = cand.argmax(axis=0)
        alpha = cand.max(axis=0) + emit[t]
    final = states - 1 if alpha[-1] >= alpha[-2] else states - 2
    if not np.isfinite(alpha[final]):
        return None
    spans: list[list[int]] = [[-1, -1] for _ in tokens]
    state = final
    for t in range(n_frames - 1, -1, -1):
        if state % 2 == 1:
            span = spans[state // 2]
            span[0] = t
            if span[1] < 0:
                span[1] = t + 1
        state -= int(back[t, state])
    return [(a, b) for a, b in spans]


def ctc_spans(
    log_probs: torch.Tensor, tokens: Sequence[int], blank: int = 0
) -> list[tuple[int, int]]:
    """Frame span of each token: :func:`ctc_align`, or, for a hypothesis too
    long to fit the frames, the frames shared out evenly.

    Example
    -------
    >>> ctc_spans(torch.zeros(3, 4).log_softmax(-1), [1, 2, 3, 1, 2, 3])
    [(0, 1), (0, 1), (1, 2), (1, 2), (2, 3), (2, 3)]
    """
    spans = ctc_align(log_probs, tokens, blank)
    if spans is None:
        step = log_probs.size(0) / max(len(tokens), 1)
        spans = [
            (int(k * step), max(int((k + 1) * step), int(k * step) + 1))
            for k in range(len(tokens))
        ]
    return spans


def stitch_windows(
    windows: Sequence[tuple[float, float, Sequence[Word]]],
) -> list[Word]:
    """Merge the words of overlapping windows into one transcript.

    Neighbouring windows are cut at the widest pause between two words of the
    earlier window within the middle half of their overlap (or at the middle
    of the overlap if there is none); each window keeps the words whose centre
    lies between its cuts.

    Arguments
    ---------
    windows : sequence of (start, end, words)
        In time order; start/end in seconds and words with absolute times.

    Returns
    -------
    list[Word]

    Example
    -------
    >>> w = lambda text, t: Word(text, t, t + 0.4)
    >>> first = (0.0, 30.0, [w("a", 20.0), w("b", 26.0), w("c", 28.5)])
    >>> second = (25.0, 55.0, [w("b", 26.1), w("c", 28.5), w("d", 40.0)])
    >>> " ".join(word.text for word in stitch_windows([first, second]))
    'a b c d'
    """
    cuts = []
    for (_, end, words), (start, _, _) in zip(windows[:-1], windows[1:], strict=True):
        overlap = end - start
        middle = start + 0.5 * overlap
        lo, hi = start + 0.25 * overlap, end - 0.25 * overlap
        best, best_gap = middle, 0.0
        for left, right in zip(words[:-1], words[1:], strict=False):
            gap = right.start - left.end
            centre = 0.5 * (left.end + right.start)
            if lo <= centre <= hi and gap > best_gap:
                best, best_gap = centre, gap
        cuts.append(best)
    bounds = [-math.inf, *cuts, math.inf]
    merged: list[Word] = []
    for (_, _, words), lo, hi in zip(windows, bounds[:-1], bounds[1:], strict=True):
        merged.extend(w for w in words if lo <= w.centre < hi)
    return merged


def window_starts(n_samples: int, window: int, overlap: int) -> list[int]:
    """Equally spaced start samples of full windows covering ``n_samples``.

    Example
    -------
    >>> window_starts(100, 30, 5)
    [0, 23, 47, 70]
    """
    if n_samples <= window:
        return [0]
    count = math.ceil((n_samples - overlap) / (window - overlap))
    count = max(count, 2)
    hop = (n_samples - window) / (count - 1)
    return [round(i * hop) for i in range(count)]


def decode_in_windows(
    wav: torch.Tensor,
    decode: Callable[[torch.Tensor], list[list[Word]]],
    window: int,
    overlap: int,
    batch_size: int,
    sample_rate: int,
) -> list[Word]:
    """Timed words of a long signal, decoded in overlapping windows and stitched.

    Arguments
    ---------
    wav : torch.Tensor
        (samples,) signal.
    decode : callable
        (batch, window) full-length windows -> each window's words, timed in
        seconds from the window's start.
    window, overlap : int
        Window length and least overlap, in samples (see :func:`window_starts`).
    batch_size : int
        Windows decoded together: memory is bounded by it, whatever the length.
    sample_rate : int
        Samples per second of ``wav``.

    Returns
    -------
    list[Word]
        Words timed from the start of ``wav``.

    Example
    -------
    >>> def decode(batch):
    ...     return [[Word("A", 0.9, 1.0)] for _ in batch]  # mid-window
    >>> words = decode_in_windows(torch.zeros(50), decode, 20, 5, 2, 10)
    >>> [round(w.start, 2) for w in words]
    [0.9, 2.4, 3.9]
    """
    starts = window_starts(wav.numel(), window, overlap)
    pieces: list[tuple[float, float, list[Word]]] = []
    for first in range(0, len(starts), batch_size):
        batch_starts = starts[first : first + batch_size]
        batch = torch.stack([wav[s : s + window] for s in batch_starts])
        for s, words in zip(batch_starts, decode(batch), strict=True):
            offset = s / sample_rate
            words = [Word(w.text, w.start + offset, w.end + offset) for w in words]
            pieces.append((offset, offset + window / sample_rate, words))
    return stitch_windows(pieces)


def token_words(
    tokenizer,
    tokens: Sequence[int],
    spans: Sequence[tuple[int, int]],
    frame_seconds: float,
) -> list[Word]:
    """Group SentencePiece tokens with frame spans into timed words.

    A piece starting with "\u2581" opens a word; a word spans from its first
    token's start frame to its last token's end frame.

    Arguments
    ---------
    tokenizer : sentencepiece.SentencePieceProcessor
        The model's tokenizer.
    tokens : sequence of int
        The hypothesis.
    spans : sequence of (start, end)
        Frame span of each token.
    frame_seconds : float
        Duration of one frame.

    Returns
    -------
    list[Word]
        Times in seconds from the first frame.

    Example
    -------
    >>> token_words(sp, [5, 9], [(1, 3), (5, 6)], 0.04)  # doctest: +SKIP
    [Word(text='hello', start=0.04, end=0.24)]
    """
    groups: list[tuple[list[int], int, int]] = []
    for token, (a, b) in zip(tokens, spans, strict=True):
        if not groups or tokenizer.id_to_piece(token).startswith("\u2581"):
            groups.append(([token], a, b))
        else:
            ids, start, _ = groups[-1]
            groups[-1] = (ids + [token], start, b)
    words = []
    for ids, a, b in groups:
        word = tokenizer.decode_ids(ids).strip()
        if word:
            words.append(Word(word, a * frame_seconds, b * frame_seconds))
    return words

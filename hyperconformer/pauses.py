"""Pauses in speech, and word times kept out of them.

A CTC alignment says which frames carry which token, but nothing in CTC
training ties a token's spike to the moment the word is spoken: a model may
emit the first token in the silence before the speech, or a word that follows
a pause while the pause lasts (measured in ``docs/benchmarks_decoding.md``).
The audio itself says where no one speaks. A 10 ms frame is silent when its
energy is within ``margin_db`` (10 dB) of the noise floor (the 5th percentile
of the frame energies) or more than ``range_db`` (30 dB) below the speech
level (their 95th percentile); a run of silent frames of at least
``min_pause`` seconds (or any length at either end of the signal) is a pause.
A word cannot start or end in a pause: a start inside one moves to its end
(where the speech resumes), an end inside one moves to its start. A signal
whose speech does not stand ``margin_db`` above its silence threshold (noisy,
or speech throughout) has no pauses, and its word times are left as the
alignment gives them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hyperconformer.longform import Word

__all__ = ["find_pauses", "frame_hop", "frame_power", "keep_out_of_pauses"]

FRAME_SECONDS = 0.01
MARGIN_DB = 10.0  # silent: within this of the noise floor (find_pauses)
RANGE_DB = 30.0  # silent: more than this below the speech level (find_pauses)


def frame_hop(sample_rate: int) -> int:
    """Samples per frame (``FRAME_SECONDS``, 10 ms)."""
    return max(int(round(FRAME_SECONDS * sample_rate)), 1)


def frame_power(wav: torch.Tensor, hop: int) -> torch.Tensor:
    """Mean power of the consecutive frames of ``hop`` samples of (samples,)
    ``wav`` from its first sample (an incomplete last frame is left out):
    (frames,) float32 on the CPU; ``10 * log10(power + 1e-10)`` is its dB.

    Example
    -------
    >>> frame_power(torch.tensor([1.0, -1.0, 0.5, 0.5, 3.0]), 2)
    tensor([1.0000, 0.2500])
    """
    n = wav.numel() // hop
    return wav[: n * hop].detach().float().cpu().reshape(n, hop).pow(2).mean(dim=1)


def find_pauses(
    wav: torch.Tensor,
    sample_rate: int,
    margin_db: float = MARGIN_DB,
    range_db: float = RANGE_DB,
    min_pause: float = 0.1,
) -> list[tuple[float, float]]:
    """Pauses of a signal: (start, end) seconds of its silent stretches.

    Arguments
    ---------
    wav : torch.Tensor
        (samples,) signal, padding removed.
    sample_rate : int
        Samples per second.
    margin_db : float
        A frame within this of the noise floor is silent. 10 dB is the
        corpus's own test of where speech starts (3 x the silence's RMS).
    range_db : float
        A frame more than this below the speech level is silent: 30 dB is
        the span of speech sounds, from the strongest vowel to the weakest
        fricative (about 28 dB in Fletcher's phonetic powers). It keeps
        the silences of a signal whose floor digital silence (zeros between
        joined recordings, a muted stretch) pulls far below the real one.
        20 and 30 dB measured the same, 40 dB worse across long-form windows.
    min_pause : float
        Shortest silence inside the signal that counts as a pause, in
        seconds: shorter ones are the closures of stop consonants, within
        words. 0.05 to 0.2 s measured the same.

    Returns
    -------
    list of (start, end)
        In time order, seconds from the start of ``wav``.

    Example
    -------
    >>> tone = torch.sin(torch.arange(8000) * 0.3)
    >>> wav = torch.cat([torch.zeros(3200), tone, torch.zeros(4800), tone])
    >>> find_pauses(wav, 16000)
    [(0.0, 0.2), (0.7, 1.0)]
    """
    if wav.dim() != 1:
        raise ValueError(f"wav must be (samples,), got {tuple(wav.shape)}")
    hop = frame_hop(sample_rate)
    n_frames = wav.numel() // hop
    if n_frames < 2:
        return []
    energy = 10.0 * torch.log10(frame_power(wav, hop) + 1e-10)  # (frames,) dB
    level = torch.quantile(energy, 0.95).item()
    floor = torch.quantile(energy, 0.05).item()
    threshold = max(floor + margin_db, level - range_db)
    if level < threshold + margin_db:
        return []  # no silence stands out from the speech
    silent = (energy < threshold).tolist()
    pauses = []
    start = None
    for i, quiet in enumerate([*silent, False]):
        if quiet and start is None:
            start = i
        elif not quiet and start is not None:
            at_edge = start == 0 or i == n_frames
            if at_edge or (i - start) * FRAME_SECONDS >= min_pause:
                pauses.append((start * hop / sample_rate, i * hop / sample_rate))
            start = None
    return pauses


def keep_out_of_pauses(
    words: Sequence[Word], pauses: Sequence[tuple[float, float]]
) -> list[Word]:
    """Word times moved out of pauses: a start inside a pause to the pause's
    end, an end inside a pause to its start (or, if that would come before
    the start, the word keeps its length from its new start).

    Arguments
    ---------
    words : sequence of Word
        In time order, seconds on the same clock as ``pauses``.
    pauses : sequence of (start, end)
        From :func:`find_pauses`.

    Returns
    -------
    list[Word]
        New words; starts stay in order.

    Example
    -------
    >>> words = [Word("A", 0.0, 0.5), Word("B", 0.6, 1.2)]
    >>> keep_out_of_pauses(words, [(0.0, 0.3), (0.9, 1.4)])
    [Word(text='A', start=0.3, end=0.5), Word(text='B', start=0.6, end=0.9)]
    """
    out = []
    for word in words:
        start, end = word.start, word.end
        for a, b in pauses:
            if a <= start < b:
                start = b
            if a < end <= b and a > start:
                end = a
        if end <= start:
            end = start + (word.end - word.start)
        out.append(Word(word.text, start, end))
    return out

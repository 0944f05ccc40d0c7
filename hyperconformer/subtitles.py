"""Subtitles (SubRip and WebVTT) from timed words.

Words are grouped into cues the way subtitle guidelines ask: a cue ends at a
pause, before it would exceed ``max_chars`` characters or ``max_seconds``
seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["cues", "to_srt", "to_vtt"]


class TimedWord(Protocol):
    text: str
    start: float
    end: float


def cues(
    words: Sequence[TimedWord],
    max_chars: int = 42,
    max_seconds: float = 6.0,
    pause: float = 0.7,
) -> list[tuple[float, float, str]]:
    """Group words into (start, end, text) cues.

    Example
    -------
    >>> from hyperconformer.longform import Word
    >>> words = [Word("HI", 0.5, 0.9), Word("YOU", 1.0, 1.4), Word("AGAIN", 3.0, 3.4)]
    >>> cues(words)
    [(0.5, 1.4, 'HI YOU'), (3.0, 3.4, 'AGAIN')]
    """
    groups: list[list[TimedWord]] = []
    for word in words:
        if groups:
            group = groups[-1]
            text = " ".join(w.text for w in group) + " " + word.text
            if (
                word.start - group[-1].end <= pause
                and len(text) <= max_chars
                and word.end - group[0].start <= max_seconds
            ):
                group.append(word)
                continue
        groups.append([word])
    return [(g[0].start, g[-1].end, " ".join(w.text for w in g)) for g in groups]


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(words: Sequence[TimedWord]) -> str:
    """SubRip text of timed words.

    Example
    -------
    >>> from hyperconformer.longform import Word
    >>> print(to_srt([Word("HELLO", 0.5, 0.9), Word("WORLD", 1.0, 1.4)]), end="")
    1
    00:00:00,500 --> 00:00:01,400
    HELLO WORLD
    """
    blocks = [
        f"{i}\n{_clock(a, ',')} --> {_clock(b, ',')}\n{text}\n"
        for i, (a, b, text) in enumerate(cues(words), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(words: Sequence[TimedWord]) -> str:
    """WebVTT text of timed words.

    Example
    -------
    >>> from hyperconformer.longform import Word
    >>> print(to_vtt([Word("HELLO", 0.5, 0.9)]), end="")
    WEBVTT
    <BLANKLINE>
    00:00:00.500 --> 00:00:00.900
    HELLO
    """
    blocks = [
        f"{_clock(a, '.')} --> {_clock(b, '.')}\n{text}\n" for a, b, text in cues(words)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)

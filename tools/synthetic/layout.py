"""The corpus on disk: LibriSpeech's layout, plus the files this tool adds.

::

    OUT/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac
    OUT/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
    OUT/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.words.txt
    OUT/LibriSpeech/SPEAKERS.TXT
    OUT/LibriSpeech/augmentation/{noise,rir}/*.wav, noise.csv, rir.csv

``*.words.txt`` holds reference word timings: per utterance, ``ID START END
START END ...`` (seconds), a start marked ``*`` where eSpeak gave the word no
event of its own.  Readers and writers of these files share this module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .plan import UttSpec
from .voices import Speaker

COMPLETE_MARKER = ".synthetic_corpus.json"
PARTIAL_MARKER = ".synthetic_corpus.partial"
AUGMENTATION_DIR = "augmentation"
NOISE_CSV = f"{AUGMENTATION_DIR}/noise.csv"
RIR_CSV = f"{AUGMENTATION_DIR}/rir.csv"

WordTimes = list[tuple[float, float, bool]]


def _by_chapter(root: Path, specs: Sequence[UttSpec]) -> dict[Path, list[UttSpec]]:
    chapters: dict[Path, list[UttSpec]] = {}
    for spec in specs:
        chapters.setdefault((root / spec.rel_path).parent, []).append(spec)
    return chapters


def write_transcripts(root: Path, specs: Sequence[UttSpec]) -> None:
    """``<spk>-<chapter>.trans.txt`` in every chapter folder."""
    for folder, chapter in _by_chapter(root, specs).items():
        lines = sorted(f"{s.utt_id} {s.transcript}\n" for s in chapter)
        (folder / f"{folder.parent.name}-{folder.name}.trans.txt").write_text(
            "".join(lines)
        )


def write_word_times(
    root: Path, specs: Sequence[UttSpec], words: dict[str, WordTimes]
) -> None:
    """``<spk>-<chapter>.words.txt`` in every chapter folder."""
    for folder, chapter in _by_chapter(root, specs).items():
        lines = []
        for spec in chapter:
            times = " ".join(
                f"{a:.4f}{'' if measured else '*'} {b:.4f}"
                for a, b, measured in words[spec.utt_id]
            )
            lines.append(f"{spec.utt_id} {times}\n")
        (folder / f"{folder.parent.name}-{folder.name}.words.txt").write_text(
            "".join(sorted(lines))
        )


def read_word_times(chapter_file: str | os.PathLike) -> dict[str, WordTimes]:
    """A ``*.words.txt`` file: utterance id -> [(start, end, measured)].

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "1-2.words.txt"
    >>> _ = f.write_text("1-2-0000 0.1000 0.3000 0.3000* 0.5000\\n")
    >>> read_word_times(f)
    {'1-2-0000': [(0.1, 0.3, True), (0.3, 0.5, False)]}
    """
    times = {}
    for line in Path(chapter_file).read_text().splitlines():
        utt, *values = line.split()
        times[utt] = [
            (float(a.rstrip("*")), float(b), not a.endswith("*"))
            for a, b in zip(values[::2], values[1::2], strict=True)
        ]
    return times


def write_speakers_txt(
    root: Path, speakers: dict[str, list[Speaker]], minutes: dict[int, float]
) -> None:
    """``SPEAKERS.TXT`` as in LibriSpeech, with the eSpeak settings as name."""
    lines = [
        "; Synthetic speakers (eSpeak NG voice+variant, pitch, range, rate)\n",
        "; ID   |SEX| SUBSET          |MINUTES| NAME\n",
    ]
    for split, spks in speakers.items():
        for s in sorted(spks, key=lambda s: s.spk_id):
            if s.spk_id not in minutes:
                continue
            lines.append(
                f"{s.spk_id:<6}| {s.sex} | {split:<16}| {minutes[s.spk_id]:5.2f} | "
                f"{s.voice_name} pitch {s.pitch} range {s.pitch_range} "
                f"rate {s.rate}\n"
            )
    (root / "SPEAKERS.TXT").write_text("".join(lines))

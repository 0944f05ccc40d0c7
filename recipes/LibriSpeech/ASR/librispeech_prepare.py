"""Turn a LibriSpeech-format folder into SpeechBrain CSV manifests.

``data_folder`` holds the split folders directly, as in a LibriSpeech download
(``/data/LibriSpeech/train-clean-100/<speaker>/<chapter>/...``).  For every
split, ``<save_folder>/<split>.csv`` gets one row per utterance with the columns
``ID, duration, wav, spk_id, wrd``:

* ``ID``: the utterance id, e.g. ``103-1240-0000``
* ``duration``: seconds, read from the audio header
* ``wav``: absolute path of the audio file
* ``spk_id``: speaker id (first field of the utterance id)
* ``wrd``: the upper-case transcript

Command line::

    python recipes/LibriSpeech/ASR/librispeech_prepare.py \\
        --data_folder=/data/LibriSpeech --save_folder=results/prepare

From Python (e.g. a training script)::

    >>> from librispeech_prepare import prepare_librispeech
    >>> csvs = prepare_librispeech(
    ...     "/data/LibriSpeech", "results/prepare",
    ...     tr_splits=["train-clean-100"], dev_splits=["dev-clean"],
    ...     te_splits=["test-clean"],
    ... )  # doctest: +SKIP
    >>> sorted(csvs)  # doctest: +SKIP
    ['dev-clean', 'test-clean', 'train-clean-100']

Work already done is skipped: when every CSV exists and the options (and the
transcript files found) match those saved next to them, nothing is rewritten.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import soundfile as sf

logger = logging.getLogger(__name__)

AUDIO_EXT = ".flac"
CSV_COLUMNS = ("ID", "duration", "wav", "spk_id", "wrd")
OPTIONS_FILE = "librispeech_prepare.json"


class PrepareError(ValueError):
    """The data folder is not a usable LibriSpeech-format corpus."""


def prepare_librispeech(
    data_folder: str | os.PathLike,
    save_folder: str | os.PathLike,
    tr_splits: Sequence[str] = (),
    dev_splits: Sequence[str] = (),
    te_splits: Sequence[str] = (),
    select_n_sentences: int | Sequence[int | None] | None = None,
    merge_lst: Sequence[str] = (),
    merge_name: str | None = None,
    skip_prep: bool = False,
) -> dict[str, Path]:
    """Write ``<save_folder>/<split>.csv`` for every requested split.

    Args:
        data_folder: folder that contains the split folders (for a LibriSpeech
            download, the ``LibriSpeech`` folder itself).
        save_folder: where the CSV files (and the options file) go.
        tr_splits, dev_splits, te_splits: split folder names.
        select_n_sentences: keep only this many utterances per split (evenly
            spread over the sorted utterances, so all speakers stay); one int
            for every split or a list with one entry (or ``None``) per split in
            the order ``tr_splits + dev_splits + te_splits``.
        merge_lst: splits to concatenate into ``<save_folder>/<merge_name>``.
        merge_name: file name of the merged CSV (``.csv`` added if missing),
            e.g. ``"train.csv"``; required when ``merge_lst`` is given.
        skip_prep: do nothing at all (the CSVs are known to be there).

    Returns:
        ``{split: csv path}``, plus ``{merge_name stem: path}`` when merging.

    Raises:
        PrepareError: a missing data or split folder, a missing, empty or
            malformed transcript, a listed audio file that is missing, or an
            unreadable audio file; the message names the file or folder.
    """
    splits = list(dict.fromkeys([*tr_splits, *dev_splits, *te_splits]))
    if not splits:
        raise PrepareError("no splits requested (tr_splits, dev_splits, te_splits)")
    save = Path(save_folder).absolute()
    outputs = {split: save / f"{split}.csv" for split in splits}
    merged_path = None
    if merge_lst:
        if not merge_name:
            raise PrepareError("merge_lst given without merge_name")
        unknown = [s for s in merge_lst if s not in splits]
        if unknown:
            raise PrepareError(f"merge_lst names splits not prepared: {unknown}")
        merged_path = save / (
            merge_name if merge_name.endswith(".csv") else f"{merge_name}.csv"
        )
        outputs[merged_path.stem] = merged_path
    if skip_prep:
        return outputs

    data = Path(data_folder).absolute()
    if not data.is_dir():
        raise PrepareError(f"data folder not found: {data}")
    n_select = _per_split_selection(select_n_sentences, splits)
    split_dirs = {split: _split_dir(data, split) for split in splits}

    options = {
        "data_folder": str(data),
        "splits": splits,
        "select_n_sentences": [n_select[s] for s in splits],
        "merge_lst": list(merge_lst),
        "merge_name": merged_path.name if merged_path else None,
        # Regenerating the corpus in place changes the transcript files, and
        # must invalidate the CSVs even when the options are the same.
        "fingerprint": _fingerprint(split_dirs),
    }
    options_path = save / OPTIONS_FILE
    if _already_done(options_path, options, outputs.values()):
        logger.info("CSV files in %s are up to date, skipping preparation", save)
        return outputs

    save.mkdir(parents=True, exist_ok=True)
    options_path.unlink(missing_ok=True)  # written last, when all is done
    rows_by_split = {}
    for split in splits:
        rows = _scan_split(split_dirs[split])
        rows = _select(rows, n_select[split])
        _write_csv(outputs[split], rows)
        rows_by_split[split] = rows
        hours = sum(r[1] for r in rows) / 3600.0
        logger.info(
            "%s: %d utterances, %.2f h -> %s", split, len(rows), hours, outputs[split]
        )
    if merged_path is not None:
        _write_csv(merged_path, [r for s in merge_lst for r in rows_by_split[s]])
    options_path.write_text(json.dumps(options, indent=2) + "\n")
    return outputs


def _per_split_selection(
    select: int | Sequence[int | None] | None, splits: Sequence[str]
) -> dict[str, int | None]:
    if select is None or isinstance(select, int):
        values: list[int | None] = [select] * len(splits)
    else:
        values = list(select)
        if len(values) != len(splits):
            raise PrepareError(
                f"select_n_sentences has {len(values)} entries for "
                f"{len(splits)} splits {list(splits)}"
            )
    for value in values:
        if value is not None and value < 1:
            raise PrepareError(f"select_n_sentences must be positive, got {value}")
    return dict(zip(splits, values, strict=True))


def _split_dir(data: Path, split: str) -> Path:
    folder = data / split
    if folder.is_dir():
        return folder
    hint = ""
    if (data / "LibriSpeech" / split).is_dir():
        hint = (
            f" (use data_folder={data / 'LibriSpeech'}, the folder holding the splits)"
        )
    raise PrepareError(f"split folder not found: {folder}{hint}")


def _transcripts(folder: Path) -> list[Path]:
    """The transcript of every ``<speaker>/<chapter>`` folder of a split."""
    chapters = sorted(d for d in folder.glob("*/*") if d.is_dir())
    if not chapters:
        raise PrepareError(f"no <speaker>/<chapter> folders under {folder}")
    files = []
    for chapter in chapters:
        trans = chapter / f"{chapter.parent.name}-{chapter.name}.trans.txt"
        if not trans.is_file():
            raise PrepareError(f"transcript missing: {trans}")
        files.append(trans)
    return files


def _fingerprint(split_dirs: dict[str, Path]) -> str:
    digest = hashlib.sha1()
    for split, folder in split_dirs.items():
        for path in _transcripts(folder):
            stat = path.stat()
            digest.update(
                f"{split}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()


def _already_done(options_path: Path, options: dict, outputs: Iterable[Path]) -> bool:
    if not options_path.is_file() or not all(p.is_file() for p in outputs):
        return False
    try:
        return json.loads(options_path.read_text()) == options
    except (OSError, ValueError):
        return False


Row = tuple[str, float, str, str, str]


def _scan_split(folder: Path) -> list[Row]:
    """Read every transcript of a split and the header of every audio file."""
    rows: list[Row] = []
    seen: dict[str, Path] = {}
    for trans in _transcripts(folder):
        lines = trans.read_text(encoding="utf-8").splitlines()
        entries = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
        if not entries:
            raise PrepareError(f"empty transcript file: {trans}")
        for lineno, line in entries:
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise PrepareError(
                    f"{trans}:{lineno}: expected '<utterance-id> <TRANSCRIPT>', "
                    f"got {line.strip()!r}"
                )
            utt_id, text = parts
            if utt_id in seen:
                raise PrepareError(f"{trans}:{lineno}: duplicate utterance id {utt_id}")
            seen[utt_id] = trans
            audio = trans.parent / f"{utt_id}{AUDIO_EXT}"
            duration = _duration(audio, trans)
            words = " ".join(text.upper().split())
            rows.append((utt_id, duration, str(audio), utt_id.split("-")[0], words))
    return rows


def _duration(audio: Path, trans: Path) -> float:
    if not audio.is_file():
        raise PrepareError(f"audio file missing: {audio} (listed in {trans})")
    try:
        info = sf.info(str(audio))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise PrepareError(f"cannot read audio file {audio}: {exc}") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise PrepareError(f"audio file has no samples: {audio}")
    return round(info.frames / info.samplerate, 5)


def _select(rows: list[Row], n: int | None) -> list[Row]:
    """Keep ``n`` rows evenly spread over ``rows`` (deterministic)."""
    if n is None or n >= len(rows):
        return rows
    return [rows[(i * len(rows)) // n] for i in range(n)]


def _write_csv(path: Path, rows: Sequence[Row]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    os.replace(tmp, path)  # never leave a half-written CSV behind


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write SpeechBrain CSVs for a LibriSpeech-format folder."
    )
    parser.add_argument(
        "--data_folder", required=True, help="folder holding the split folders"
    )
    parser.add_argument("--save_folder", required=True, help="where CSVs go")
    parser.add_argument("--tr_splits", nargs="*", default=["train-clean-100"])
    parser.add_argument("--dev_splits", nargs="*", default=["dev-clean"])
    parser.add_argument("--te_splits", nargs="*", default=["test-clean"])
    parser.add_argument(
        "--select_n_sentences", type=int, default=None, help="utterances per split"
    )
    parser.add_argument("--merge_lst", nargs="*", default=[])
    parser.add_argument("--merge_name", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        outputs = prepare_librispeech(
            args.data_folder,
            args.save_folder,
            tr_splits=args.tr_splits,
            dev_splits=args.dev_splits,
            te_splits=args.te_splits,
            select_n_sentences=args.select_n_sentences,
            merge_lst=args.merge_lst,
            merge_name=args.merge_name,
        )
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in outputs.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

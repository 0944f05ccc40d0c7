"""LibriSpeech-format folder -> SpeechBrain CSVs (librispeech_prepare.py)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import librispeech_prepare
import pytest
import soundfile as sf
from conftest import TINY_CORPUS_OPTIONS
from librispeech_prepare import PrepareError, main, prepare_librispeech

SPLITS = {
    "tr_splits": ["train-clean-100"],
    "dev_splits": ["dev-clean"],
    "te_splits": ["test-clean"],
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def transcripts(split_dir: Path) -> dict[str, str]:
    out = {}
    for trans in split_dir.glob("*/*/*.trans.txt"):
        for line in trans.read_text().splitlines():
            utt, text = line.split(" ", 1)
            out[utt] = text
    return out


@pytest.fixture
def corpus_copy(tiny_corpus: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny corpus's dev-clean split (small)."""
    data = tmp_path / "LibriSpeech"
    shutil.copytree(tiny_corpus / "LibriSpeech" / "dev-clean", data / "dev-clean")
    return data


def first_chapter(data: Path) -> Path:
    return sorted(p for p in (data / "dev-clean").glob("*/*") if p.is_dir())[0]


def test_csv_columns_and_contents(tiny_corpus: Path, tmp_path: Path) -> None:
    data = tiny_corpus / "LibriSpeech"
    out = prepare_librispeech(data, tmp_path / "csv", **SPLITS)
    assert set(out) == {"train-clean-100", "dev-clean", "test-clean"}
    for split, path in out.items():
        assert path == tmp_path / "csv" / f"{split}.csv"
        with path.open(newline="") as f:
            assert next(csv.reader(f)) == ["ID", "duration", "wav", "spk_id", "wrd"]
        rows = read_csv(path)
        expected = transcripts(data / split)
        assert {r["ID"] for r in rows} == set(expected)
        for row in rows:
            wav = Path(row["wav"])
            assert wav.is_absolute() and wav.is_file()
            assert wav.name == f"{row['ID']}.flac"
            assert row["spk_id"] == row["ID"].split("-")[0] == wav.parent.parent.name
            assert row["wrd"] == expected[row["ID"]] == row["wrd"].upper()
            assert float(row["duration"]) == pytest.approx(
                sf.info(str(wav)).duration, abs=1e-4
            )


def test_speechbrain_reads_the_csv(tiny_corpus: Path, tmp_path: Path) -> None:
    from speechbrain.dataio.dataio import load_data_csv

    out = prepare_librispeech(
        tiny_corpus / "LibriSpeech", tmp_path, dev_splits=["dev-clean"]
    )
    data = load_data_csv(str(out["dev-clean"]))
    assert len(data) == TINY_CORPUS_OPTIONS["eval_utts"]
    first = next(iter(data.values()))
    assert isinstance(first["duration"], float) and first["wrd"].isupper()


def test_skips_work_already_done(
    tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, save = tiny_corpus / "LibriSpeech", tmp_path / "csv"
    out = prepare_librispeech(data, save, **SPLITS)
    before = {p: p.stat().st_mtime_ns for p in out.values()}

    def fail(*_args: object) -> None:
        raise AssertionError("rescanned although the CSVs are up to date")

    monkeypatch.setattr(librispeech_prepare, "_scan_split", fail)
    assert prepare_librispeech(data, save, **SPLITS) == out
    assert {p: p.stat().st_mtime_ns for p in out.values()} == before
    # skip_prep never touches anything, even a missing folder.
    assert prepare_librispeech(tmp_path / "nowhere", save, skip_prep=True, **SPLITS)
    # Different options: the work is redone.
    with pytest.raises(AssertionError, match="rescanned"):
        prepare_librispeech(data, save, select_n_sentences=5, **SPLITS)


def test_redone_when_a_csv_is_missing(tiny_corpus: Path, tmp_path: Path) -> None:
    data = tiny_corpus / "LibriSpeech"
    out = prepare_librispeech(data, tmp_path, **SPLITS)
    out["dev-clean"].unlink()
    prepare_librispeech(data, tmp_path, **SPLITS)
    assert len(read_csv(out["dev-clean"])) == TINY_CORPUS_OPTIONS["eval_utts"]


def test_select_and_merge(tiny_corpus: Path, tmp_path: Path) -> None:
    out = prepare_librispeech(
        tiny_corpus / "LibriSpeech",
        tmp_path,
        tr_splits=["train-clean-100", "dev-clean"],
        select_n_sentences=[None, 10],
        merge_lst=["train-clean-100", "dev-clean"],
        merge_name="train.csv",
    )
    train, dev = read_csv(out["train-clean-100"]), read_csv(out["dev-clean"])
    assert len(dev) == 10
    # Evenly spread: several speakers survive the selection.
    assert len({r["spk_id"] for r in dev}) > 3
    merged = read_csv(tmp_path / "train.csv")
    assert merged == train + dev


def test_wrong_data_folder(tiny_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="data folder not found: .*nowhere"):
        prepare_librispeech(tmp_path / "nowhere", tmp_path, **SPLITS)
    # The folder above LibriSpeech/: say which folder to use instead.
    with pytest.raises(PrepareError, match="split folder not found.*use data_folder="):
        prepare_librispeech(tiny_corpus, tmp_path, **SPLITS)


def test_missing_split(corpus_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="split folder not found: .*test-other"):
        prepare_librispeech(
            corpus_copy, tmp_path, dev_splits=["dev-clean"], te_splits=["test-other"]
        )


def test_corrupt_audio_file(corpus_copy: Path, tmp_path: Path) -> None:
    audio = sorted(first_chapter(corpus_copy).glob("*.flac"))[0]
    audio.write_bytes(b"this is not a flac file" * 20)
    with pytest.raises(PrepareError, match=f"cannot read audio file {audio}"):
        prepare_librispeech(corpus_copy, tmp_path, dev_splits=["dev-clean"])


def test_missing_audio_file(corpus_copy: Path, tmp_path: Path) -> None:
    audio = sorted(first_chapter(corpus_copy).glob("*.flac"))[0]
    audio.unlink()
    with pytest.raises(PrepareError, match=f"audio file missing: {audio}"):
        prepare_librispeech(corpus_copy, tmp_path, dev_splits=["dev-clean"])


def test_missing_transcript(corpus_copy: Path, tmp_path: Path) -> None:
    trans = next(first_chapter(corpus_copy).glob("*.trans.txt"))
    trans.unlink()
    with pytest.raises(PrepareError, match=f"transcript missing: {trans}"):
        prepare_librispeech(corpus_copy, tmp_path, dev_splits=["dev-clean"])


def test_empty_or_malformed_transcript(corpus_copy: Path, tmp_path: Path) -> None:
    trans = next(first_chapter(corpus_copy).glob("*.trans.txt"))
    trans.write_text("\n")
    with pytest.raises(PrepareError, match=f"empty transcript file: {trans}"):
        prepare_librispeech(corpus_copy, tmp_path, dev_splits=["dev-clean"])
    trans.write_text("ONLY-AN-ID\n")
    with pytest.raises(PrepareError, match=f"{trans}:1: expected"):
        prepare_librispeech(corpus_copy, tmp_path, dev_splits=["dev-clean"])


def test_no_chapters(tmp_path: Path) -> None:
    (tmp_path / "dev-clean").mkdir()
    with pytest.raises(PrepareError, match="no <speaker>/<chapter> folders"):
        prepare_librispeech(tmp_path, tmp_path / "csv", dev_splits=["dev-clean"])


def test_cli(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tiny_corpus / "LibriSpeech")
    assert main(["--data_folder", data, "--save_folder", str(tmp_path)]) == 0
    assert (tmp_path / "train-clean-100.csv").is_file()
    assert (tmp_path / "test-clean.csv").is_file()
    capsys.readouterr()
    bad = str(tmp_path / "nowhere")
    assert main(["--data_folder", bad, "--save_folder", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: data folder not found")

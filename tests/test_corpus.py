"""The synthetic LibriSpeech-format corpus (tools/make_synthetic_librispeech.py)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_CORPUS_OPTIONS
from make_synthetic_librispeech import (
    COMPLETE_MARKER,
    PARTIAL_MARKER,
    SynthesisError,
    main,
    make_corpus,
    read_word_times,
)
from synthetic.plan import plan_split
from synthetic.speech import Espeak
from synthetic.text import MAX_WORDS, MIN_WORDS, make_sentence, number_words, vocabulary
from synthetic.voices import (
    MALE_VARIANTS,
    VARIANTS,
    VOICES,
    make_speakers,
    variant_partition,
    voice_pairs,
)

SPLITS = ("train-clean-100", "dev-clean", "test-clean")
UTT_RE = re.compile(r"^(\d+)-(\d+)-(\d{4})$")


def read_split(root: Path, split: str) -> dict[str, str]:
    """``{utterance id: transcript}`` of one split."""
    out = {}
    for trans in sorted((root / "LibriSpeech" / split).glob("*/*/*.trans.txt")):
        for line in trans.read_text().splitlines():
            utt, text = line.split(" ", 1)
            out[utt] = text
    return out


def speakers_txt(root: Path) -> dict[str, set[str]]:
    """``{split: {voice+variant}}`` from SPEAKERS.TXT."""
    out: dict[str, set[str]] = {}
    for line in (root / "LibriSpeech" / "SPEAKERS.TXT").read_text().splitlines():
        if line.startswith(";"):
            continue
        _, _, split, _, name = (f.strip() for f in line.split("|"))
        out.setdefault(split, set()).add(name.split()[0])
    return out


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_transcripts(tiny_corpus: Path) -> None:
    base = tiny_corpus / "LibriSpeech"
    assert (base / COMPLETE_MARKER).is_file()
    assert not (base / PARTIAL_MARKER).exists()
    for split in SPLITS:
        chapters = sorted(p for p in (base / split).glob("*/*") if p.is_dir())
        assert chapters, split
        for chapter in chapters:
            spk, chap = chapter.parent.name, chapter.name
            trans = chapter / f"{spk}-{chap}.trans.txt"
            assert trans.is_file()
            listed = []
            for line in trans.read_text().splitlines():
                utt, text = line.split(" ", 1)
                m = UTT_RE.match(utt)
                assert m and m.group(1) == spk and m.group(2) == chap, utt
                assert re.fullmatch(r"[A-Z]+( [A-Z]+)*", text), text
                listed.append(f"{utt}.flac")
            # One reference time span per transcript word, in order.
            times = read_word_times(chapter / f"{spk}-{chap}.words.txt")
            assert sorted(times) == sorted(n[:-5] for n in listed)
            for line in trans.read_text().splitlines():
                utt, text = line.split(" ", 1)
                spans = times[utt]
                assert len(spans) == len(text.split())
                duration = sf.info(str(chapter / f"{utt}.flac")).duration
                assert 0 < spans[0][0] and spans[-1][1] <= duration
                assert all(a < b for a, b, _ in spans)
                assert all(
                    b <= c
                    for (_, b, _), (c, _, _) in zip(spans, spans[1:], strict=False)
                )
            # Every listed file exists and every file is listed.
            assert sorted(p.name for p in chapter.glob("*.flac")) == sorted(listed)
            # Utterances are numbered 0000, 0001, ... within a chapter.
            numbers = sorted(int(n[-9:-5]) for n in listed)
            assert numbers == list(range(len(numbers)))


def test_sizes_match_summary(tiny_corpus: Path) -> None:
    marker = json.loads((tiny_corpus / "LibriSpeech" / COMPLETE_MARKER).read_text())
    summary = marker["summary"]["splits"]
    train_h = summary["train-clean-100"]["hours"]
    assert 0.05 <= train_h < 0.06
    for split in SPLITS:
        assert summary[split]["utterances"] == len(read_split(tiny_corpus, split))
    assert summary["dev-clean"]["utterances"] == TINY_CORPUS_OPTIONS["eval_utts"]
    assert summary["test-clean"]["utterances"] == TINY_CORPUS_OPTIONS["eval_utts"]


def test_utterances_shaped_like_librispeech(tiny_corpus: Path) -> None:
    durations = {
        split: [
            sf.info(str(p)).duration
            for p in (tiny_corpus / "LibriSpeech" / split).rglob("*.flac")
        ]
        for split in SPLITS
    }
    train = durations["train-clean-100"]
    # LibriSpeech train-clean-100: mean 12.7 s, most 10-16 s, none over ~25 s.
    assert 10.0 < np.mean(train) < 16.0 and max(train) < 27.0
    assert sum(10.0 <= d <= 17.0 for d in train) >= 0.5 * len(train)
    evaluation = durations["dev-clean"] + durations["test-clean"]
    assert 1.5 < min(evaluation) and max(evaluation) < 38.0
    assert 5.0 < np.mean(evaluation) < 10.0  # test-clean: mean 7.4 s
    # Several sentences with pauses: the plan of a larger split.
    speakers = make_speakers(["train-clean-100", "test-clean"], 1234)
    for split, many in (("train-clean-100", 0.9), ("test-clean", 0.5)):
        plan = plan_split(split, speakers[split], 1234)
        specs = [next(plan) for _ in range(300)]
        assert sum(len(s.sentences) > 1 for s in specs) >= many * len(specs)
        pauses = [p for s in specs for p in s.pauses_s]
        assert 0.25 <= min(pauses) and max(pauses) <= 0.8


def test_audio_is_16k_mono_flac_speech(tiny_corpus: Path) -> None:
    files = sorted((tiny_corpus / "LibriSpeech").glob("*-clean*/*/*/*.flac"))
    rng = random.Random(0)
    for path in rng.sample(files, 12):
        info = sf.info(str(path))
        assert (info.format, info.subtype) == ("FLAC", "PCM_16")
        assert info.samplerate == 16000 and info.channels == 1
        assert 1.5 < info.duration < 38.0
        audio, _ = sf.read(str(path), dtype="float32")
        # Real speech: loud enough, not clipped, silence at the edges is
        # quieter than the middle.
        assert 0.01 < np.sqrt(np.mean(audio**2)) < 0.5
        assert np.abs(audio).max() < 1.0
        edge = np.sqrt(np.mean(audio[:1600] ** 2))  # first 0.1 s
        assert edge < 0.1 * np.sqrt(np.mean(audio**2))


def test_dev_test_unseen_speakers_and_sentences(tiny_corpus: Path) -> None:
    texts = {split: read_split(tiny_corpus, split) for split in SPLITS}
    spk = {s: {u.split("-")[0] for u in texts[s]} for s in SPLITS}
    assert not spk["train-clean-100"] & spk["dev-clean"]
    assert not spk["train-clean-100"] & spk["test-clean"]
    assert not spk["dev-clean"] & spk["test-clean"]
    # Held-out voice variants, not just new speaker ids or pairs.
    variants = {
        split: {name.split("+")[1] for name in names}
        for split, names in speakers_txt(tiny_corpus).items()
    }
    assert not variants["train-clean-100"] & variants["dev-clean"]
    assert not variants["train-clean-100"] & variants["test-clean"]
    assert not variants["dev-clean"] & variants["test-clean"]
    # No dev or test sentence is a training sentence: checked on the plan of
    # 2,000 training utterances (the split's own sentences are not marked).
    speakers = make_speakers(list(SPLITS), 1234)
    plan = plan_split("train-clean-100", speakers["train-clean-100"], 1234)
    heard = {s for _ in range(2000) for s in next(plan).sentences}
    for split in ("dev-clean", "test-clean"):
        plan = plan_split(split, speakers[split], 1234)
        sentences = [s for _ in range(len(texts[split])) for s in next(plan).sentences]
        assert not set(sentences) & heard
        assert len(set(sentences)) == len(sentences)


def test_existing_corpus_is_reused(tiny_corpus: Path) -> None:
    marker = json.loads((tiny_corpus / "LibriSpeech" / COMPLETE_MARKER).read_text())
    opts = marker["options"]
    summary = make_corpus(
        tiny_corpus,
        hours=opts["hours"],
        seed=opts["seed"],
        splits=opts["splits"],
        eval_fraction=opts["eval_fraction"],
        eval_utts=opts["eval_utts"],
        progress=False,
    )
    assert summary["skipped"] is True
    assert summary["splits"] == marker["summary"]["splits"]


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    opts = {"hours": 0.004, "splits": ["train-clean-100", "dev-clean"], "eval_utts": 3}
    make_corpus(tmp_path / "a", seed=7, workers=1, progress=False, **opts)
    # eSpeak keeps state between calls; a used instance in this process must
    # not leak into the corpus.
    Espeak().synth("some earlier speech", "en-us+f2", 170, 50, 50, 3)
    make_corpus(tmp_path / "b", seed=7, workers=2, progress=False, **opts)
    make_corpus(tmp_path / "c", seed=8, workers=2, progress=False, **opts)
    a, b, c = (tree_digest(tmp_path / x) for x in "abc")
    assert len(a) > 5
    assert a == b  # same seed: same bytes, whatever the number of workers
    assert a != c


def test_partial_corpus_is_rebuilt(tmp_path: Path) -> None:
    opts = {"hours": 0.002, "splits": ["train-clean-100"], "progress": False}
    first = make_corpus(tmp_path, **opts)
    base = tmp_path / "LibriSpeech"
    before = tree_digest(tmp_path)
    # Simulate an interrupted run: marker gone, a stray file left behind.
    (base / COMPLETE_MARKER).unlink()
    (base / PARTIAL_MARKER).write_text("")
    stray = base / "train-clean-100" / "1" / "2" / "1-2-0000.flac"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"junk")
    second = make_corpus(tmp_path, **opts)
    assert second["skipped"] is False and first["skipped"] is False
    assert not stray.exists()
    assert tree_digest(tmp_path) == before


def test_refuses_to_overwrite_foreign_data(tmp_path: Path) -> None:
    (tmp_path / "LibriSpeech" / "dev-clean").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="dev-clean"):
        make_corpus(tmp_path, hours=0.002, splits=["dev-clean"], progress=False)


def test_espeak_failure_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synthetic import voices

    monkeypatch.setattr(voices, "VOICES", ("en-gb",))  # refused by eSpeak NG 1.52
    with pytest.raises(
        SynthesisError, match=r"train-clean-100: .*refused voice 'en-gb\+"
    ):
        make_corpus(tmp_path, hours=0.002, splits=["train-clean-100"], progress=False)
    base = tmp_path / "LibriSpeech"
    assert (base / PARTIAL_MARKER).exists() and not (base / COMPLETE_MARKER).exists()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="must start with"):
        make_corpus("unused", splits=["clean-100"])
    with pytest.raises(ValueError, match="hours"):
        make_corpus("unused", hours=0)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--out", str(tmp_path), "--hours", "0.002", "--eval-utts", "2", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "train-clean-100" in out and "test-clean" in out
    assert main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["--out", str(tmp_path), "--splits", "valid"]) == 1
    assert "must start with" in capsys.readouterr().err


def test_grammar() -> None:
    assert number_words(7) == "SEVEN"
    assert number_words(40) == "FORTY"
    assert number_words(115) == "ONE HUNDRED AND FIFTEEN"
    assert number_words(1999) == "ONE THOUSAND NINE HUNDRED AND NINETY NINE"
    vocab = vocabulary()
    assert len(vocab) >= 2000
    rng = random.Random(0)
    seen, lengths, commas, questions = set(), set(), 0, 0
    for _ in range(5000):
        words, spoken = make_sentence(rng)
        assert MIN_WORDS <= len(words.split()) <= MAX_WORDS
        assert set(words.split()) <= vocab
        assert spoken.rstrip(".?").replace(",", "") == words.lower()
        assert not re.search(r"\bA [AEIO]", words)  # A/AN agreement
        assert not re.search(r"\bAN [^AEIOH]", words)
        seen |= set(words.split())
        lengths.add(len(words.split()))
        commas += "," in spoken
        questions += spoken.endswith("?")
    # Varied structures: joined and subordinate clauses, questions, lengths.
    assert len(lengths) >= 15 and commas > 500 and questions > 200
    assert len(seen) > 0.8 * len(vocab)


def test_voice_partition() -> None:
    for seed in range(20):
        parts = variant_partition(seed)
        train = set(parts["train"])
        assert not train & set(parts["dev"]) and not train & set(parts["test"])
        assert not set(parts["dev"]) & set(parts["test"])
        # One male and one female variant held out for each of dev and test.
        for role in ("dev", "test"):
            assert sum(v in MALE_VARIANTS for v in parts[role]) == 1
            assert len(parts[role]) == 2
        assert len(train) + 4 == len(VARIANTS)
        # Every accent is heard in every split.
        for pairs in voice_pairs(seed).values():
            assert {v for v, _ in pairs} == set(VOICES)


def test_every_voice_is_accepted() -> None:
    # A refused name silently keeps the previous voice, so check each one.
    engine = Espeak()
    for voice in VOICES:
        for variant in VARIANTS:
            assert engine.lib.espeak_SetVoiceByName(f"{voice}+{variant}".encode()) == 0
    with pytest.raises(SynthesisError, match="refused voice"):
        engine.synth("hello", "en-gb", 170, 50, 50, 1)
    audio = engine.synth("hello world", "en-us+f2", 170, 50, 50, 1)
    assert audio.dtype == np.int16 and len(audio) > engine.sample_rate // 4

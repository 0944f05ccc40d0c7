"""Shared pytest fixtures.

``tiny_corpus`` builds a small synthetic LibriSpeech-format corpus once per test
session (a couple of seconds on two cores) for every test that needs real
speech: data preparation, training smoke tests, decoding.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# The corpus tool and the recipe's prepare script are plain scripts, not
# package modules: make them importable by the tests.
for _sub in ("tools", "recipes/LibriSpeech/ASR"):
    _path = str(ROOT / _sub)
    if _path not in sys.path:
        sys.path.insert(0, _path)


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The tools set torch's thread count; no test leaks its setting."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# About 3 minutes of train audio (~14 utterances of 10-20 s, one per
# speaker) and 16 utterances (~2 minutes) in each of dev-clean and test-clean.
TINY_CORPUS_OPTIONS = {
    "hours": 0.05,
    "seed": 1234,
    "splits": ("train-clean-100", "dev-clean", "test-clean"),
    "eval_utts": 16,
}


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder that contains ``LibriSpeech/{train-clean-100,dev-clean,test-clean}``.

    Shared by the whole session: tests must not modify it (copy what you need
    to change into ``tmp_path``).
    """
    from make_synthetic_librispeech import make_corpus

    out = tmp_path_factory.mktemp("tiny_corpus")
    make_corpus(out, progress=False, **TINY_CORPUS_OPTIONS)
    return out


def _trained_model(
    tmp_path_factory, tiny_corpus, yaml: str, test: bool, *extra: str
) -> Path:
    """A tiny model of ``yaml`` trained on the tiny corpus and exported (and
    tested on test-clean if ``test``): the recipe's output folder (the model
    in ``<run>/model``)."""
    from test_recipe import SHORT, SPLITS, TINY_MODEL, run_recipe

    out = tmp_path_factory.mktemp(Path(yaml).stem) / "run"
    data = Path(tiny_corpus) / "LibriSpeech"
    splits = SPLITS if test else [*SPLITS[:2], "--test_splits=[]"]
    run_recipe(yaml, data, out, *splits, *SHORT, *TINY_MODEL, *extra)
    return out


@pytest.fixture(scope="session")
def streaming_run(tmp_path_factory, tiny_corpus) -> Path:
    """The streaming recipe (hyperconformer_8M_streaming.yaml), tiny, trained
    for two steps, tested on test-clean and exported; shared by the tests of
    streaming models, which must not modify it."""
    return _trained_model(
        tmp_path_factory,
        tiny_corpus,
        "hyperconformer_8M_streaming.yaml",
        True,
        "--number_of_epochs=1",
        "--optimizer_step_limit=2",
    )


@pytest.fixture(scope="session")
def offline_model(tmp_path_factory, tiny_corpus) -> Path:
    """A tiny offline model folder (hyperconformer_8M.yaml, one step)."""
    run = _trained_model(
        tmp_path_factory,
        tiny_corpus,
        "hyperconformer_8M.yaml",
        False,
        "--number_of_epochs=1",
        "--optimizer_step_limit=1",
    )
    return run / "model"


def train_sentencepiece(
    sentences: Iterable[str], vocab_size: int, path: Path | None = None
) -> bytes:
    """A unigram SentencePiece model of ``sentences`` with the recipe's ids
    (unk 0, bos 1, eos 2, no pad); its bytes, also written to ``path``."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    if path is not None:
        path.write_bytes(model.getvalue())
    return model.getvalue()

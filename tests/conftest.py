"""Shared pytest fixtures.

``tiny_corpus`` builds a small synthetic LibriSpeech-format corpus once per test
session (a couple of seconds on two cores) for every test that needs real
speech: data preparation, training smoke tests, decoding.
"""

from __future__ import annotations

import sys
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

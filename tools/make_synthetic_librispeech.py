"""Build a LibriSpeech-format corpus of real synthetic speech with eSpeak NG.

Utterances are shaped like LibriSpeech's: one to several sentences by one
speaker, joined with pauses (train mostly 10-16 s, dev/test 2 to 35 s), from
a random English grammar of about 3,000 words; speakers are eSpeak NG English
voices x voice variants x pitch, range and rate, with whole variants held out
for dev and test.  The tool also writes noise recordings and room impulse
responses for training augmentation.  No download; byte-for-byte
deterministic for a seed.  The parts live in the ``synthetic`` package next
to this script: ``text`` (grammar), ``voices`` (speakers), ``plan`` (what
each utterance says), ``speech`` (eSpeak NG), ``augmentation`` (noise and
rooms), ``layout`` (files on disk) and ``corpus`` (the driver).

Command line::

    python tools/make_synthetic_librispeech.py --out data/synth --hours 1 --seed 1234

From Python::

    >>> from make_synthetic_librispeech import make_corpus
    >>> summary = make_corpus("data/synth", hours=0.01, eval_utts=4)  # doctest: +SKIP
    >>> summary["splits"]["train-clean-100"]["utterances"] > 0  # doctest: +SKIP
    True
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from synthetic.corpus import CORPUS_VERSION, DEFAULT_SPLITS, format_summary, make_corpus
from synthetic.layout import COMPLETE_MARKER, PARTIAL_MARKER, read_word_times
from synthetic.speech import SynthesisError

__all__ = [
    "COMPLETE_MARKER",
    "CORPUS_VERSION",
    "DEFAULT_SPLITS",
    "PARTIAL_MARKER",
    "SynthesisError",
    "format_summary",
    "main",
    "make_corpus",
    "read_word_times",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to hold LibriSpeech/")
    parser.add_argument(
        "--hours", type=float, default=1.0, help="audio per train split"
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--splits", nargs="+", default=list(DEFAULT_SPLITS), metavar="SPLIT"
    )
    parser.add_argument(
        "--eval-fraction",
        type=float,
        default=0.05,
        help="dev/test size as a fraction of the train audio (default 0.05)",
    )
    parser.add_argument(
        "--eval-utts", type=int, default=None, help="fixed dev/test size in utterances"
    )
    parser.add_argument("--workers", type=int, default=None, help="default: all cores")
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        summary = make_corpus(
            args.out,
            hours=args.hours,
            seed=args.seed,
            splits=args.splits,
            eval_fraction=args.eval_fraction,
            eval_utts=args.eval_utts,
            workers=args.workers,
            progress=not args.quiet,
            force=args.force,
        )
    except (SynthesisError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build the whole corpus: plan, synthesize in parallel, write the layout.

The output is byte-for-byte deterministic for a given set of arguments,
whatever the number of worker processes.

>>> from synthetic.corpus import make_corpus
>>> summary = make_corpus("data/synth", hours=0.01, eval_utts=4)  # doctest: +SKIP
>>> summary["splits"]["train-clean-100"]["utterances"] > 0  # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections import deque
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .augmentation import write_augmentation_data
from .layout import (
    AUGMENTATION_DIR,
    COMPLETE_MARKER,
    PARTIAL_MARKER,
    write_speakers_txt,
    write_transcripts,
    write_word_times,
)
from .plan import UttSpec, plan_split
from .speech import SAMPLE_RATE, SynthesisError, WordTimes, synthesize_chunk
from .text import vocabulary
from .voices import make_speakers, split_role

# Bump when anything changes the generated audio or text, so that an existing
# corpus made by an older generator is rebuilt instead of silently reused.
# 2: reference word timings (*.words.txt); the audio is that of version 1.
# 3: multi-sentence utterances shaped like LibriSpeech's, a 3,000-word
#    grammar, held-out voice variants, noise and room impulse responses.
CORPUS_VERSION = 3

DEFAULT_SPLITS = ("train-clean-100", "dev-clean", "test-clean")

# Utterances synthesized by one fresh eSpeak NG instance (see speech.py).
# Part of the corpus definition: changing it changes the audio.
UTTERANCES_PER_ENGINE = 6


# Driver
# --------------------------------------------------------------------------
class _InlinePool:
    """Stand-in for a process pool that runs each task when it is asked for."""

    class _Result:
        def __init__(self, fn: Any, args: tuple) -> None:
            self._fn, self._args = fn, args

        def get(self) -> Any:
            return self._fn(*self._args)

    def apply_async(self, fn: Any, args: tuple) -> _InlinePool._Result:
        return self._Result(fn, args)

    def __enter__(self) -> _InlinePool:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass

    def terminate(self) -> None:
        pass


def _make_pool(workers: int) -> Any:
    # fork: no re-import of the caller's __main__ (spawn would need an
    # ``if __name__ == "__main__"`` guard in every script that calls
    # make_corpus).  Each chunk loads its own eSpeak instance, so whatever the
    # parent did before forking cannot change the audio.
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork").Pool(processes=workers)
    return _InlinePool()


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _generate_split(
    root: Path,
    split: str,
    specs: Iterator[UttSpec],
    pool: Any,
    workers: int,
    target_seconds: float | None,
    target_utts: int | None,
    progress: bool,
    words: dict[str, WordTimes],
) -> list[tuple[UttSpec, int]]:
    """Synthesize a prefix of ``specs`` until the target is reached.

    Fills ``words`` with each accepted utterance's word times.
    """
    if target_utts is not None:
        specs = islice(specs, target_utts)
        bar = tqdm(total=target_utts, desc=split, unit="utt", disable=not progress)
    else:
        bar = tqdm(
            total=round(target_seconds or 0.0),
            desc=split,
            unit="s",
            disable=not progress,
            bar_format=(
                "{l_bar}{bar}| {n:.0f}/{total_fmt} s of audio [{elapsed}<{remaining}]"
            ),
        )
    accepted: list[tuple[UttSpec, int]] = []
    seconds = 0.0
    pending: deque = deque()
    exhausted = False

    def done() -> bool:
        if target_utts is not None:
            return len(accepted) >= target_utts
        return seconds >= (target_seconds or 0.0)

    try:
        while not done():
            # Keep every worker busy, with one chunk queued behind each.
            while not exhausted and len(pending) < 2 * workers:
                if target_seconds is not None and pending:
                    # Don't queue much more audio than the target still needs:
                    # extra chunks would be synthesized only to be discarded.
                    mean = seconds / len(accepted) if accepted else 10.0
                    queued = sum(len(c) for c, _ in pending) * mean
                    if queued > 1.2 * (target_seconds - seconds) + 2 * mean:
                        break
                chunk = list(islice(specs, UTTERANCES_PER_ENGINE))
                if not chunk:
                    exhausted = True
                    break
                pending.append((chunk, pool.apply_async(synthesize_chunk, (chunk,))))
            if not pending:
                break
            chunk, result = pending.popleft()
            for spec, (flac, n_samples, times) in zip(chunk, result.get(), strict=True):
                if done():
                    break
                path = root / spec.rel_path
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(flac)
                accepted.append((spec, n_samples))
                words[spec.utt_id] = times
                seconds += n_samples / SAMPLE_RATE
                step = 1 if target_utts is not None else n_samples / SAMPLE_RATE
                bar.update(min(step, max(0, bar.total - bar.n)))  # no overshoot
    finally:
        bar.close()
    return accepted


def make_corpus(
    out_dir: str | os.PathLike,
    hours: float = 1.0,
    seed: int = 1234,
    splits: Sequence[str] = DEFAULT_SPLITS,
    eval_fraction: float = 0.05,
    eval_utts: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Create ``out_dir/LibriSpeech/<split>/...`` and return a summary.

    Args:
        out_dir: folder that will contain ``LibriSpeech/``.
        hours: audio per ``train*`` split, in hours.
        seed: everything (speakers, sentences, noise) derives from it.
        splits: LibriSpeech split names; the prefix (train/dev/test) picks the
            role, and ``*-other`` splits get noisy audio.
        eval_fraction: size of each dev/test split as a fraction of the train
            audio, used unless ``eval_utts`` is given.
        eval_utts: fixed number of utterances in each dev/test split.
        workers: processes to use (default: all available cores).  The output
            does not depend on it.
        progress: show tqdm progress bars.
        force: rebuild even when a complete corpus with the same options is
            already there.

    Returns:
        ``{"root", "seed", "skipped", "seconds", "vocabulary", "splits":
        {split: {"utterances", "hours", "speakers", "chapters"}}}``; ``seconds``
        is the wall time spent generating.

    An existing complete corpus (its marker file is written last) with the same
    options is reused.  A partial or different corpus made by this tool is
    replaced; split folders not made by this tool are never deleted.

    >>> make_corpus("/tmp/synth", hours=0.01, eval_utts=4)["skipped"]  # doctest: +SKIP
    False
    """
    splits = list(dict.fromkeys(splits))
    if not splits:
        raise ValueError("no splits requested")
    for split in splits:
        split_role(split)
    if hours <= 0:
        raise ValueError(f"hours must be positive, got {hours}")
    if eval_utts is not None and eval_utts < 1:
        raise ValueError(f"eval_utts must be at least 1, got {eval_utts}")
    root = Path(out_dir).resolve() / "LibriSpeech"
    options = {
        "version": CORPUS_VERSION,
        "hours": hours,
        "seed": seed,
        "splits": splits,
        "eval_fraction": eval_fraction,
        "eval_utts": eval_utts,
    }
    marker, partial = root / COMPLETE_MARKER, root / PARTIAL_MARKER
    if marker.exists() and not force:
        previous = json.loads(marker.read_text())
        if previous.get("options") == options and all(
            (root / s).is_dir() for s in splits
        ):
            return {
                **previous["summary"],
                "root": str(root.parent),
                "skipped": True,
                "seconds": 0.0,
            }
    ours = marker.exists() or partial.exists()
    for split in splits:
        if (root / split).exists() and not ours:
            raise FileExistsError(
                f"{root / split} exists and was not made by this tool; "
                "choose another --out folder"
            )
    root.mkdir(parents=True, exist_ok=True)
    partial.write_text("generation in progress\n")
    marker.unlink(missing_ok=True)
    for folder in [*splits, AUGMENTATION_DIR]:
        shutil.rmtree(root / folder, ignore_errors=True)

    start = time.monotonic()
    workers = workers or _default_workers()
    speakers = make_speakers(splits, seed)
    # Train first: the dev/test size may be a fraction of it.
    ordered = sorted(splits, key=lambda s: split_role(s) != "train")
    results: dict[str, list[tuple[UttSpec, int]]] = {}
    words: dict[str, WordTimes] = {}
    train_seconds = 0.0
    with _make_pool(workers) as pool:
        for split in ordered:
            stream = plan_split(split, speakers[split], seed)
            if split_role(split) == "train":
                target_s, target_n = hours * 3600.0, None
            elif eval_utts is not None:
                target_s, target_n = None, eval_utts
            else:
                base = train_seconds or hours * 3600.0
                target_s, target_n = eval_fraction * base, None
            try:
                results[split] = _generate_split(
                    root,
                    split,
                    stream,
                    pool,
                    workers,
                    target_s,
                    target_n,
                    progress,
                    words,
                )
            except SynthesisError as exc:
                raise SynthesisError(f"{split}: {exc}") from None
            if split_role(split) == "train":
                train_seconds += sum(n for _, n in results[split]) / SAMPLE_RATE
        pool.terminate()  # drop chunks synthesized beyond the targets

    summary_splits: dict[str, dict[str, Any]] = {}
    minutes: dict[int, float] = {}
    for split in splits:
        accepted = results[split]
        specs = [spec for spec, _ in accepted]
        write_transcripts(root, specs)
        write_word_times(root, specs, words)
        for spec, n in accepted:
            spk = int(spec.utt_id.split("-")[0])
            minutes[spk] = minutes.get(spk, 0.0) + n / SAMPLE_RATE / 60.0
        summary_splits[split] = {
            "utterances": len(accepted),
            "hours": round(sum(n for _, n in accepted) / SAMPLE_RATE / 3600.0, 4),
            "speakers": len({s.utt_id.split("-")[0] for s, _ in accepted}),
            "chapters": len({s.utt_id.rsplit("-", 1)[0] for s, _ in accepted}),
            "mean_s": round(
                sum(n for _, n in accepted) / len(accepted) / SAMPLE_RATE, 2
            ),
            "max_s": round(max(n for _, n in accepted) / SAMPLE_RATE, 2),
        }
    write_speakers_txt(root, speakers, minutes)
    augmentation = write_augmentation_data(root / AUGMENTATION_DIR, seed)
    # The marker holds no absolute path, so that same options -> same bytes.
    summary = {
        "seed": seed,
        "splits": summary_splits,
        "vocabulary": len(vocabulary()),
        "augmentation": augmentation,
    }
    marker.write_text(
        json.dumps({"options": options, "summary": summary}, indent=2) + "\n"
    )
    partial.unlink()
    return {
        **summary,
        "root": str(root.parent),
        "skipped": False,
        "seconds": round(time.monotonic() - start, 2),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable table of a :func:`make_corpus` summary."""
    lines = [f"LibriSpeech-format corpus in {summary['root']}/LibriSpeech"]
    if summary.get("skipped"):
        lines[0] += " (already complete, nothing to do)"
    lines.append(
        f"{'split':<18}{'utts':>7}{'hours':>9}{'speakers':>10}{'chapters':>10}"
        f"{'mean s':>8}{'max s':>8}"
    )
    for split, info in summary["splits"].items():
        lines.append(
            f"{split:<18}{info['utterances']:>7}{info['hours']:>9.3f}"
            f"{info['speakers']:>10}{info['chapters']:>10}"
            f"{info['mean_s']:>8.1f}{info['max_s']:>8.1f}"
        )
    lines.append(f"vocabulary: {summary['vocabulary']} words, seed {summary['seed']}")
    if not summary.get("skipped"):
        lines.append(f"generated in {summary['seconds']:.1f} s")
    return "\n".join(lines)

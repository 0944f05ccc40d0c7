"""What each utterance will say, by whom, and how long it will be.

An utterance is one to several sentences by one speaker, with a pause after
each sentence, sized to a duration drawn from LibriSpeech's distribution for
its split: train-clean-100 mostly 10-16 s (mean 12.7 s, longest about 25 s),
dev/test from 2 s to about 35 s (mean 7.4 s).  The plan is an endless,
deterministic stream: any prefix of it is a corpus.

>>> from synthetic.voices import make_speakers
>>> speakers = make_speakers(["test-clean"], 0)["test-clean"]
>>> first = next(plan_split("test-clean", speakers, 0))
>>> len(first.sentences) == len(first.pauses_s) + 1
True
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .text import make_sentence
from .voices import Speaker, split_role

UTTS_PER_CHAPTER = 20
# eSpeak speaks this grammar's words at about 0.95 x 60 / rate seconds each
# (measured on the corpus); used to size utterances before synthesis.
SECONDS_PER_WORD_AT_1_WPM = 0.95 * 60.0
PAUSE_S = (0.25, 0.8)  # silence added between sentences, beyond eSpeak's own


@dataclass(frozen=True)
class UttSpec:
    """Everything a worker needs to synthesize one utterance."""

    utt_id: str
    rel_path: str
    transcript: str
    sentences: tuple[str, ...]  # text for eSpeak, one entry per sentence
    pauses_s: tuple[float, ...]  # silence after each sentence but the last
    voice_name: str
    rate: int
    pitch: int
    pitch_range: int
    level: float
    snr_db: float
    noise_seed: int
    lead_s: float  # silence before and after the speech, as in read speech
    trail_s: float


def target_seconds(role: str, rng: random.Random) -> float:
    """A duration drawn from LibriSpeech's shape for ``role``.

    >>> rng = random.Random(0)
    >>> 2.0 <= min(target_seconds("test", rng) for _ in range(100))
    True
    """
    if role == "train":
        r = rng.random()
        if r < 0.7:
            return rng.uniform(10.0, 16.5)
        if r < 0.8:
            return rng.uniform(16.5, 25.0)
        return rng.uniform(2.0, 10.0)
    # Log-normal, median 6 s: mean about 7.4 s, a long tail to 35 s.
    return min(35.0, max(2.0, math.exp(rng.gauss(math.log(6.0), 0.62))))


def sentence_role(transcript: str, seed: int) -> str:
    """Which role a sentence belongs to: 1/20 dev-only, 1/20 test-only, so
    that no dev or test sentence is ever heard in training."""
    digest = hashlib.blake2b(f"{seed}:{transcript}".encode(), digest_size=8)
    bucket = int.from_bytes(digest.digest(), "big") % 20
    return {0: "dev", 1: "test"}.get(bucket, "train")


def _draw_sentence(
    rng: random.Random, role: str, seed: int, seen_eval: set[str]
) -> tuple[str, str]:
    while True:
        transcript, spoken = make_sentence(rng)
        if sentence_role(transcript, seed) != role:
            continue
        if role == "train" or transcript not in seen_eval:
            if role != "train":
                seen_eval.add(transcript)
            return transcript, spoken


def plan_split(split: str, speakers: Sequence[Speaker], seed: int) -> Iterator[UttSpec]:
    """Endless, deterministic stream of utterances for one split.

    Speakers take turns (shuffled each round), so any prefix of the stream has
    as many speakers as possible; every speaker's utterances fill chapters of
    ``UTTS_PER_CHAPTER`` in order.
    """
    role = split_role(split)
    rng = random.Random(f"plan:{seed}:{split}")
    noisy = split.endswith("-other")
    counts = {s.spk_id: 0 for s in speakers}
    seen_eval: set[str] = set()
    order = list(speakers)
    while True:
        rng.shuffle(order)
        for spk in order:
            # Small per-utterance jitter so a speaker is not a metronome.
            rate = spk.rate + rng.randint(-8, 8)
            goal = target_seconds(role, rng)
            transcripts: list[str] = []
            sentences: list[str] = []
            pauses: list[float] = []
            seconds = 0.0
            while True:
                transcript, spoken = _draw_sentence(rng, role, seed, seen_eval)
                words = len(transcript.split())
                need = words * SECONDS_PER_WORD_AT_1_WPM / rate
                # Stop before the sentence that would overshoot the most.
                if sentences and seconds + need / 2 > goal:
                    break
                if sentences:
                    pauses.append(round(rng.uniform(*PAUSE_S), 3))
                    seconds += pauses[-1]
                transcripts.append(transcript)
                sentences.append(spoken)
                seconds += need
                if seconds >= goal:
                    break
            n = counts[spk.spk_id]
            counts[spk.spk_id] += 1
            chapter = spk.chapter_base + min(n // UTTS_PER_CHAPTER, 99)
            utt = n - min(n // UTTS_PER_CHAPTER, 99) * UTTS_PER_CHAPTER
            utt_id = f"{spk.spk_id}-{chapter}-{utt:04d}"
            yield UttSpec(
                utt_id=utt_id,
                rel_path=f"{split}/{spk.spk_id}/{chapter}/{utt_id}.flac",
                transcript=" ".join(transcripts),
                sentences=tuple(sentences),
                pauses_s=tuple(pauses),
                voice_name=spk.voice_name,
                rate=rate,
                pitch=spk.pitch,
                pitch_range=spk.pitch_range,
                level=spk.level,
                # "other" splits get audible noise; clean ones a faint floor
                # so that no file is digital silence between words.
                snr_db=rng.uniform(8.0, 20.0) if noisy else rng.uniform(45.0, 55.0),
                noise_seed=rng.getrandbits(63),
                lead_s=round(rng.uniform(0.1, 0.5), 3),
                trail_s=round(rng.uniform(0.1, 0.5), 3),
            )

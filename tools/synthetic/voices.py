"""Synthetic speakers: eSpeak NG English voices x voice variants x prosody.

A speaker is an accent (eSpeak voice), a timbre (voice variant), a pitch, a
pitch range, a speaking rate and a loudness.  Whole variants are held out:
the dev and test speakers use variants that no training speaker uses, with
every accent still present in every split.

Every name below is accepted by ``espeak_SetVoiceByName`` in eSpeak NG 1.52
(a refused name silently keeps the previous voice; the synthesizer checks
the return code).

>>> parts = variant_partition(1234)
>>> set(parts["test"]) & set(parts["train"]), set(parts["dev"]) & set(parts["test"])
(set(), set())
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# British English is "en": "en-gb" is refused by eSpeak NG 1.52.
VOICES = (
    "en-us",
    "en",
    "en-gb-scotland",
    "en-029",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-us-nyc",
)
# The numbered variants; dev and test each hold out one male and one female.
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
# Named variants (espeak-ng-data/voices/!v), heard in training only.
NAMED_MALE = (
    "klatt", "klatt2", "klatt3", "klatt4", "grandpa", "ian", "john", "max",
    "michel", "norbert", "paul", "quincy", "rob", "robert", "travis", "victor",
    "zac", "Alex", "Andy", "Gene", "Lee", "Mike", "Hugo", "ed", "edward",
    "david", "adam", "benjamin", "caleb", "Michael",
)  # fmt: skip
NAMED_FEMALE = ("anika", "aunty", "belinda", "grandma", "linda", "steph")
VARIANTS = MALE_VARIANTS + FEMALE_VARIANTS + NAMED_MALE + NAMED_FEMALE
FEMALE = frozenset(FEMALE_VARIANTS + NAMED_FEMALE)

# Speakers made from each voice/variant pair, by role.
SPEAKERS_PER_PAIR = {"train": 1, "dev": 2, "test": 2}


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an eSpeak voice+variant at a pitch and rate."""

    spk_id: int
    voice: str
    variant: str
    pitch: int  # espeakPITCH, 0-100
    pitch_range: int  # espeakRANGE, 0-100
    rate: int  # espeakRATE, words per minute
    level: float  # RMS of the speech, full scale = 1
    chapter_base: int

    @property
    def sex(self) -> str:
        return "F" if self.variant in FEMALE else "M"

    @property
    def voice_name(self) -> str:
        return f"{self.voice}+{self.variant}"


def split_role(split: str) -> str:
    """``train``, ``dev`` or ``test``, from a LibriSpeech split name.

    >>> split_role("test-other")
    'test'
    """
    role = split.split("-")[0]
    if role not in ("train", "dev", "test"):
        raise ValueError(
            f"split {split!r} must start with 'train', 'dev' or 'test' "
            "(for example train-clean-100, dev-clean, test-other)"
        )
    return role


def variant_partition(seed: int) -> dict[str, tuple[str, ...]]:
    """Variants of each role: dev and test each get one male and one female
    numbered variant that training never uses."""
    rng = random.Random(f"variants:{seed}")
    male, female = list(MALE_VARIANTS), list(FEMALE_VARIANTS)
    rng.shuffle(male)
    rng.shuffle(female)
    dev, test = (male[0], female[0]), (male[1], female[1])
    train = tuple(v for v in VARIANTS if v not in dev + test)
    return {"train": train, "dev": dev, "test": test}


def voice_pairs(seed: int) -> dict[str, list[tuple[str, str]]]:
    """(voice, variant) pairs of each role: every accent with every variant
    of the role."""
    parts = variant_partition(seed)
    return {role: [(v, x) for v in VOICES for x in parts[role]] for role in parts}


def make_speakers(splits: list[str], seed: int) -> dict[str, list[Speaker]]:
    """Create the speakers of every split, with corpus-unique ids."""
    pairs = voice_pairs(seed)
    rng = random.Random(f"speakers:{seed}")
    per_split = [
        len(pairs[split_role(s)]) * SPEAKERS_PER_PAIR[split_role(s)] for s in splits
    ]
    spk_ids = rng.sample(range(100, 10000), sum(per_split))
    chapter_bases = rng.sample(range(10, 9000), sum(per_split))
    speakers: dict[str, list[Speaker]] = {}
    k = 0
    for split in splits:
        srng = random.Random(f"speakers:{seed}:{split}")
        speakers[split] = []
        for voice, variant in pairs[split_role(split)]:
            for _ in range(SPEAKERS_PER_PAIR[split_role(split)]):
                speakers[split].append(
                    Speaker(
                        spk_id=spk_ids[k],
                        voice=voice,
                        variant=variant,
                        pitch=srng.randint(25, 75),
                        pitch_range=srng.randint(30, 90),
                        rate=srng.randint(140, 200),
                        level=round(srng.uniform(0.03, 0.12), 4),
                        chapter_base=chapter_bases[k] * 100,
                    )
                )
                k += 1
    return speakers

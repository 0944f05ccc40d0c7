"""Build a small LibriSpeech-format corpus of real synthetic speech with eSpeak NG.

The audio is synthesized by the eSpeak NG library shipped in the PyPI package
``espeakng_loader`` (called through ``ctypes``), resampled from 22.05 kHz to
16 kHz and stored as 16-bit mono FLAC in exactly the LibriSpeech layout::

    OUT/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac
    OUT/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

Sentences come from a small English grammar (a few hundred words) so that a
small ASR model can learn the task in about an hour of audio.  A "speaker" is a
voice (accent) x variant (timbre) x pitch x rate combination.  The voice/variant
pairs of the dev and test speakers never occur in train, and no dev or test
sentence occurs in train.

The output is byte-for-byte deterministic for a given set of arguments, whatever
the number of worker processes.

Command line::

    python tools/make_synthetic_librispeech.py --out data/synth --hours 1

From Python::

    >>> from make_synthetic_librispeech import make_corpus
    >>> summary = make_corpus("data/synth", hours=0.01, eval_utts=4)  # doctest: +SKIP
    >>> summary["splits"]["train-clean-100"]["utterances"] > 0  # doctest: +SKIP
    True
"""

from __future__ import annotations

import _ctypes
import argparse
import ctypes
import hashlib
import io
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

# Bump when anything changes the generated audio or text, so that an existing
# corpus made by an older generator is rebuilt instead of silently reused.
# 2: reference word timings (*.words.txt); the audio is that of version 1.
CORPUS_VERSION = 2

SAMPLE_RATE = 16000
DEFAULT_SPLITS = ("train-clean-100", "dev-clean", "test-clean")
COMPLETE_MARKER = ".synthetic_corpus.json"
PARTIAL_MARKER = ".synthetic_corpus.partial"

# Utterances synthesized by one fresh eSpeak NG instance.  eSpeak keeps internal
# synthesis state across calls (the same text twice in one process gives
# slightly different samples, and neither re-initialising nor
# espeak_ng_SetRandSeed resets it), so every fixed-size chunk loads its own
# private copy of the library: the bytes then depend only on the chunk plan,
# not on the number of workers or on what ran before.  Part of the corpus
# definition: changing it changes the audio.
CHUNK_SIZE = 24
UTTS_PER_CHAPTER = 20
MIN_WORDS, MAX_WORDS = 3, 15

# eSpeak NG 1.52 English voices that are accepted by espeak_SetVoiceByName
# ("en-gb" is refused: British English is "en").
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
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
VARIANTS = MALE_VARIANTS + FEMALE_VARIANTS

# Distinct speakers (pitch/rate settings) made from each voice/variant pair.
SPEAKERS_PER_PAIR = 2

# --------------------------------------------------------------------------
# Grammar.  Upper-case words as in LibriSpeech transcripts.  Each template is a
# list of slots; a slot in braces draws from WORDS, anything else is literal.
# Nouns are (singular, plural); verbs are (base, past).
# --------------------------------------------------------------------------
NOUNS: tuple[tuple[str, str], ...] = (
    ("CAT", "CATS"), ("DOG", "DOGS"), ("HORSE", "HORSES"), ("BIRD", "BIRDS"),
    ("FISH", "FISH"), ("SHEEP", "SHEEP"), ("COW", "COWS"), ("GOAT", "GOATS"),
    ("RABBIT", "RABBITS"), ("MOUSE", "MICE"), ("BOOK", "BOOKS"),
    ("LETTER", "LETTERS"), ("TABLE", "TABLES"), ("CHAIR", "CHAIRS"),
    ("WINDOW", "WINDOWS"), ("DOOR", "DOORS"), ("HOUSE", "HOUSES"),
    ("CAR", "CARS"), ("TRAIN", "TRAINS"), ("BOAT", "BOATS"), ("SHIP", "SHIPS"),
    ("APPLE", "APPLES"), ("ORANGE", "ORANGES"), ("CAKE", "CAKES"),
    ("BOTTLE", "BOTTLES"), ("CUP", "CUPS"), ("GLASS", "GLASSES"),
    ("PLATE", "PLATES"), ("KNIFE", "KNIVES"), ("BOX", "BOXES"), ("BAG", "BAGS"),
    ("BASKET", "BASKETS"), ("BLANKET", "BLANKETS"), ("CANDLE", "CANDLES"),
    ("CLOCK", "CLOCKS"), ("COAT", "COATS"), ("HAT", "HATS"), ("SHOE", "SHOES"),
    ("KEY", "KEYS"), ("LAMP", "LAMPS"), ("MIRROR", "MIRRORS"),
    ("PENCIL", "PENCILS"), ("PICTURE", "PICTURES"), ("RING", "RINGS"),
    ("ROPE", "ROPES"), ("STONE", "STONES"), ("TREE", "TREES"),
    ("FLOWER", "FLOWERS"), ("LEAF", "LEAVES"), ("CHILD", "CHILDREN"),
    ("MAN", "MEN"), ("WOMAN", "WOMEN"), ("DOCTOR", "DOCTORS"),
    ("TEACHER", "TEACHERS"), ("SOLDIER", "SOLDIERS"), ("FARMER", "FARMERS"),
    ("SAILOR", "SAILORS"), ("KING", "KINGS"), ("QUEEN", "QUEENS"),
    ("BAKER", "BAKERS"), ("DRIVER", "DRIVERS"), ("STUDENT", "STUDENTS"),
    ("FRIEND", "FRIENDS"), ("STRANGER", "STRANGERS"), ("CAPTAIN", "CAPTAINS"),
    ("MERCHANT", "MERCHANTS"), ("PAINTER", "PAINTERS"), ("HUNTER", "HUNTERS"),
    ("GUARD", "GUARDS"), ("NURSE", "NURSES"), ("LAWYER", "LAWYERS"),
    ("WHEEL", "WHEELS"), ("BRIDGE", "BRIDGES"), ("GARDEN", "GARDENS"),
    ("KITCHEN", "KITCHENS"), ("SCHOOL", "SCHOOLS"), ("CHURCH", "CHURCHES"),
    ("FOREST", "FORESTS"), ("VILLAGE", "VILLAGES"), ("MOUNTAIN", "MOUNTAINS"),
    ("RIVER", "RIVERS"), ("OFFICE", "OFFICES"), ("HOSPITAL", "HOSPITALS"),
    ("MUSEUM", "MUSEUMS"), ("CASTLE", "CASTLES"), ("FARM", "FARMS"),
    ("BEACH", "BEACHES"), ("MARKET", "MARKETS"), ("STATION", "STATIONS"),
    ("LIBRARY", "LIBRARIES"), ("HARBOR", "HARBORS"), ("ISLAND", "ISLANDS"),
    ("HILL", "HILLS"), ("LAKE", "LAKES"), ("ROAD", "ROADS"), ("ROOM", "ROOMS"),
    ("SHOP", "SHOPS"), ("TOWER", "TOWERS"), ("WALL", "WALLS"),
    ("FENCE", "FENCES"), ("CORNER", "CORNERS"), ("FIELD", "FIELDS"),
)  # fmt: skip
PEOPLE = (
    "CHILD", "MAN", "WOMAN", "DOCTOR", "TEACHER", "SOLDIER", "FARMER", "SAILOR",
    "KING", "QUEEN", "BAKER", "DRIVER", "STUDENT", "FRIEND", "STRANGER",
    "CAPTAIN", "MERCHANT", "PAINTER", "HUNTER", "GUARD", "NURSE", "LAWYER",
)  # fmt: skip
ANIMALS = (
    "CAT", "DOG", "HORSE", "BIRD", "FISH", "SHEEP", "COW", "GOAT", "RABBIT",
    "MOUSE",
)  # fmt: skip
LOCATIONS = (
    "BRIDGE", "GARDEN", "KITCHEN", "SCHOOL", "CHURCH", "FOREST", "VILLAGE",
    "MOUNTAIN", "RIVER", "OFFICE", "HOSPITAL", "MUSEUM", "CASTLE", "FARM",
    "BEACH", "MARKET", "STATION", "LIBRARY", "HARBOR", "ISLAND", "HILL", "LAKE",
    "ROAD", "ROOM", "SHOP", "TOWER", "WALL", "FENCE", "CORNER", "FIELD",
    "HOUSE", "TABLE", "WINDOW", "DOOR", "TREE",
)  # fmt: skip
TRANSITIVE: tuple[tuple[str, str], ...] = (
    ("SEE", "SAW"), ("FIND", "FOUND"), ("TAKE", "TOOK"), ("BRING", "BROUGHT"),
    ("CARRY", "CARRIED"), ("OPEN", "OPENED"), ("PAINT", "PAINTED"),
    ("WASH", "WASHED"), ("SELL", "SOLD"), ("BUY", "BOUGHT"), ("BUILD", "BUILT"),
    ("DROP", "DROPPED"), ("HOLD", "HELD"), ("LOSE", "LOST"), ("MOVE", "MOVED"),
    ("PUSH", "PUSHED"), ("PULL", "PULLED"), ("CLEAN", "CLEANED"),
    ("FOLLOW", "FOLLOWED"), ("WATCH", "WATCHED"), ("HIDE", "HID"),
    ("CATCH", "CAUGHT"), ("THROW", "THREW"), ("KEEP", "KEPT"), ("FIX", "FIXED"),
    ("MEET", "MET"), ("VISIT", "VISITED"), ("SHOW", "SHOWED"),
    ("COUNT", "COUNTED"), ("CHOOSE", "CHOSE"), ("BORROW", "BORROWED"),
    ("FEED", "FED"), ("FORGET", "FORGOT"), ("REMEMBER", "REMEMBERED"),
    ("DRAW", "DREW"), ("KICK", "KICKED"), ("LIFT", "LIFTED"), ("SEND", "SENT"),
    ("STEAL", "STOLE"), ("WANT", "WANTED"), ("NEED", "NEEDED"),
    ("LIKE", "LIKED"), ("CALL", "CALLED"), ("HELP", "HELPED"),
)  # fmt: skip
INTRANSITIVE: tuple[tuple[str, str], ...] = (
    ("WALK", "WALKED"), ("RUN", "RAN"), ("SLEEP", "SLEPT"), ("LAUGH", "LAUGHED"),
    ("SING", "SANG"), ("DANCE", "DANCED"), ("WAIT", "WAITED"),
    ("SMILE", "SMILED"), ("JUMP", "JUMPED"), ("SWIM", "SWAM"),
    ("ARRIVE", "ARRIVED"), ("STAY", "STAYED"), ("WORK", "WORKED"),
    ("CRY", "CRIED"), ("SHOUT", "SHOUTED"), ("WHISPER", "WHISPERED"),
    ("SIT", "SAT"), ("STAND", "STOOD"), ("FALL", "FELL"), ("PLAY", "PLAYED"),
    ("REST", "RESTED"), ("LISTEN", "LISTENED"), ("TALK", "TALKED"),
    ("SPEAK", "SPOKE"), ("WRITE", "WROTE"), ("COOK", "COOKED"),
)  # fmt: skip
WORDS: dict[str, tuple[str, ...]] = {
    "NAME": (
        "JOHN", "MARY", "PETER", "SARAH", "DAVID", "EMMA", "JAMES", "ANNA",
        "THOMAS", "LUCY", "HENRY", "ALICE", "GEORGE", "CLARA", "ROBERT", "HELEN",
        "WILLIAM", "GRACE", "EDWARD", "MARTHA", "CHARLES", "JANE", "ARTHUR",
        "ROSE", "FRANK", "EMILY", "WALTER", "NORA", "SAMUEL", "KATE", "OLIVER",
        "LAURA", "DANIEL", "SOPHIE", "MICHAEL", "RUTH",
    ),
    "CITY": (
        "LONDON", "PARIS", "BOSTON", "DUBLIN", "BERLIN", "MADRID", "ROME",
        "VIENNA", "OXFORD", "CHICAGO", "TORONTO", "SYDNEY", "LISBON", "PRAGUE",
        "DENVER", "GLASGOW", "EDINBURGH", "MOSCOW", "ATHENS", "CAIRO", "TOKYO",
        "VENICE", "FLORENCE", "MONTREAL",
    ),
    "ADJ": (
        "OLD", "YOUNG", "BIG", "SMALL", "LITTLE", "LARGE", "TALL", "SHORT",
        "LONG", "HEAVY", "DARK", "BRIGHT", "QUIET", "LOUD", "HAPPY", "SAD",
        "ANGRY", "TIRED", "HUNGRY", "BRAVE", "CLEVER", "GENTLE", "KIND", "PROUD",
        "STRANGE", "FAMOUS", "CHEAP", "EXPENSIVE", "BEAUTIFUL", "UGLY", "CLEAN",
        "DIRTY", "EMPTY", "FULL", "WARM", "COLD", "HOT", "WET", "DRY", "SOFT",
        "HARD", "SHARP", "ROUND", "FRESH", "BROKEN", "WOODEN", "GOLDEN",
        "SILENT", "NARROW", "WIDE", "ANCIENT", "MODERN", "LAZY", "BUSY", "RICH",
        "POOR", "SIMPLE", "SECRET", "LUCKY", "FRIENDLY",
    ),
    "COLOR": (
        "RED", "BLUE", "GREEN", "YELLOW", "BLACK", "WHITE", "BROWN", "GREY",
        "PURPLE", "PINK", "SILVER",
    ),
    "PREP": (
        "ON", "UNDER", "NEAR", "BEHIND", "BESIDE", "INSIDE", "ABOVE", "BELOW",
        "ACROSS", "AROUND", "INTO", "THROUGH", "TOWARD", "PAST", "OVER",
        "AGAINST", "ALONG", "BY",
    ),
    "ADV": (
        "SLOWLY", "QUICKLY", "QUIETLY", "CAREFULLY", "SUDDENLY", "HAPPILY",
        "SOFTLY", "LOUDLY", "GENTLY", "EARLY", "LATE", "AGAIN", "TOGETHER",
        "ALONE", "OUTSIDE",
    ),
    "FREQ": ("ALWAYS", "NEVER", "OFTEN", "SOMETIMES", "RARELY", "USUALLY"),
    "DAY": (
        "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY",
        "SUNDAY",
    ),
    "MONTH": (
        "JANUARY", "FEBRUARY", "MARCH", "APRIL", "MAY", "JUNE", "JULY",
        "AUGUST", "SEPTEMBER", "OCTOBER", "NOVEMBER", "DECEMBER",
    ),
    "PERIOD": ("MORNING", "AFTERNOON", "EVENING"),
    "SEASON": ("SPRING", "SUMMER", "AUTUMN", "WINTER"),
    "FAMILY": (
        "MOTHER", "FATHER", "BROTHER", "SISTER", "UNCLE", "AUNT", "COUSIN",
        "GRANDMOTHER", "GRANDFATHER", "SON", "DAUGHTER",
    ),
    "PRONOUN": ("HE", "SHE", "THEY", "WE", "I", "YOU"),
    "POSS": ("MY", "HIS", "HER", "OUR", "THEIR", "YOUR"),
    "FOOD": (
        "BREAD", "CHEESE", "SOUP", "RICE", "MILK", "TEA", "COFFEE", "BUTTER",
        "HONEY", "SUGAR", "WATER", "MEAT",
    ),
    "WEATHER": ("RAINING", "SNOWING", "WINDY", "CLOUDY", "SUNNY", "FOGGY"),
    "NOUN": tuple(s for s, _ in NOUNS),
    "NOUNS": tuple(p for _, p in NOUNS),
    "PERSON": PEOPLE,
    "ANIMAL": ANIMALS,
    "PLACE": LOCATIONS,
    "VT": tuple(b for b, _ in TRANSITIVE),
    "VT_PAST": tuple(p for _, p in TRANSITIVE),
    "VI": tuple(b for b, _ in INTRANSITIVE),
    "VI_PAST": tuple(p for _, p in INTRANSITIVE),
}  # fmt: skip

_UNITS = (
    "ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT",
    "NINE", "TEN", "ELEVEN", "TWELVE", "THIRTEEN", "FOURTEEN", "FIFTEEN",
    "SIXTEEN", "SEVENTEEN", "EIGHTEEN", "NINETEEN",
)  # fmt: skip
_TENS = (
    "", "", "TWENTY", "THIRTY", "FORTY", "FIFTY", "SIXTY", "SEVENTY", "EIGHTY",
    "NINETY",
)  # fmt: skip


def number_words(n: int) -> str:
    """Spell out ``0 <= n < 10000`` the way LibriSpeech transcripts do.

    >>> number_words(342)
    'THREE HUNDRED AND FORTY TWO'
    >>> number_words(1905)
    'ONE THOUSAND NINE HUNDRED AND FIVE'
    """
    if not 0 <= n < 10000:
        raise ValueError(f"number out of range: {n}")
    if n < 20:
        return _UNITS[n]
    if n < 100:
        tens, unit = divmod(n, 10)
        return _TENS[tens] + ("" if unit == 0 else " " + _UNITS[unit])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        head = _UNITS[hundreds] + " HUNDRED"
        return head if rest == 0 else head + " AND " + number_words(rest)
    thousands, rest = divmod(n, 1000)
    head = _UNITS[thousands] + " THOUSAND"
    if rest == 0:
        return head
    return head + (" AND " if rest < 100 else " ") + number_words(rest)


# Number slots: (smallest, largest) value drawn.
NUMBER_SLOTS = {"NUM": (2, 12), "BIGNUM": (13, 999), "YEAR": (1801, 1999)}

TEMPLATES: tuple[tuple[str, ...], ...] = tuple(
    tuple(t.split())
    for t in (
        "THE {ADJ} {NOUN} IS {PREP} THE {PLACE}",
        "THE {ADJ} {PERSON} {VT_PAST} THE {NOUN} {PREP} THE {PLACE}",
        "{NAME} {VT_PAST} {A} {ADJ} {NOUN}",
        "{NAME} AND {NAME} {VI_PAST} {PREP} THE {PLACE} {TIME}",
        "{NAME} HAS {NUM} {ADJ} {NOUNS}",
        "THERE ARE {NUM} {COLOR} {NOUNS} {PREP} THE {PLACE}",
        "PLEASE {VT} THE {COLOR} {NOUN} {ADV}",
        "{NAME} WENT TO {CITY} {TIME}",
        "WE WILL {VT} THE {NOUNS} {FUTURE}",
        "DID YOU {VT} THE {ADJ} {NOUN} ?",
        "HOW MANY {NOUNS} DID {NAME} {VT} ?",
        "THE {NOUN} WAS {ADJ} AND {ADJ}",
        "{PRONOUN} {VI_PAST} {ADV} {PREP} THE {PLACE}",
        "{POSS} {FAMILY} {VT_PAST} {A} {ADJ} {NOUN} IN {CITY}",
        "I THINK THE {NOUN} IS {PREP} THE {PLACE}",
        "THE {PERSON} FROM {CITY} {VT_PAST} {BIGNUM} {NOUNS}",
        "IT WAS {WEATHER} IN {CITY} ON {DAY}",
        "{NAME} GAVE THE {ADJ} {NOUN} TO {POSS} {FAMILY}",
        "WHERE IS THE {COLOR} {NOUN} ?",
        "THE {ANIMAL} {VI_PAST} {ADV} WHILE THE {PERSON} {VI_PAST}",
        "{NAME} {FREQ} DRINKS {FOOD} {TIME}",
        "THE {PERSON} WAS BORN IN {CITY} IN {YEAR}",
        "{POSS} {FAMILY} LIKES {FOOD} AND {FOOD}",
        "{NAME} SAID THAT THE {ANIMAL} {VT_PAST} THE {NOUN}",
        "THEY BOUGHT {BIGNUM} {NOUNS} AT THE {PLACE} {TIME}",
        "CAN YOU {VT} THE {ADJ} {NOUNS} BEFORE {DAY} ?",
        "THE {ADJ} {ANIMAL} {VI_PAST}",
        "{NAME} {VI_PAST} {ADV}",
        "IN {SEASON} THE {NOUNS} {PREP} THE {PLACE} ARE {COLOR}",
        "{PRONOUN} {FREQ} {VI} {PREP} THE {PLACE} IN THE {PERIOD}",
        "THE {PERSON} AND THE {PERSON} {VT_PAST} {NUM} {COLOR} {NOUNS}",
        "{NAME} {VT_PAST} THE {NOUN} AND {VI_PAST} {ADV}",
        "WHY DID THE {PERSON} {VT} THE {NOUN} ?",
        "MEET ME AT THE {PLACE} ON {DAY} {PERIOD}",
        "{POSS} {NOUN} IS {ADJ}",
    )
)

_TIME_FORMS = (
    ("ON", "{DAY}"),
    ("IN", "THE", "{PERIOD}"),
    ("IN", "{MONTH}"),
    ("LAST", "{DAY}"),
    ("AT", "NIGHT"),
    ("YESTERDAY",),
    ("IN", "THE", "{SEASON}"),
)
_FUTURE_FORMS = (
    ("TOMORROW",),
    ("NEXT", "{DAY}"),
    ("NEXT", "WEEK"),
    ("IN", "{MONTH}"),
    ("AFTER", "DINNER"),
)


def _fill(slots: Sequence[str], rng: random.Random, out: list[str]) -> None:
    """Expand template slots into ``out`` (recursive for compound slots)."""
    for slot in slots:
        if not (slot.startswith("{") and slot.endswith("}")):
            out.append(slot)
            continue
        name = slot[1:-1]
        if name == "TIME":
            _fill(rng.choice(_TIME_FORMS), rng, out)
        elif name == "FUTURE":
            _fill(rng.choice(_FUTURE_FORMS), rng, out)
        elif name == "A":
            out.append("\x00A")  # resolved to A/AN once the next word is known
        elif name in NUMBER_SLOTS:
            low, high = NUMBER_SLOTS[name]
            out.extend(number_words(rng.randint(low, high)).split())
        else:
            out.append(rng.choice(WORDS[name]))


def make_sentence(rng: random.Random) -> tuple[str, str]:
    """Draw one sentence: ``(transcript, text_to_speak)``.

    The transcript is upper case without punctuation (LibriSpeech style); the
    spoken text is lower case (eSpeak may spell out all-caps words) and keeps
    the question mark for the intonation.

    >>> words, spoken = make_sentence(random.Random(3))
    >>> words == words.upper() and 3 <= len(words.split()) <= 15
    True
    """
    while True:
        template = rng.choice(TEMPLATES)
        tokens: list[str] = []
        _fill(template, rng, tokens)
        question = tokens[-1] == "?"
        words = [t for t in tokens if t != "?"]
        for i, word in enumerate(words):
            if word == "\x00A":
                words[i] = "AN" if words[i + 1][0] in "AEIOU" else "A"
        if MIN_WORDS <= len(words) <= MAX_WORDS:
            transcript = " ".join(words)
            return transcript, transcript.lower() + ("?" if question else ".")


def vocabulary() -> set[str]:
    """All words the grammar can produce.

    >>> 300 <= len(vocabulary()) <= 1000
    True
    """
    vocab = {w for words in WORDS.values() for w in words}
    vocab |= {"A", "AN"} | set(_UNITS[1:]) | {t for t in _TENS if t}
    vocab |= {"HUNDRED", "THOUSAND"}
    for slots in TEMPLATES + _TIME_FORMS + _FUTURE_FORMS:
        vocab |= {s for s in slots if not s.startswith("{") and s != "?"}
    return vocab


# --------------------------------------------------------------------------
# Corpus plan: speakers, sentences and the order of utterances.
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an eSpeak voice+variant at a pitch and rate."""

    spk_id: int
    voice: str
    variant: str
    pitch: int  # espeakPITCH, 0-100
    pitch_range: int  # espeakRANGE, 0-100
    rate: int  # espeakRATE, words per minute
    gain: float
    chapter_base: int

    @property
    def sex(self) -> str:
        return "F" if self.variant.startswith("f") else "M"

    @property
    def voice_name(self) -> str:
        return f"{self.voice}+{self.variant}"


@dataclass(frozen=True)
class UttSpec:
    """Everything a worker needs to synthesize one utterance."""

    utt_id: str
    rel_path: str
    transcript: str
    spoken: str
    voice_name: str
    rate: int
    pitch: int
    pitch_range: int
    gain: float
    snr_db: float
    noise_seed: int
    lead_s: float  # silence before and after the speech, as in read speech
    trail_s: float


def split_role(split: str) -> str:
    """``train``, ``dev`` or ``test``, from a LibriSpeech split name."""
    role = split.split("-")[0]
    if role not in ("train", "dev", "test"):
        raise ValueError(
            f"split {split!r} must start with 'train', 'dev' or 'test' "
            "(for example train-clean-100, dev-clean, test-other)"
        )
    return role


def voice_pairs(seed: int) -> dict[str, list[tuple[str, str]]]:
    """Partition voice/variant pairs between train, dev and test.

    Each voice gets one dev and one test variant, and the rotation keeps every
    accent and every variant present in train.

    >>> pairs = voice_pairs(0)
    >>> set(pairs["dev"]) & set(pairs["train"]), set(pairs["test"]) & set(pairs["dev"])
    (set(), set())
    """
    rng = random.Random(f"pairs:{seed}")
    variants = list(VARIANTS)
    rng.shuffle(variants)
    dev = [(v, variants[i % len(variants)]) for i, v in enumerate(VOICES)]
    test = [
        (v, variants[(i + len(VOICES)) % len(variants)]) for i, v in enumerate(VOICES)
    ]
    held_out = set(dev) | set(test)
    train = [(v, x) for v in VOICES for x in VARIANTS if (v, x) not in held_out]
    return {"train": train, "dev": dev, "test": test}


def _sentence_role(transcript: str, seed: int) -> str:
    """Which role a sentence belongs to: 1/20 dev-only, 1/20 test-only."""
    digest = hashlib.blake2b(f"{seed}:{transcript}".encode(), digest_size=8)
    bucket = int.from_bytes(digest.digest(), "big") % 20
    return {0: "dev", 1: "test"}.get(bucket, "train")


def make_speakers(splits: Sequence[str], seed: int) -> dict[str, list[Speaker]]:
    """Create the speakers of every split, with corpus-unique ids."""
    pairs = voice_pairs(seed)
    rng = random.Random(f"speakers:{seed}")
    total = sum(len(pairs[split_role(s)]) * SPEAKERS_PER_PAIR for s in splits)
    spk_ids = rng.sample(range(100, 10000), total)
    chapter_bases = rng.sample(range(10, 9000), total)
    speakers: dict[str, list[Speaker]] = {}
    k = 0
    for split in splits:
        srng = random.Random(f"speakers:{seed}:{split}")
        speakers[split] = []
        for voice, variant in pairs[split_role(split)]:
            for _ in range(SPEAKERS_PER_PAIR):
                speakers[split].append(
                    Speaker(
                        spk_id=spk_ids[k],
                        voice=voice,
                        variant=variant,
                        pitch=srng.randint(30, 70),
                        pitch_range=srng.randint(35, 85),
                        rate=srng.randint(145, 195),
                        gain=round(srng.uniform(0.45, 0.95), 3),
                        chapter_base=chapter_bases[k] * 100,
                    )
                )
                k += 1
    return speakers


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
            # Train never sees a dev/test sentence; dev/test sentences are
            # unique within their split.
            while True:
                transcript, spoken = make_sentence(rng)
                if _sentence_role(transcript, seed) != role:
                    continue
                if role == "train" or transcript not in seen_eval:
                    break
            if role != "train":
                seen_eval.add(transcript)
            n = counts[spk.spk_id]
            counts[spk.spk_id] += 1
            chapter = spk.chapter_base + min(n // UTTS_PER_CHAPTER, 99)
            utt = n - min(n // UTTS_PER_CHAPTER, 99) * UTTS_PER_CHAPTER
            utt_id = f"{spk.spk_id}-{chapter}-{utt:04d}"
            yield UttSpec(
                utt_id=utt_id,
                rel_path=f"{split}/{spk.spk_id}/{chapter}/{utt_id}.flac",
                transcript=transcript,
                spoken=spoken,
                voice_name=spk.voice_name,
                # Small per-utterance jitter so a speaker is not a metronome.
                rate=spk.rate + rng.randint(-8, 8),
                pitch=spk.pitch,
                pitch_range=spk.pitch_range,
                gain=spk.gain,
                # "other" splits get audible noise; clean ones a faint floor
                # so that no file is digital silence between words.
                snr_db=rng.uniform(8.0, 20.0) if noisy else rng.uniform(45.0, 55.0),
                noise_seed=rng.getrandbits(63),
                lead_s=round(rng.uniform(0.1, 0.5), 3),
                trail_s=round(rng.uniform(0.1, 0.5), 3),
            )


# --------------------------------------------------------------------------
# eSpeak NG through ctypes (runs only inside worker processes).
# --------------------------------------------------------------------------
class SynthesisError(RuntimeError):
    """eSpeak NG could not be loaded or failed to synthesize."""


_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE, _ESPEAK_PITCH, _ESPEAK_RANGE = 1, 3, 4
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_EVENT_LIST_END, _EVENT_WORD = 0, 1


class _Event(ctypes.Structure):
    """eSpeak NG's ``espeak_EVENT`` (speak_lib.h)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character offset
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # output sample where the event happens
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


def _load_private_copy(lib_path: str) -> ctypes.CDLL:
    """dlopen a private copy of ``lib_path``: a new instance in a fresh state.

    The dynamic loader shares a library opened twice under the same file, but
    a copy (another inode) is mapped again with its own static data.
    """
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        copy = os.path.join(tmp, os.path.basename(lib_path))
        shutil.copyfile(lib_path, copy)
        return ctypes.CDLL(copy)  # the mapping outlives the deleted file


class _Espeak:
    """Minimal synchronous wrapper around a fresh instance of libespeak-ng.

    Call :meth:`close` when done, to free the instance.
    """

    def __init__(self) -> None:
        try:
            import espeakng_loader

            lib_path = espeakng_loader.get_library_path()
            data_path = espeakng_loader.get_data_path()
            lib = _load_private_copy(lib_path)
        except (ImportError, OSError, RuntimeError) as exc:
            raise SynthesisError(
                f"cannot load eSpeak NG from espeakng_loader: {exc}"
            ) from exc
        lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        # Breathy variants (f*) draw noise from rand(), seeded from the clock at
        # initialisation; eSpeak NG >= 1.52 lets us seed it per utterance.
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
            self._set_seed.restype = None
        self.sample_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0
        )
        if self.sample_rate <= 0:
            raise SynthesisError(
                f"espeak_Initialize failed (returned {self.sample_rate}); "
                f"data path {data_path}"
            )
        self._chunks: list[np.ndarray] = []
        # (text position, sample) of each word's start in the last synth().
        self.word_events: list[tuple[int, int]] = []
        # Keep a reference: ctypes callbacks must outlive their C users.
        self._callback = _SYNTH_CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self.lib = lib

    def _collect(self, wav: Any, n: int, events: Any) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        if events:
            event = ctypes.cast(events, ctypes.POINTER(_Event))
            i = 0
            while event[i].type != _EVENT_LIST_END:
                if event[i].type == _EVENT_WORD:
                    self.word_events.append((event[i].text_position, event[i].sample))
                i += 1
        return 0  # 0 = continue synthesis

    def close(self) -> None:
        """Free eSpeak's data and unload this instance of the library."""
        if self.lib is None:
            return
        self.lib.espeak_Terminate()
        _ctypes.dlclose(self.lib._handle)
        self.lib = None

    def synth(
        self, text: str, voice: str, rate: int, pitch: int, prange: int, seed: int
    ) -> np.ndarray:
        """Return int16 samples at ``self.sample_rate``."""
        if self._set_seed is not None:
            self._set_seed(seed & 0x7FFFFFFF)
        rc = self.lib.espeak_SetVoiceByName(voice.encode())
        if rc != 0:
            # On failure eSpeak silently keeps the previous voice.
            raise SynthesisError(f"eSpeak NG refused voice {voice!r} (code {rc})")
        for param, value in (
            (_ESPEAK_RATE, rate),
            (_ESPEAK_PITCH, pitch),
            (_ESPEAK_RANGE, prange),
        ):
            rc = self.lib.espeak_SetParameter(param, value, 0)
            if rc != 0:
                raise SynthesisError(f"espeak_SetParameter({param}, {value}) -> {rc}")
        self._chunks = []
        self.word_events = []
        data = text.encode("utf-8") + b"\0"
        rc = self.lib.espeak_Synth(
            data, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        if rc != 0:
            raise SynthesisError(f"espeak_Synth failed (code {rc}) on {text!r}")
        if not self._chunks:
            raise SynthesisError(f"eSpeak NG produced no audio for {text!r}")
        return np.concatenate(self._chunks)


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    try:
        import soxr  # installed with librosa; importing it alone is much faster
    except ImportError:  # pragma: no cover - soxr is a librosa dependency
        import librosa

        return librosa.resample(x, orig_sr=sr_in, target_sr=sr_out, res_type="soxr_hq")
    return soxr.resample(x, sr_in, sr_out, quality="HQ")


def word_times(
    spoken: str, events: Sequence[tuple[int, int]], n_raw: int, rate: int, lead: int
) -> list[tuple[float, float, bool]]:
    """(start, end, measured) seconds of each word of ``spoken`` from eSpeak's
    word events.

    A word starts at its event's sample and ends where the next word starts
    (the last one where the speech ends), shifted by the ``lead`` samples of
    silence at 16 kHz. eSpeak speaks some pairs as one word ("there are"):
    the pair's span is then shared in proportion to the letters, and the
    second word is marked as not measured.

    >>> word_times("there are cats.", [(1, 0), (11, 2205)], 4410, 22050, 1600)
    [(0.1, 0.1625, True), (0.1625, 0.2, False), (0.2, 0.3, True)]
    """
    words = spoken.split()
    index = np.cumsum([c == " " for c in spoken])  # word index of each character
    starts: dict[int, int] = {}
    for position, sample in events:
        starts.setdefault(int(index[position - 1]), sample)
    if not starts or min(starts) != 0 or max(starts) >= len(words):
        raise SynthesisError(f"eSpeak NG word events do not match {spoken!r}")
    first = sorted(starts) + [len(words)]
    samples = [starts[i] for i in first[:-1]] + [n_raw]
    times: list[tuple[float, float, bool]] = []
    offset = lead / SAMPLE_RATE
    for k in range(len(first) - 1):
        group = words[first[k] : first[k + 1]]
        letters = np.cumsum([0] + [len(w.strip(".?")) for w in group])
        span = samples[k + 1] - samples[k]
        edges = [samples[k] + span * n / letters[-1] for n in letters]
        for j in range(len(group)):
            times.append(
                (
                    round(float(offset + edges[j] / rate), 4),
                    round(float(offset + edges[j + 1] / rate), 4),
                    j == 0,
                )
            )
    return times


def render(
    spec: UttSpec, engine: _Espeak
) -> tuple[bytes, int, list[tuple[float, float, bool]]]:
    """Synthesize one utterance; returns ``(flac_bytes, n_samples, word_times)``."""
    raw = engine.synth(
        spec.spoken,
        spec.voice_name,
        spec.rate,
        spec.pitch,
        spec.pitch_range,
        spec.noise_seed,
    )
    x = raw.astype(np.float32) / 32768.0
    if engine.sample_rate != SAMPLE_RATE:
        x = _resample(x, engine.sample_rate, SAMPLE_RATE)
    words = word_times(
        spec.spoken,
        engine.word_events,
        raw.shape[0],
        engine.sample_rate,
        round(spec.lead_s * SAMPLE_RATE),
    )
    x = x * spec.gain
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))  # of the speech
    x = np.pad(x, (round(spec.lead_s * SAMPLE_RATE), round(spec.trail_s * SAMPLE_RATE)))
    noise = np.random.default_rng(spec.noise_seed).standard_normal(x.shape[0])
    x = x + (rms * 10.0 ** (-spec.snr_db / 20.0)) * noise.astype(np.float32)
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue(), int(pcm.shape[0]), words


def synthesize_chunk(
    specs: Sequence[UttSpec],
) -> list[tuple[bytes, int, list[tuple[float, float, bool]]]]:
    """Render a chunk with a fresh eSpeak instance (worker entry point)."""
    engine = _Espeak()
    try:
        return [render(spec, engine) for spec in specs]
    finally:
        engine.close()


# --------------------------------------------------------------------------
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
    words: dict[str, list[tuple[float, float, bool]]],
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
                    mean = seconds / len(accepted) if accepted else 3.0
                    queued = sum(len(c) for c, _ in pending) * mean
                    if queued > 1.2 * (target_seconds - seconds) + 2 * mean:
                        break
                chunk = list(islice(specs, CHUNK_SIZE))
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


def _write_transcripts(root: Path, accepted: Sequence[tuple[UttSpec, int]]) -> None:
    by_chapter: dict[Path, list[UttSpec]] = {}
    for spec, _ in accepted:
        by_chapter.setdefault((root / spec.rel_path).parent, []).append(spec)
    for folder, specs in by_chapter.items():
        spk, chapter = folder.parent.name, folder.name
        lines = sorted(f"{s.utt_id} {s.transcript}\n" for s in specs)
        (folder / f"{spk}-{chapter}.trans.txt").write_text("".join(lines))


def _write_word_times(
    root: Path,
    accepted: Sequence[tuple[UttSpec, int]],
    words: dict[str, list[tuple[float, float, bool]]],
) -> None:
    """``<spk>-<chapter>.words.txt``: per utterance, the start and end
    (seconds) of each transcript word: ``ID START END START END ...``, a
    start marked ``*`` where eSpeak gave the word no event of its own."""
    by_chapter: dict[Path, list[str]] = {}
    for spec, _ in accepted:
        times = " ".join(
            f"{a:.4f}{'' if measured else '*'} {b:.4f}"
            for a, b, measured in words[spec.utt_id]
        )
        folder = (root / spec.rel_path).parent
        by_chapter.setdefault(folder, []).append(f"{spec.utt_id} {times}\n")
    for folder, lines in by_chapter.items():
        spk, chapter = folder.parent.name, folder.name
        (folder / f"{spk}-{chapter}.words.txt").write_text("".join(sorted(lines)))


def read_word_times(
    chapter_file: str | os.PathLike,
) -> dict[str, list[tuple[float, float, bool]]]:
    """A ``*.words.txt`` file: utterance id -> [(start, end, measured)]."""
    times = {}
    for line in Path(chapter_file).read_text().splitlines():
        utt, *values = line.split()
        times[utt] = [
            (float(a.rstrip("*")), float(b), not a.endswith("*"))
            for a, b in zip(values[::2], values[1::2], strict=True)
        ]
    return times


def _write_speakers_txt(
    root: Path, speakers: dict[str, list[Speaker]], minutes: dict[int, float]
) -> None:
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
    for split in splits:
        shutil.rmtree(root / split, ignore_errors=True)

    start = time.monotonic()
    workers = workers or _default_workers()
    speakers = make_speakers(splits, seed)
    # Train first: the dev/test size may be a fraction of it.
    ordered = sorted(splits, key=lambda s: split_role(s) != "train")
    results: dict[str, list[tuple[UttSpec, int]]] = {}
    words: dict[str, list[tuple[float, float, bool]]] = {}
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
        _write_transcripts(root, accepted)
        _write_word_times(root, accepted, words)
        for spec, n in accepted:
            spk = int(spec.utt_id.split("-")[0])
            minutes[spk] = minutes.get(spk, 0.0) + n / SAMPLE_RATE / 60.0
        summary_splits[split] = {
            "utterances": len(accepted),
            "hours": round(sum(n for _, n in accepted) / SAMPLE_RATE / 3600.0, 4),
            "speakers": len({s.utt_id.split("-")[0] for s, _ in accepted}),
            "chapters": len({s.utt_id.rsplit("-", 1)[0] for s, _ in accepted}),
        }
    _write_speakers_txt(root, speakers, minutes)
    # The marker holds no absolute path, so that same options -> same bytes.
    summary = {
        "seed": seed,
        "splits": summary_splits,
        "vocabulary": len(vocabulary()),
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
    )
    for split, info in summary["splits"].items():
        lines.append(
            f"{split:<18}{info['utterances']:>7}{info['hours']:>9.3f}"
            f"{info['speakers']:>10}{info['chapters']:>10}"
        )
    lines.append(f"vocabulary: {summary['vocabulary']} words, seed {summary['seed']}")
    if not summary.get("skipped"):
        lines.append(f"generated in {summary['seconds']:.1f} s")
    return "\n".join(lines)


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

"""English sentences for the synthetic corpus: a small random grammar.

Sentences are built from phrase rules, not fixed templates: noun phrases take
determiners, adjectives, numbers, prepositional phrases and relative clauses;
clauses take objects, adverbs and time and place adjuncts; sentences join
clauses with conjunctions or subordinate clauses, report speech ("she said
that ..."), ask questions and give orders.  Every word comes from
:mod:`lexicon` or from the inflections derived here, so :func:`vocabulary`
lists exactly what a transcript can hold.

Each sentence is returned twice: the transcript (upper case, no punctuation,
as in LibriSpeech) and the text for eSpeak NG (lower case, with the commas and
final punctuation that give the sentence its pauses and intonation).

>>> import random
>>> words, spoken = make_sentence(random.Random(3))
>>> words == words.upper() and MIN_WORDS <= len(words.split()) <= MAX_WORDS
True
"""

from __future__ import annotations

import random
import re
from functools import cache

from . import lexicon as L

MIN_WORDS, MAX_WORDS = 3, 24

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


# ---------------------------------------------------------------- inflection
def _split(entry: str) -> tuple[str, str | None]:
    base, _, irregular = entry.partition("/")
    return base, irregular or None


def _add_s(word: str, sibilants: str) -> str:
    """The -s ending: -ES after ``sibilants``, -IES after a consonant + Y."""
    if re.search(f"({sibilants})$", word):
        return word + "ES"
    if re.search(r"[^AEIOU]Y$", word):
        return word[:-1] + "IES"
    return word + "S"


def plural(entry: str) -> str:
    """``CAT`` -> ``CATS``, ``BOX`` -> ``BOXES``, ``CHILD/CHILDREN`` -> ``CHILDREN``."""
    noun, irregular = _split(entry)
    return irregular or _add_s(noun, "S|SH|CH|X|Z")


def past(entry: str) -> str:
    """``WALK`` -> ``WALKED``, ``CARRY`` -> ``CARRIED``, ``SEE/SAW`` -> ``SAW``."""
    verb, irregular = _split(entry)
    if irregular:
        return irregular
    if verb.endswith("E"):
        return verb + "D"
    if re.search(r"[^AEIOU]Y$", verb):
        return verb[:-1] + "IED"
    return verb + "ED"


def third_person(entry: str) -> str:
    """``WALK`` -> ``WALKS``, ``WATCH`` -> ``WATCHES``, ``CRY`` -> ``CRIES``."""
    return _add_s(_split(entry)[0], "S|SH|CH|X|Z|O")


def gerund(entry: str) -> str:
    """``WALK`` -> ``WALKING``, ``SMILE`` -> ``SMILING``, ``DROP/DROPPED``
    -> ``DROPPING``."""
    verb, irregular = _split(entry)
    if irregular and irregular == verb + verb[-1] + "ED":  # doubled consonant
        return verb + verb[-1] + "ING"
    if verb.endswith("IE"):
        return verb[:-2] + "YING"
    if verb.endswith("E") and not verb.endswith(("EE", "YE", "OE")):
        return verb[:-1] + "ING"
    return verb + "ING"


def base(entry: str) -> str:
    """``SEE/SAW`` -> ``SEE``."""
    return _split(entry)[0]


# ---------------------------------------------------------------- grammar
_COUNT_NOUNS = L.PERSONS + L.ANIMALS + L.THINGS + L.PLACES + L.ABSTRACT
_OBJECTS = L.THINGS + L.FOODS + L.ANIMALS + L.ABSTRACT


class _Sentence:
    """Builds one sentence; ``self.rng`` is the only source of randomness."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, words: tuple[str, ...]) -> str:
        return self.rng.choice(words)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # Noun phrases return (words, is_plural).
    def noun_phrase(self, nouns: tuple[str, ...], depth: int = 0) -> tuple[list, bool]:
        entry = self.pick(nouns)
        mass = base(entry) in L.MASS
        many = not mass and self.chance(0.3)
        noun = plural(entry) if many else base(entry)
        words: list[str] = []
        r = self.rng.random()
        if many and r < 0.3:
            words += number_words(self.rng.randint(2, 40)).split()
        elif many and r < 0.5:
            words.append(self.pick(("SOME", "MANY", "SEVERAL", "THOSE", "THESE")))
        elif mass:
            words.append(self.pick(("SOME", "THE", "HIS", "HER", "OUR", "MORE")))
        elif r < 0.55 or (many and r < 0.75):
            words.append("THE")
        elif r < 0.75:
            words.append("\x00A")  # A or AN, once the next word is known
        else:
            words.append(self.pick(("HIS", "HER", "MY", "THEIR", "OUR", "YOUR")))
        if self.chance(0.45):
            words.append(self.pick(L.ADJECTIVES))
            if self.chance(0.15):
                words.append(self.pick(L.COLOURS))
        words.append(noun)
        if depth == 0 and self.chance(0.15):
            words += [self.pick(L.PLACE_PREPOSITIONS), "THE", base(self.pick(L.PLACES))]
        elif depth == 0 and self.chance(0.12):
            obj, _ = self.noun_phrase(_OBJECTS, depth + 1)
            rel = "WHO" if nouns is L.PERSONS else "THAT"
            words += [rel, past(self.pick(L.TRANSITIVE)), *obj]
        return words, many

    def subject(self) -> tuple[list[str], bool, bool]:
        """(words, plural, is_pronoun_i_or_you)."""
        r = self.rng.random()
        if r < 0.25:
            return [self.pick(L.NAMES)], False, False
        if r < 0.32:
            return [self.pick(L.NAMES), "AND", self.pick(L.NAMES)], True, False
        if r < 0.5:
            pronoun = self.pick(("HE", "SHE", "THEY", "WE", "I", "YOU", "IT"))
            return [pronoun], pronoun in ("THEY", "WE"), pronoun in ("I", "YOU")
        if r < 0.58:
            poss = self.pick(("HIS", "HER", "MY", "THEIR", "OUR"))
            return [poss, base(self.pick(L.FAMILY))], False, False
        nouns = L.PERSONS if r < 0.85 else L.ANIMALS
        words, many = self.noun_phrase(nouns)
        return words, many, False

    def adjunct(self) -> list[str]:
        r = self.rng.random()
        if r < 0.35:
            return [self.pick(L.PLACE_PREPOSITIONS), "THE", base(self.pick(L.PLACES))]
        if r < 0.45:
            return [self.pick(("IN", "TO", "FROM", "NEAR")), self.pick(L.CITIES)]
        if r < 0.55:
            return [self.pick(("ON", "LAST", "NEXT", "EVERY")), self.pick(L.DAYS)]
        if r < 0.62:
            return ["IN", self.pick(L.MONTHS)]
        if r < 0.7:
            return ["IN", "THE", self.pick(L.PERIODS)]
        if r < 0.76:
            return ["IN", self.pick(L.SEASONS)]
        if r < 0.8:
            return ["IN", *number_words(self.rng.randint(1700, 1999)).split()]
        if r < 0.9:
            return [self.pick(("YESTERDAY", "TODAY", "AGAIN", "SOON"))]
        return [self.pick(L.ADVERBS)]

    def predicate(self, many: bool, first_person: bool) -> list[str]:
        """A verb phrase in a tense agreeing with the subject."""
        tense = self.rng.random()
        transitive = self.chance(0.6)
        entry = self.pick(L.TRANSITIVE if transitive else L.INTRANSITIVE)
        if tense < 0.55:
            verb = [past(entry)]
        elif tense < 0.65:
            verb = [self.pick(("WILL", "WOULD", "COULD", "MIGHT", "MUST")), base(entry)]
        elif tense < 0.75:
            verb = ["WERE" if many or first_person else "WAS", gerund(entry)]
        elif tense < 0.85:
            if many or first_person:
                verb = [base(entry)]
            else:
                verb = [third_person(entry)]
            if self.chance(0.5):
                verb.insert(0, self.pick(L.FREQUENCY))
        elif tense < 0.92:
            verb = ["DID", "NOT", base(entry)]
        else:
            # Copula with an adjective, optionally "AND" a second one.
            be = "WERE" if many or first_person else "WAS"
            words = [be, self.pick(("VERY", "QUITE", "RATHER", "TOO", "SO"))]
            words.append(self.pick(L.ADJECTIVES + L.EMOTIONS))
            if self.chance(0.3):
                words += ["AND", self.pick(L.ADJECTIVES)]
            return words
        words = verb
        if transitive:
            obj, _ = self.noun_phrase(_OBJECTS if self.chance(0.8) else L.PERSONS)
            words += obj
        if self.chance(0.2):
            words.append(self.pick(L.ADVERBS))
        if self.chance(0.5):
            words += self.adjunct()
        return words

    def clause(self) -> list[str]:
        subject, many, first = self.subject()
        return subject + self.predicate(many, first)

    def sentence(self) -> tuple[list[str], str]:
        """(words with commas as separate tokens, final punctuation)."""
        r = self.rng.random()
        if r < 0.3:
            return self.clause(), "."
        if r < 0.42:
            conj = self.pick(("AND", "BUT", "SO", "YET", "OR"))
            return self.clause() + [",", conj] + self.clause(), "."
        if r < 0.55:
            sub = self.pick(L.SUBORDINATORS)
            return [sub] + self.clause() + [","] + self.clause(), "."
        if r < 0.63:
            return self.clause() + [self.pick(L.SUBORDINATORS)] + self.clause(), "."
        if r < 0.72:
            subject, many, first = self.subject()
            verb = self.pick(L.SPEECH_VERBS)
            return subject + [past(verb), "THAT"] + self.clause(), "."
        if r < 0.8:
            aux = self.pick(("DID", "WILL", "COULD", "WOULD", "SHOULD"))
            subject, _, _ = self.subject()
            entry = self.pick(L.TRANSITIVE)
            obj, _ = self.noun_phrase(_OBJECTS)
            tail = self.adjunct() if self.chance(0.5) else []
            wh = (
                [self.pick(("WHY", "WHERE", "WHEN", "HOW"))] if self.chance(0.5) else []
            )
            return wh + [aux] + subject + [base(entry)] + obj + tail, "?"
        if r < 0.86:
            entry = self.pick(L.TRANSITIVE)
            obj, _ = self.noun_phrase(_OBJECTS)
            head = ["PLEASE"] if self.chance(0.3) else []
            return head + [base(entry)] + obj + self.adjunct(), "."
        if r < 0.93:
            obj, many = self.noun_phrase(L.THINGS + L.ANIMALS + L.PERSONS)
            be = "WERE" if many else "WAS"
            where = [self.pick(L.PLACE_PREPOSITIONS), "THE", base(self.pick(L.PLACES))]
            return ["THERE", be] + obj + where, "."
        asked = past(self.pick(("ASK", "WONDER")))
        return [self.pick(L.NAMES), asked, "WHETHER", *self.clause()], "."


def _agree_articles(words: list[str]) -> list[str]:
    out = list(words)
    for i, word in enumerate(out):
        if word == "\x00A":
            nxt = out[i + 1]
            out[i] = "AN" if nxt[0] in "AEIO" or nxt in ("HONEST", "HOUR") else "A"
    return out


def make_sentence(rng: random.Random) -> tuple[str, str]:
    """Draw one sentence: ``(transcript, text_to_speak)``.

    The transcript is upper case without punctuation (LibriSpeech style); the
    spoken text is lower case (eSpeak may spell out all-caps words), with
    commas and the final punctuation for pauses and intonation.

    >>> words, spoken = make_sentence(random.Random(3))
    >>> spoken.rstrip(".?").replace(",", "").upper() == words
    True
    """
    while True:
        tokens, end = _Sentence(rng).sentence()
        tokens = _agree_articles(tokens)
        words = [t for t in tokens if t != ","]
        if MIN_WORDS <= len(words) <= MAX_WORDS:
            spoken = " ".join(tokens).replace(" ,", ",").lower() + end
            return " ".join(words), spoken


@cache
def vocabulary() -> frozenset[str]:
    """All words the grammar can produce.

    >>> len(vocabulary()) >= 2000
    True
    """
    vocab: set[str] = set()
    for nouns in (_COUNT_NOUNS, L.FOODS, L.FAMILY):
        vocab |= {base(n) for n in nouns} | {plural(n) for n in nouns}
    for verbs in (L.TRANSITIVE, L.INTRANSITIVE):
        for forms in (base, past, third_person, gerund):
            vocab |= {forms(v) for v in verbs}
    vocab |= {past(v) for v in L.SPEECH_VERBS} | {"ASKED"}
    for words in (
        L.ADJECTIVES, L.COLOURS, L.ADVERBS, L.FREQUENCY, L.NAMES, L.CITIES,
        L.DAYS, L.MONTHS, L.SEASONS, L.PERIODS, L.PREPOSITIONS,
        L.PLACE_PREPOSITIONS, L.SUBORDINATORS, L.EMOTIONS,
    ):  # fmt: skip
        vocab |= set(words)
    vocab |= set(_UNITS[1:]) | {t for t in _TENS if t} | {"HUNDRED", "THOUSAND"}
    vocab |= set(
        "A AN THE SOME MANY SEVERAL THOSE THESE MORE HIS HER MY THEIR OUR YOUR "
        "WHO THAT AND BUT SO YET OR HE SHE THEY WE I YOU IT IN TO FROM ON LAST "
        "NEXT EVERY YESTERDAY TODAY AGAIN SOON WILL WOULD COULD MIGHT MUST WERE "
        "WAS DID NOT VERY QUITE RATHER TOO WHY WHERE WHEN HOW SHOULD PLEASE "
        "THERE WHETHER".split()
    )
    return frozenset(vocab)

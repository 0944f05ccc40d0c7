"""Speech synthesis with eSpeak NG: one utterance -> FLAC bytes and word times.

eSpeak NG is the library shipped in the PyPI package ``espeakng_loader``,
called through ``ctypes``.  Each sentence is synthesized on its own (with its
own intonation and eSpeak's sentence-final silence), the sentences are joined
with the planned pauses, resampled from 22.05 kHz to 16 kHz, brought to the
speaker's level and given a faint noise floor.

eSpeak keeps internal synthesis state across calls (the same text twice in one
process gives slightly different samples, and neither re-initialising nor
``espeak_ng_SetRandSeed`` resets it), so :func:`synthesize_chunk` loads a
private copy of the library for every chunk of utterances: the bytes then
depend only on the chunk plan, not on the number of workers or on what ran
before.
"""

from __future__ import annotations

import _ctypes
import ctypes
import io
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import soundfile as sf

from .plan import UttSpec

SAMPLE_RATE = 16000
WordTimes = list[tuple[float, float, bool]]


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


class Espeak:
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
    import soxr  # installed with librosa; importing it alone is much faster

    return soxr.resample(x, sr_in, sr_out, quality="HQ")


def word_times(
    spoken: str, events: Sequence[tuple[int, int]], n_raw: int, rate: int, offset: float
) -> WordTimes:
    """(start, end, measured) seconds of each word of ``spoken`` from eSpeak's
    word events.

    A word starts at its event's sample and ends where the next word starts
    (the last one where the speech ends), shifted by ``offset`` seconds.
    eSpeak speaks some pairs as one word ("there are"): the pair's span is
    then shared in proportion to the letters, and the second word is marked
    as not measured, as is a first word without an event (it starts with the
    audio).

    >>> word_times("there are cats.", [(1, 0), (11, 2205)], 4410, 22050, 0.1)
    [(0.1, 0.1625, True), (0.1625, 0.2, False), (0.2, 0.3, True)]
    >>> word_times("hugh bit.", [(6, 2205)], 4410, 22050, 0.0)
    [(0.0, 0.1, False), (0.1, 0.2, True)]
    """
    words = spoken.split()
    index = np.cumsum([c == " " for c in spoken])  # word index of each character
    starts: dict[int, int] = {}
    for position, sample in events:
        starts.setdefault(int(index[position - 1]), sample)
    if not starts or max(starts) >= len(words):
        raise SynthesisError(f"eSpeak NG word events do not match {spoken!r}")
    # After some sentences eSpeak NG gives the next call's first word no
    # event: that word starts with the audio, and is marked as not measured.
    first_measured = 0 in starts
    starts.setdefault(0, 0)
    first = sorted(starts) + [len(words)]
    samples = [starts[i] for i in first[:-1]] + [n_raw]
    times: WordTimes = []
    for k in range(len(first) - 1):
        group = words[first[k] : first[k + 1]]
        letters = np.cumsum([0] + [len(w.strip(".,?")) for w in group])
        span = samples[k + 1] - samples[k]
        edges = [samples[k] + span * n / letters[-1] for n in letters]
        for j in range(len(group)):
            times.append(
                (
                    round(float(offset + edges[j] / rate), 4),
                    round(float(offset + edges[j + 1] / rate), 4),
                    j == 0 and (k > 0 or first_measured),
                )
            )
    return times


def render(spec: UttSpec, engine: Espeak) -> tuple[bytes, int, WordTimes]:
    """Synthesize one utterance; returns ``(flac_bytes, n_samples, word_times)``."""
    pieces: list[np.ndarray] = []
    words: WordTimes = []
    raw_rate = engine.sample_rate
    position = 0  # raw samples so far
    for i, sentence in enumerate(spec.sentences):
        raw = engine.synth(
            sentence,
            spec.voice_name,
            spec.rate,
            spec.pitch,
            spec.pitch_range,
            spec.noise_seed + i,
        )
        offset = spec.lead_s + position / raw_rate
        words += word_times(
            sentence, engine.word_events, raw.shape[0], raw_rate, offset
        )
        pieces.append(raw)
        position += raw.shape[0]
        if i < len(spec.pauses_s):
            gap = round(spec.pauses_s[i] * raw_rate)
            pieces.append(np.zeros(gap, dtype=np.int16))
            position += gap
    x = np.concatenate(pieces).astype(np.float32) / 32768.0
    if raw_rate != SAMPLE_RATE:
        x = _resample(x, raw_rate, SAMPLE_RATE)
    # Speech level: the RMS over the voiced part (frames above -40 dB of the
    # loudest), so that pauses do not change how loud a speaker is.
    frames = x[: len(x) // 160 * 160].reshape(-1, 160).astype(np.float64)
    energy = (frames**2).mean(axis=1)
    voiced = energy[energy > 1e-4 * energy.max()]
    x = x * (spec.level / float(np.sqrt(voiced.mean())))
    lead, trail = round(spec.lead_s * SAMPLE_RATE), round(spec.trail_s * SAMPLE_RATE)
    x = np.pad(x, (lead, trail))
    noise = np.random.default_rng(spec.noise_seed).standard_normal(x.shape[0])
    x = x + (spec.level * 10.0 ** (-spec.snr_db / 20.0)) * noise.astype(np.float32)
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue(), int(pcm.shape[0]), words


def synthesize_chunk(specs: Sequence[UttSpec]) -> list[tuple[bytes, int, WordTimes]]:
    """Render a chunk with a fresh eSpeak instance (worker entry point)."""
    engine = Espeak()
    try:
        return [render(spec, engine) for spec in specs]
    finally:
        engine.close()

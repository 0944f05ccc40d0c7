"""Noise recordings and room impulse responses for training augmentation.

Made from the seed, nothing downloaded, and written next to the corpus with
the CSVs that SpeechBrain's own ``AddNoise`` and ``AddReverb`` read
(``ID, duration, wav, wav_format, wav_opts``; paths start with
``$data_folder``, the folder holding ``LibriSpeech``'s splits, so the CSVs
stay valid wherever the corpus is moved).

Noises: coloured noise (spectral slope from white to brown), mains hum with
harmonics, and noise whose loudness drifts like traffic or a fan.  Rooms: a
direct path, a few early reflections, then a late tail of noise decaying
exponentially to -60 dB at the room's RT60 (0.15 to 0.8 s), 0 to 12 dB
below the direct path.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write_augmentation_data(folder, seed=0, n_noises=2, n_rooms=2)
{'noises': 2, 'rooms': 2}
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
NOISE_SECONDS = 8.0  # AddNoise(pad_noise=True) tiles it over longer speech
RT60_S = (0.15, 0.8)


def make_noise(rng: np.random.Generator, seconds: float = NOISE_SECONDS) -> np.ndarray:
    """One noise recording, float32 at 16 kHz, RMS 0.1.

    >>> x = make_noise(np.random.default_rng(0), 1.0)
    >>> x.shape, round(float(np.sqrt(np.mean(x**2))), 3)
    ((16000,), 0.1)
    """
    n = round(seconds * SAMPLE_RATE)
    kind = rng.integers(3)
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    # 1/f^slope power: 0 white, 1 pink, 2 brown.
    slope = rng.uniform(0.0, 2.0)
    spectrum *= np.maximum(freqs, 20.0) ** (-slope / 2)
    x = np.fft.irfft(spectrum, n)
    t = np.arange(n) / SAMPLE_RATE
    if kind == 1:  # mains hum over a quieter noise floor
        mains = rng.choice([50.0, 60.0])
        hum = sum(
            rng.uniform(0.2, 1.0)
            / k
            * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3))
            for k in range(1, 8)
        )
        x = x / np.std(x) * rng.uniform(0.1, 0.5) + hum / np.std(hum)
    elif kind == 2:  # loudness drifting over seconds
        drift = np.interp(t, np.linspace(0, seconds, 9), rng.uniform(0.2, 1.0, 9))
        x = x * drift
    x = x / np.sqrt(np.mean(x**2)) * 0.1
    return x.astype(np.float32)


def make_room(rng: np.random.Generator) -> np.ndarray:
    """One room impulse response, float32 at 16 kHz, peak 1 at the direct path.

    >>> h = make_room(np.random.default_rng(0))
    >>> int(np.argmax(np.abs(h))) < 160, float(np.abs(h).max())
    (True, 1.0)
    """
    rt60 = rng.uniform(*RT60_S)
    n = round(min(1.2 * rt60, 1.0) * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    delay = int(rng.integers(16, 120))  # source 0.3-2.6 m away
    h = np.zeros(n)
    # Late reverberation: -60 dB at rt60, starting after a few milliseconds,
    # with a direct-to-reverberant ratio of 0 to 12 dB (near to mid field).
    tail = rng.standard_normal(n) * 10.0 ** (-3.0 * t / rt60)
    start = delay + int(rng.integers(40, 160))
    tail = tail[: n - start]
    drr_db = rng.uniform(0.0, 12.0)
    h[start:] = tail * np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(tail**2))
    for _ in range(int(rng.integers(3, 8))):  # early reflections
        at = delay + int(rng.integers(30, 800))
        if at < n:
            h[at] += rng.uniform(-0.5, 0.5)
    h[delay] = 1.0
    return (h / np.abs(h).max()).astype(np.float32)


def _write(folder: Path, name: str, signals: list[np.ndarray], csv_path: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["ID", "duration", "wav", "wav_format", "wav_opts"])
        for i, x in enumerate(signals):
            # WAV, not FLAC: a glob for the corpus's *.flac finds only speech,
            # as in LibriSpeech itself.
            file = folder / f"{name}_{i:03d}.wav"
            sf.write(file, x, SAMPLE_RATE, format="WAV", subtype="PCM_16")
            rel = file.relative_to(csv_path.parent.parent).as_posix()
            duration = f"{len(x) / SAMPLE_RATE:.4f}"
            out.writerow(
                [f"{name}_{i:03d}", duration, f"$data_folder/{rel}", "wav", ""]
            )


def write_augmentation_data(
    folder: Path, seed: int, n_noises: int = 24, n_rooms: int = 24
) -> dict[str, int]:
    """Write ``folder/{noise,rir}/*.wav`` and ``folder/{noise,rir}.csv``."""
    rng = np.random.default_rng(random.Random(f"augmentation:{seed}").getrandbits(63))
    noises = [make_noise(rng) for _ in range(n_noises)]
    rooms = [make_room(rng) for _ in range(n_rooms)]
    _write(folder / "noise", "noise", noises, folder / "noise.csv")
    _write(folder / "rir", "rir", rooms, folder / "rir.csv")
    return {"noises": n_noises, "rooms": n_rooms}

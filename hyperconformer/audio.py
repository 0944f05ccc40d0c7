"""Audio loading for transcription: any readable file to 16 kHz mono float32.

Files are read with soundfile (WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF, ...);
what soundfile cannot read is tried with librosa. Channels are averaged and
the signal is resampled to the model's rate. Every expected problem (missing
file, not audio, empty or too short) raises :class:`TranscriptionError` with a
one-line message that names the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

__all__ = [
    "AUDIO_EXTENSIONS",
    "MIN_DURATION",
    "TranscriptionError",
    "collect_audio_files",
    "load_audio",
]

#: Shortest input (seconds) worth decoding: below this there is no speech, and
#: the 4x-subsampling front-end would leave only a frame or two.
MIN_DURATION = 0.1

#: Extensions picked up when a folder is given.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au"}
)


class TranscriptionError(Exception):
    """An expected problem with an audio input (a model folder: ModelFolderError).

    The message is one line and names the file; command-line tools print it
    without a traceback.
    """


def _read(path: Path) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 samples and their rate."""
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return data, int(rate)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as err:
        first_error = err
    # soundfile cannot read it; librosa may (through audioread), but it warns
    # loudly on its way there.
    try:
        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data, rate = librosa.load(str(path), sr=None, mono=False, dtype=np.float32)
    except Exception:
        reason = str(first_error).splitlines()[0] if str(first_error) else "unknown"
        raise TranscriptionError(
            f"{path}: not a readable audio file ({reason})"
        ) from None
    data = np.atleast_2d(data).T  # librosa gives (channels, frames)
    return np.ascontiguousarray(data), int(rate)


def load_audio(
    path: str | Path,
    sample_rate: int = 16000,
    min_duration: float = MIN_DURATION,
) -> torch.Tensor:
    """Load an audio file as mono float32 at ``sample_rate``.

    Arguments
    ---------
    path : str or Path
        Any format soundfile or librosa reads, any rate and channel count.
    sample_rate : int
        Rate of the returned signal.
    min_duration : float
        Shorter signals (seconds) are refused.

    Returns
    -------
    torch.Tensor
        (samples,) float32.

    Raises
    ------
    TranscriptionError
        The file is missing, not audio, empty, too short or not finite.

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> path = tempfile.mkdtemp() + "/stereo.wav"
    >>> soundfile.write(path, numpy.zeros((44100, 2)), 44100)
    >>> load_audio(path).shape
    torch.Size([16000])
    """
    path = Path(path)
    if not path.exists():
        raise TranscriptionError(f"{path}: no such file")
    if path.is_dir():
        raise TranscriptionError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise TranscriptionError(f"{path}: empty file")
    data, rate = _read(path)
    if data.size == 0:
        raise TranscriptionError(f"{path}: no audio samples")
    if rate <= 0:
        raise TranscriptionError(f"{path}: invalid sample rate {rate}")
    duration = data.shape[0] / rate
    if duration < min_duration:
        raise TranscriptionError(
            f"{path}: too short ({duration:.3f} s; at least {min_duration} s needed)"
        )
    wav = torch.from_numpy(data).mean(dim=1)
    if not torch.isfinite(wav).all():
        raise TranscriptionError(f"{path}: audio contains NaN or infinite samples")
    if rate != sample_rate:
        wav = AF.resample(wav, rate, sample_rate)
    return wav.contiguous()


def collect_audio_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand folders (recursively, sorted) into their audio files.

    Files are kept as given, even when missing or not audio, so that loading
    reports them; a folder without audio files raises.

    Arguments
    ---------
    inputs : iterable of str or Path
        Files and folders.

    Returns
    -------
    list[Path]

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("b.flac", "a.wav", "notes.txt"):
    ...     _ = (folder / name).write_bytes(b"")
    >>> [p.name for p in collect_audio_files([folder, "missing.wav"])]
    ['a.wav', 'b.flac', 'missing.wav']
    """
    files: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = sorted(
                p
                for p in item.rglob("*")
                if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
            )
            if not found:
                raise TranscriptionError(f"{item}: folder holds no audio files")
            files.extend(found)
        else:
            files.append(item)
    return files

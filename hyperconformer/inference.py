"""Transcribe audio with a model folder: the :class:`Transcriber`.

A model folder (see :mod:`hyperconformer.folder`) also loads with
SpeechBrain's stock ``EncoderDecoderASR`` and transcribes the same.
:class:`Transcriber` adds what the stock class lacks: safe loading, CTC-only
decoding, decoding settings at load time, long recordings (cut at pauses,
see :mod:`hyperconformer.segmentation`, or in overlapping windows, see
:mod:`hyperconformer.longform`; measured in ``docs/benchmarks_longform.md``)
and per-file errors.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from speechbrain.utils.data_utils import batch_pad_right

from hyperconformer.audio import TranscriptionError, load_audio
from hyperconformer.folder import load_model_folder
from hyperconformer.longform import (
    Word,
    ctc_spans,
    decode_in_windows,
    token_words,
)
from hyperconformer.pauses import find_pauses, keep_out_of_pauses
from hyperconformer.search import build_searcher, ctc_decode, ctc_prefix_searcher
from hyperconformer.segmentation import decode_segments, pause_segments

if TYPE_CHECKING:
    from hyperconformer.live import StreamEvent

__all__ = ["FileResult", "Transcriber"]


@dataclass
class FileResult:
    """One input file's outcome.

    ``decoding_time`` is the wall time of the batch that decoded the file,
    shared among the batch's files in proportion to their duration.
    ``words`` (when asked for) holds each word's start and end in seconds
    from the start of the file, from the CTC alignment of the transcript
    kept out of the pauses of the audio (see :mod:`hyperconformer.pauses`).
    """

    file: str
    transcript: str | None = None
    duration: float | None = None
    decoding_time: float | None = None
    error: str | None = None
    words: list[Word] | None = None


@dataclass
class _Hyp:
    text: str
    words: list[Word] | None = None  # seconds from the start of the input


class Transcriber:
    """Speech-to-text with an exported model folder.

    Build it with :meth:`from_pretrained`.

    Arguments
    ---------
    hparams : dict
        The loaded ``hyperparams.yaml`` with weights in place.
    device : str
        "cpu", "cuda", "cuda:1", ...
    beam_size : int, optional
        Beam size; the folder's default if None. With ``ctc_only``, None or 1
        means greedy CTC and more means CTC prefix beam search.
    ctc_weight : float, optional
        CTC weight in joint attention/CTC beam search; the folder's default
        if None.
    ctc_only : bool
        Decode with the CTC head alone (fast).
    chunk_seconds : float, optional
        Longer inputs are transcribed in pieces of at most this length; None
        or 0 transcribes every input in one pass.
    overlap_seconds : float
        Least overlap between neighbouring windows (``long_form="windows"``).
    long_form : str
        How longer inputs are cut: "pauses" (default) cuts them in their
        pauses and decodes each piece like an utterance
        (:func:`~hyperconformer.segmentation.pause_segments`); "windows"
        decodes equally spaced overlapping windows and stitches them by time
        (:func:`~hyperconformer.longform.decode_in_windows`).
    batch_size : int
        Windows decoded together for long inputs (files per batch in
        :meth:`transcribe_files`).
    ctc_scoring : str
        How joint decoding applies CTC: "full" scores every token at every
        step, as the folder's decoder and SpeechBrain's ``EncoderDecoderASR``
        do (same transcripts; :class:`~hyperconformer.JointBeamSearcher`
        computes exactly only what can change the result); "partial" scores
        only the ``2 x beam`` best attention candidates of each hypothesis,
        as SpeechBrain's ``partial_scorers`` (a different search).
    word_pauses : bool
        Keep timed words out of the pauses of the audio
        (:mod:`hyperconformer.pauses`); False gives the CTC alignment alone.
    """

    def __init__(
        self,
        hparams: dict,
        device: str = "cpu",
        beam_size: int | None = None,
        ctc_weight: float | None = None,
        ctc_only: bool = False,
        chunk_seconds: float | None = 20.0,
        overlap_seconds: float = 5.0,
        batch_size: int = 8,
        ctc_scoring: str = "full",
        word_pauses: bool = True,
        long_form: str = "pauses",
    ) -> None:
        if beam_size is not None and beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        if ctc_weight is not None and not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if chunk_seconds and not 0 <= overlap_seconds < chunk_seconds / 2:
            raise ValueError(
                "overlap_seconds must be in [0, chunk_seconds / 2), "
                f"got {overlap_seconds} for chunk_seconds={chunk_seconds}"
            )
        self.hparams = hparams
        self.device = torch.device(device)
        self.sample_rate = int(hparams["sample_rate"])
        self.tokenizer = hparams["tokenizer"]
        self.encoder = hparams["encoder"]
        self.ctc_lin = hparams["ctc_lin"]
        self.blank_index = int(hparams.get("blank_index", 0))
        self.ctc_only = ctc_only
        self.batch_size = batch_size
        self.chunk_seconds = chunk_seconds or None
        self.overlap_seconds = overlap_seconds
        if long_form not in ("pauses", "windows"):
            raise ValueError(
                f"long_form must be 'pauses' or 'windows', got {long_form!r}"
            )
        self.long_form = long_form
        self.beam_size = beam_size
        if ctc_scoring not in ("full", "partial"):
            raise ValueError(
                f"ctc_scoring must be 'full' or 'partial', got {ctc_scoring!r}"
            )
        self.ctc_scoring = ctc_scoring
        self.word_pauses = word_pauses
        self.decoder = hparams["decoder"]
        if not ctc_only:
            self.decoder = build_searcher(
                hparams["decoder"],
                self.ctc_lin,
                self.blank_index,
                beam_size,
                ctc_weight,
                ctc_scoring == "partial",
            )
        self._prefix_searcher = None
        if ctc_only and beam_size is not None and beam_size > 1:
            self._prefix_searcher = ctc_prefix_searcher(
                self.tokenizer, self.ctc_lin, self.blank_index, beam_size
            )

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls, source: str | Path, device: str = "cpu", **kwargs
    ) -> Transcriber:
        """Load a model folder safely (see :mod:`hyperconformer.folder`).

        Arguments
        ---------
        source : str or Path
            Folder with hyperparams.yaml, model.ckpt (or asr.ckpt),
            tokenizer.ckpt (or tokenizer.model) and normalizer.ckpt.
        device : str
            Where to run.
        **kwargs
            Decoding options, see :class:`Transcriber`.

        Returns
        -------
        Transcriber

        Raises
        ------
        ModelFolderError
            A part is missing, unsafe or does not fit the others
            (see :mod:`hyperconformer.folder`).
        ValueError
            A decoding option is out of range, or CUDA is not available.

        Example
        -------
        >>> asr = Transcriber.from_pretrained("model", ctc_only=True)  # doctest: +SKIP
        >>> asr.transcribe_file("speech.flac")  # doctest: +SKIP
        'HELLO WORLD'
        """
        device = str(device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device}: CUDA is not available")
        hparams = load_model_folder(source)
        normalizer = hparams.get("normalizer", hparams.get("normalize"))
        for key in ("asr_model", "compute_features", "encoder", "lm_model"):
            if isinstance(hparams.get(key), torch.nn.Module):
                hparams[key].to(device).eval()
        if normalizer is not None:
            normalizer.to(device)  # its statistics are plain attributes
            normalizer.eval()
        if isinstance(hparams["decoder"], torch.nn.Module):
            hparams["decoder"].to(device).eval()
        return cls(hparams, device=device, **kwargs)

    # ------------------------------------------------------------------ decoding

    @torch.no_grad()
    def _decode(
        self, wavs: torch.Tensor, wav_lens: torch.Tensor, timed: bool = False
    ) -> list[_Hyp]:
        """Decode one batch.

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) at ``sample_rate``.
        wav_lens : torch.Tensor
            (batch,) relative lengths.
        timed : bool
            Also return words with times (seconds from the start of each row).

        Returns
        -------
        list[_Hyp]
        """
        wavs = wavs.to(self.device, torch.float32)
        wav_lens = wav_lens.to(self.device, torch.float32)
        return self._decode_encoded(self.encoder(wavs, wav_lens), wavs, wav_lens, timed)

    @torch.no_grad()
    def _decode_encoded(
        self,
        enc: torch.Tensor,
        wavs: torch.Tensor,
        wav_lens: torch.Tensor,
        timed: bool = False,
    ) -> list[_Hyp]:
        """:meth:`_decode` from the encoder output (batch, frames, d_model)
        of ``wavs`` (also what :mod:`hyperconformer.live` decodes a segment
        of a stream with)."""
        wavs = wavs.to(self.device, torch.float32)
        wav_lens = wav_lens.to(self.device, torch.float32)
        n_frames = enc.size(1)
        frame_seconds = wavs.size(1) / self.sample_rate / max(n_frames, 1)
        enc_lens = torch.round(wav_lens * n_frames).long().clamp(1, n_frames).tolist()
        need_ctc = self.ctc_only or timed
        log_probs = None
        if need_ctc:
            log_probs = torch.log_softmax(self.ctc_lin(enc), dim=-1).float()

        if self.ctc_only:
            rows = ctc_decode(
                log_probs,
                wav_lens,
                enc_lens,
                self.tokenizer,
                frame_seconds,
                self.blank_index,
                self._prefix_searcher,
            )
            hyps = [_Hyp(text, words if timed else None) for text, words in rows]
        else:
            hyps = []
            token_seqs, _, _, _ = self.decoder(enc, wav_lens)
            for i, tokens in enumerate(token_seqs):
                tokens = [int(t) for t in tokens]
                words = None
                if timed:
                    lp = log_probs[i, : enc_lens[i]]
                    spans = ctc_spans(lp, tokens, self.blank_index)
                    words = token_words(self.tokenizer, tokens, spans, frame_seconds)
                hyps.append(_Hyp(self.tokenizer.decode_ids(tokens), words))
        if timed and self.word_pauses:
            # The alignment, kept out of the silences of each row's audio.
            lengths = torch.round(wav_lens * wavs.size(1)).long().tolist()
            for hyp, wav, n in zip(hyps, wavs, lengths, strict=True):
                pauses = find_pauses(wav[:n], self.sample_rate)
                hyp.words = keep_out_of_pauses(hyp.words, pauses)
        return hyps

    def _transcribe_long(self, wav: torch.Tensor) -> _Hyp:
        """(samples,) signal longer than ``chunk_seconds`` -> text and
        words, from pieces cut at pauses or from stitched windows."""

        def timed_words(batch, lens):
            return [hyp.words for hyp in self._decode(batch, lens, timed=True)]

        if self.long_form == "pauses":
            words = decode_segments(
                wav,
                pause_segments(wav, self.sample_rate, self.chunk_seconds),
                timed_words,
                self.batch_size,
                self.sample_rate,
            )
        else:
            words = decode_in_windows(
                wav,
                lambda batch: timed_words(batch, torch.ones(len(batch))),
                int(self.chunk_seconds * self.sample_rate),
                int(self.overlap_seconds * self.sample_rate),
                self.batch_size,
                self.sample_rate,
            )
        return _Hyp(" ".join(w.text for w in words), words)

    # ------------------------------------------------------------------ public

    def transcribe_batch(
        self, wavs: torch.Tensor, wav_lens: torch.Tensor | None = None
    ) -> list[str]:
        """Transcribe a padded batch of signals.

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) float at ``sample_rate`` (16 kHz), or (samples,).
        wav_lens : torch.Tensor, optional
            (batch,) lengths relative to ``samples``, as in SpeechBrain;
            all 1.0 if None.

        Returns
        -------
        list[str]
            One transcript per row. Rows longer than ``chunk_seconds`` are
            transcribed in overlapping windows.
        """
        return [hyp.text for hyp in self._transcribe_rows(wavs, wav_lens, False)]

    def transcribe_words(
        self, wavs: torch.Tensor, wav_lens: torch.Tensor | None = None
    ) -> list[list[Word]]:
        """Transcribe a padded batch into timed words.

        As :meth:`transcribe_batch`, but each row gives its words with start
        and end times in seconds from the start of the row, from the CTC
        alignment of the transcript (across windows for long rows).

        Example
        -------
        >>> asr.transcribe_words(wav)[0][:1]  # doctest: +SKIP
        [Word(text='HELLO', start=0.52, end=0.84)]
        """
        return [hyp.words for hyp in self._transcribe_rows(wavs, wav_lens, True)]

    def _transcribe_rows(
        self, wavs: torch.Tensor, wav_lens: torch.Tensor | None, timed: bool
    ) -> list[_Hyp]:
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be (batch, samples), got {tuple(wavs.shape)}")
        batch, samples = wavs.shape
        if wav_lens is None:
            wav_lens = torch.ones(batch)
        wav_lens = wav_lens.detach().float().cpu()
        lengths = torch.round(wav_lens * samples).long().clamp(1, samples).tolist()
        if not any(self._is_long(n) for n in lengths):
            return self._decode(wavs, wav_lens, timed)
        return self._transcribe_signals(
            [wavs[i, :n] for i, n in enumerate(lengths)], timed
        )

    def _is_long(self, samples: int) -> bool:
        return (
            bool(self.chunk_seconds) and samples > self.chunk_seconds * self.sample_rate
        )

    def _transcribe_signals(
        self, signals: list[torch.Tensor], timed: bool
    ) -> list[_Hyp]:
        """(samples,) signals -> hypotheses: the short ones in one padded
        batch, each long one alone in windows (so no padded batch is ever as
        long as a long signal)."""
        hyps: list[_Hyp | None] = [None] * len(signals)
        short = [i for i, w in enumerate(signals) if not self._is_long(w.numel())]
        if short:
            batch, rel = batch_pad_right([signals[i] for i in short])
            for i, hyp in zip(short, self._decode(batch, rel, timed), strict=True):
                hyps[i] = hyp
        for i, wav in enumerate(signals):
            if hyps[i] is None:
                hyps[i] = self._transcribe_long(wav)
        return hyps

    def stream(
        self,
        pieces: Iterable[torch.Tensor],
        chunk_size: int | None = None,
        **endpointing: float,
    ) -> Iterator[StreamEvent]:
        """Transcribe (samples,) mono audio pieces of any size as they come:
        partial and final :class:`~hyperconformer.live.StreamEvent` s, from a
        :class:`~hyperconformer.live.LiveTranscription` (``chunk_size`` and
        ``endpointing``: its arguments; a folder trained offline needs a
        ``chunk_size``, or raises ModelFolderError at once).

        Example
        -------
        >>> for event in asr.stream(microphone_pieces()):  # doctest: +SKIP
        ...     print(event.kind, event.text)
        """
        from hyperconformer.live import LiveTranscription

        return LiveTranscription(self, chunk_size, **endpointing).events(pieces)

    def transcribe_file(self, path: str | Path) -> str:
        """Transcribe one audio file (any format, rate and channel count).

        Raises
        ------
        TranscriptionError
            The file is missing, not audio, empty or too short.
        """
        wav = load_audio(path, self.sample_rate)
        return self.transcribe_batch(wav.unsqueeze(0))[0]

    def transcribe_files(
        self,
        paths: Iterable[str | Path],
        batch_size: int | None = None,
        progress: bool | None = False,
        words: bool = False,
    ) -> Iterator[FileResult]:
        """Transcribe many files in batches, in input order.

        Files that cannot be read give a result with ``error`` set; the
        others are still transcribed.

        Arguments
        ---------
        paths : iterable of str or Path
            Audio files.
        batch_size : int, optional
            Files decoded together; the transcriber's ``batch_size`` if None.
        progress : bool or None
            Show a tqdm bar on stderr; None shows it only on a terminal.
        words : bool
            Also give each file's timed words (``FileResult.words``).

        Yields
        ------
        FileResult
        """
        from tqdm import tqdm

        paths = [Path(p) for p in paths]
        batch_size = batch_size or self.batch_size
        bar = tqdm(
            total=len(paths),
            unit="file",
            disable=None if progress is None else not progress,
            dynamic_ncols=True,
        )
        try:
            for first in range(0, len(paths), batch_size):
                chunk = paths[first : first + batch_size]
                results = [FileResult(str(p)) for p in chunk]
                loaded: list[tuple[int, torch.Tensor]] = []
                for i, path in enumerate(chunk):
                    try:
                        wav = load_audio(path, self.sample_rate)
                    except TranscriptionError as err:
                        results[i].error = str(err)
                        continue
                    results[i].duration = wav.numel() / self.sample_rate
                    loaded.append((i, wav))
                if loaded:
                    started = time.perf_counter()
                    signals = [w for _, w in loaded]
                    hyps = self._transcribe_signals(signals, words)
                    # The batch's time, shared in proportion to duration.
                    share = (time.perf_counter() - started) / sum(
                        w.numel() for w in signals
                    )
                    for (i, w), hyp in zip(loaded, hyps, strict=True):
                        results[i].transcript = hyp.text
                        results[i].words = hyp.words if words else None
                        results[i].decoding_time = share * w.numel()
                for result in results:
                    bar.update(1)
                    yield result
        finally:
            bar.close()

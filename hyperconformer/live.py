"""Live transcription of a stream: partial results as the audio arrives, a
final result for each segment of speech.

Audio arrives in pieces of any size and is encoded chunk by chunk
(:class:`hyperconformer.StreamingEncoder`: the whole past as context, a
state of constant size). The stream is cut into segments at pauses
(:mod:`hyperconformer.endpoint`). Two kinds of :class:`StreamEvent`:

``partial``
    After each encoded chunk whose greedy CTC text of the current segment
    (the best path over the segment's frames so far) differs from the last
    one: cheap, and the frames' best outputs are all a segment keeps for it.
``final``
    When a segment ends (an endpoint, or the end of the stream): the
    segment's encoder frames decoded as the offline :class:`Transcriber`
    decodes an utterance's (the same joint CTC/attention searcher, or CTC
    alone for a ``ctc_only`` transcriber), with timed words from the CTC
    alignment kept out of the pauses of the segment's audio (and within the
    segment), in seconds from the start of the stream.

Memory is bounded over an unbounded stream: a segment's encoder frames and
audio are dropped once it is decoded, a segment is at most
``max_segment_seconds`` long, and the encoder's state does not grow.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from hyperconformer.endpoint import CausalSilence, Endpointer
from hyperconformer.longform import Word
from hyperconformer.search import best_path_tokens
from hyperconformer.streaming import StreamingEncoder

if TYPE_CHECKING:
    from hyperconformer.inference import Transcriber

__all__ = ["LiveTranscription", "StreamEvent"]


@dataclass
class StreamEvent:
    """A result of a live transcription.

    ``kind`` is "partial" or "final"; ``start`` and ``end`` bound the
    segment (for a partial: so far) in seconds from the start of the stream;
    ``words`` (finals only) are timed on the same clock.
    """

    kind: str
    text: str
    start: float
    end: float
    words: list[Word] | None = None


class LiveTranscription:
    """Transcribe one stream of audio as it arrives (module docstring).

    Build it with :meth:`Transcriber.stream` or directly.

    Arguments
    ---------
    transcriber : Transcriber
        Its model (a folder trained for streaming) and decoding settings.
    chunk_size : int, optional
        Encoder frames per chunk; the folder's ``streaming_chunk_size`` if
        None (a folder without one needs it).
    endpoint_seconds : float
        A pause this long ends a segment (see :mod:`hyperconformer.endpoint`).
    max_segment_seconds : float
        A segment ends at this length, pause or not.

    Example
    -------
    >>> asr = Transcriber.from_pretrained("model")  # doctest: +SKIP
    >>> live = LiveTranscription(asr)  # doctest: +SKIP
    >>> for piece in microphone_pieces():  # doctest: +SKIP
    ...     for event in live.push(piece):
    ...         print(event.kind, event.text)
    >>> events = live.finish()  # doctest: +SKIP
    """

    def __init__(
        self,
        transcriber: Transcriber,
        chunk_size: int | None = None,
        endpoint_seconds: float = 0.5,
        max_segment_seconds: float = 20.0,
    ) -> None:
        self.asr = transcriber
        self.encoder = StreamingEncoder.from_hparams(transcriber.hparams, chunk_size)
        self.frame_samples = self.encoder.frame_samples
        self.frame_seconds = self.frame_samples / transcriber.sample_rate
        if endpoint_seconds <= 0 or max_segment_seconds < endpoint_seconds:
            raise ValueError(
                "endpoint_seconds must be positive and at most "
                f"max_segment_seconds, got {endpoint_seconds} and "
                f"{max_segment_seconds}"
            )
        self.silence = CausalSilence(transcriber.sample_rate)
        self.endpoints = Endpointer(
            max(1, round(endpoint_seconds / self.frame_seconds)),
            max(1, round(max_segment_seconds / self.frame_seconds)),
        )
        self.silent_per_frame = self.frame_samples // self.silence.hop
        self.start = 0  # stream frame where the current segment starts
        self.pieces: list[torch.Tensor] = []  # its encoder frames, (1, n, d)
        self.best: list[int] = []  # the best CTC output of each of its frames
        self.audio = torch.zeros(0)  # samples from the segment's start on
        self.partial = ""
        self.ended = False

    @torch.no_grad()
    def push(self, samples: torch.Tensor | np.ndarray) -> list[StreamEvent]:
        """Feed (samples,) mono audio at the model's sample rate; returns
        the events it completes (possibly none)."""
        if self.ended:
            raise ValueError("this stream has ended: start a new one")
        samples = torch.as_tensor(samples, dtype=torch.float32)
        if samples.dim() != 1:
            raise ValueError(
                f"push expects (samples,) mono audio, got {tuple(samples.shape)}"
            )
        self.audio = torch.cat((self.audio, samples))
        self.silence.push(samples)
        return self._frames(self.encoder.push(samples[None].to(self.asr.device)))

    @torch.no_grad()
    def finish(self) -> list[StreamEvent]:
        """End the stream: the events still to come (the last segment's
        final, if it holds speech)."""
        if self.ended:
            raise ValueError("this stream has ended: start a new one")
        self.ended = True
        events = self._frames(self.encoder.finish())
        if self.endpoints.frames:  # the segment so far ends with the stream
            events += self._close(self.endpoints.speech)
        return events

    def events(
        self, pieces: Iterable[torch.Tensor | np.ndarray]
    ) -> Iterator[StreamEvent]:
        """Push every piece, then finish: the events as they come."""
        for piece in pieces:
            yield from self.push(piece)
        yield from self.finish()

    def state_bytes(self) -> int:
        """Bytes of every tensor the stream holds: the encoder's state and
        buffers, and the current segment's frames, best outputs and audio."""
        held = self.encoder.state_bytes() + self.silence.state_bytes()
        held += sum(p.numel() * p.element_size() for p in self.pieces)
        return held + 8 * len(self.best) + self.audio.numel() * 4

    def _frames(self, enc: torch.Tensor) -> list[StreamEvent]:
        """New encoder frames (1, n, d_model): segments ended, then a partial."""
        events: list[StreamEvent] = []
        if enc.size(1) == 0:
            return events
        best = self.asr.ctc_lin(enc).argmax(-1)[0].tolist()
        first = 0  # first frame of enc not yet in an ended segment
        for i, token in enumerate(best):
            self.best.append(token)
            silent = all(self.silence.take(self.silent_per_frame))
            end = self.endpoints.step(silent)
            if end is not None:
                self.pieces.append(enc[:, first : i + 1])
                first = i + 1
                events += self._close(end == Endpointer.FINAL)
        if first < enc.size(1):
            self.pieces.append(enc[:, first:])
        if self.endpoints.speech:  # every partial is followed by a final
            tokens, _ = best_path_tokens(torch.tensor(self.best), self.asr.blank_index)
            text = self.asr.tokenizer.decode_ids(tokens)
            if text != self.partial:
                self.partial = text
                end = (self.start + len(self.best)) * self.frame_seconds
                events.append(
                    StreamEvent("partial", text, self.start * self.frame_seconds, end)
                )
        return events

    def _close(self, decode: bool) -> list[StreamEvent]:
        """End the current segment: its final if ``decode``; its frames and
        audio dropped either way."""
        frames = torch.cat(self.pieces, 1)
        n, start = frames.size(1), self.start * self.frame_seconds
        samples = n * self.frame_samples
        audio = self.audio[:samples]
        # The stream's last frames may reach past its audio: silence.
        audio = torch.nn.functional.pad(audio, (0, samples - audio.numel()))
        self.audio = self.audio[samples:].clone()  # not a view of the segment
        self.start += n
        self.pieces, self.best, self.partial = [], [], ""
        if not decode:
            return []
        hyp = self.asr._decode_encoded(frames, audio[None], torch.ones(1), timed=True)
        end = start + n * self.frame_seconds
        # Kept within the segment: a word the alignment puts in the trailing
        # pause ends at the segment's end, not in the next segment.
        words = [
            Word(w.text, min(w.start + start, end), min(w.end + start, end))
            for w in hyp[0].words
        ]
        return [StreamEvent("final", hyp[0].text, start, end, words)]

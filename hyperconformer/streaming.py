"""Streaming encoding: audio in, encoder frames out, chunk by chunk.

A stream is fed audio in pieces of any size and returns, as soon as they
can be computed, exactly the encoder outputs of one chunked pass over the
whole recording (``HyperConformerASR.encode`` with the stream's chunk size),
with a state whose size does not grow with the stream:

* features (:class:`hyperconformer.CausalFbank`): each frame is computed once
  its window of samples has arrived, from the samples it covers; the dB
  floor follows the running maximum;
* normalisation with global statistics (SpeechBrain's ``InputNormalization``,
  ``norm_type="global"``), frame by frame, and with
  :class:`hyperconformer.CausalNormalization` by the running statistics of
  the stream so far;
* the convolutional front-end (:class:`hyperconformer.ConvFrontEnd`): each
  output frame once its receptive field has arrived, with the left context
  it needs (a few frames) kept from before;
* the encoder, one chunk of ``chunk_size`` frames at a time, from the
  per-block state (HyperMixing sums, convolution left context).

Latency: a chunk is encoded as soon as its audio has arrived, plus what its
last frame's receptive field reaches past it: for the recipes' front-end
(two stride-2, kernel-3 convolutions on 10 ms frames of 25 ms windows) 41
samples (2.6 ms), checked by a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hyperconformer.features import CausalNormalization

if TYPE_CHECKING:
    from hyperconformer.encoder import LayerState
    from hyperconformer.features import CausalFbank, NormalizationState
    from hyperconformer.frontend import ConvFrontEnd
    from hyperconformer.model import HyperConformerASR

__all__ = ["EncoderStreamContext", "StreamingEncoder", "chunk_size_of"]


@dataclass
class EncoderStreamContext:
    """The encoder's side of a stream (:meth:`HyperConformerASR.encode_streaming`).

    chunk_size : encoder frames per chunk.
    layers : one :class:`hyperconformer.encoder.LayerState` per block (None
        before the first chunk).
    frames : encoder frames encoded so far.
    ended : True once a chunk shorter than ``chunk_size`` (the last) was fed.
    """

    chunk_size: int
    layers: list[LayerState] | None = field(default=None, repr=False)
    frames: int = 0
    ended: bool = False


def chunk_size_of(dynchunktrain_config: object | None) -> int | None:
    """Encoder frames per chunk of a SpeechBrain ``DynChunkTrainConfig``
    (None: offline).

    Example
    -------
    >>> from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig
    >>> chunk_size_of(DynChunkTrainConfig(chunk_size=16))
    16
    """
    if dynchunktrain_config is None:
        return None
    if not dynchunktrain_config.is_infinite_left_context():
        left = dynchunktrain_config.left_context_size
        raise ValueError(
            "HyperConformerASR mixes with the whole past: the streaming config's "
            f"left_context_size must be None, got {left}"
        )
    return dynchunktrain_config.chunk_size


class _CentredStream:
    """Feeds a stream to a centred, strided filter along dim 1 (an STFT, a
    "same"-padded CNN) and returns exactly its whole-input outputs.

    Output ``j`` of ``fn`` is centred on input ``stride * j`` and reaches at
    most ``reach`` inputs on either side; ``count(n)`` is its number of
    outputs for ``n`` inputs. ``fn`` runs on a window of the inputs that
    starts on a multiple of ``stride``; only outputs whose reach lies inside
    the window are kept, so the window's own padding never shows.
    """

    def __init__(
        self, fn: Callable, stride: int, reach: int, count: Callable[[int], int]
    ) -> None:
        self.fn, self.stride, self.reach, self.count = fn, stride, reach, count
        self.window: torch.Tensor | None = None  # inputs from `start` on
        self.start = 0  # stream index of window[:, 0]
        self.received = 0  # inputs so far
        self.done = 0  # outputs so far

    def push(self, x: torch.Tensor) -> torch.Tensor | None:
        """Add inputs (batch, n, ...); the outputs now complete, or None."""
        self.window = x if self.window is None else torch.cat((self.window, x), 1)
        self.received += x.size(1)
        return self._emit((self.received - 1 - self.reach) // self.stride + 1)

    def finish(self) -> torch.Tensor | None:
        """The outputs left at the end of the stream (its end padded as a
        whole-input pass pads it)."""
        return self._emit(self.count(self.received))

    def _emit(self, upto: int) -> torch.Tensor | None:
        if upto <= self.done or self.window is None:
            return None
        first = self.start // self.stride
        out = self.fn(self.window)[:, self.done - first : upto - first]
        self.done = upto
        # Keep what the next output reaches back to, from a stride boundary.
        keep = max(0, (upto * self.stride - self.reach) // self.stride * self.stride)
        self.window = self.window[:, keep - self.start :]
        self.start = keep
        return out

    def tensors(self) -> list[torch.Tensor]:
        return [] if self.window is None else [self.window]


class StreamingEncoder:
    """Encode a stream of audio chunk by chunk, as one chunked pass would.

    Arguments
    ---------
    features : CausalFbank
        Feature extraction (a plain ``Fbank``'s floor needs the whole
        utterance: see :mod:`hyperconformer.features`).
    normalize : speechbrain.processing.features.InputNormalization
        With ``norm_type="global"`` (per-sentence statistics need the whole
        utterance), or a :class:`hyperconformer.CausalNormalization`.
    frontend : ConvFrontEnd
        With "same" padding.
    model : HyperConformerASR
        Its encoder encodes the stream.
    chunk_size : int
        Encoder frames per chunk (16 frames: 640 ms with 4x subsampling).

    Example
    -------
    >>> from speechbrain.processing.features import InputNormalization
    >>> from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig
    >>> from hyperconformer import ConvFrontEnd, CausalFbank, HyperConformerASR
    >>> fbank, norm = CausalFbank(n_mels=40), InputNormalization().eval()
    >>> norm.glob_mean, norm.glob_std = torch.zeros(40), torch.ones(40)
    >>> cnn = ConvFrontEnd((None, None, 40), num_blocks=2, num_layers_per_block=1,
    ...     out_channels=(8, 8), kernel_sizes=(3, 3), strides=(2, 2),
    ...     residuals=(False, False)).eval()
    >>> model = HyperConformerASR(input_size=80, tgt_vocab=30, d_model=32,
    ...     nhead=4, num_encoder_layers=2, num_decoder_layers=1, d_ffn=64).eval()
    >>> wav = torch.randn(1, 24000)
    >>> stream = StreamingEncoder(fbank, norm, cnn, model, chunk_size=8)
    >>> with torch.no_grad():
    ...     pieces = [stream.push(wav[:, i : i + 3000]) for i in range(0, 24000, 3000)]
    ...     streamed = torch.cat(pieces + [stream.finish()], 1)
    ...     feats = norm(fbank(wav), torch.ones(1))
    ...     whole = model.encode(cnn(feats), None, 0, DynChunkTrainConfig(8))
    >>> streamed.shape
    torch.Size([1, 38, 32])
    >>> bool((streamed - whole).abs().max() < 1e-4)
    True
    """

    def __init__(
        self,
        features: CausalFbank,
        normalize: torch.nn.Module,
        frontend: ConvFrontEnd,
        model: HyperConformerASR,
        chunk_size: int,
    ) -> None:
        from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

        if not hasattr(features, "floor"):
            raise ValueError(
                "streaming needs CausalFbank features (a plain Fbank's dB floor "
                f"needs the whole utterance), got {type(features).__name__}"
            )
        if getattr(normalize, "norm_type", None) != "global":
            raise ValueError(
                "streaming needs InputNormalization(norm_type='global'), got "
                f"norm_type={getattr(normalize, 'norm_type', None)!r}"
            )
        if normalize.training:
            raise ValueError(
                "the normalizer is in training mode and would update its "
                "statistics with the stream: call .eval() on it"
            )
        stft = features.compute_STFT.get_filter_properties()
        hop = stft.stride
        self.features, self.normalize, self.model = features, normalize, model
        self.fbank = _CentredStream(
            features.log_mel, hop, stft.window_size // 2, lambda n: n // hop + 1
        )
        cnn = frontend.get_filter_properties()
        if any(
            layer.padding != "same"
            for b in frontend.blocks
            for layer in b.all_conv_layers()
        ):
            raise ValueError("streaming needs a ConvFrontEnd with padding='same'")
        self.frontend = _CentredStream(
            frontend, cnn.stride, cnn.window_size // 2, frontend.output_frames
        )
        self.context = model.make_streaming_context(DynChunkTrainConfig(chunk_size))
        self.peak: torch.Tensor | None = None  # running maximum of the features
        self.norm_state: NormalizationState | None = None  # running statistics
        self.pending: torch.Tensor | None = None  # front-end frames not encoded
        self.empty = torch.zeros(1, 0, model.d_model)  # no frames, batch shape

    @classmethod
    def from_model_folder(
        cls, folder: str | Path, chunk_size: int | None = None
    ) -> StreamingEncoder:
        """A stream of an exported model folder, in the chunks it was trained
        for (its ``streaming_chunk_size``) unless ``chunk_size`` is given.

        Example
        -------
        >>> stream = StreamingEncoder.from_model_folder("model")  # doctest: +SKIP
        """
        from hyperconformer.folder import load_model_folder

        return cls.from_hparams(load_model_folder(folder), chunk_size, str(folder))

    @classmethod
    def from_hparams(
        cls, hparams: dict, chunk_size: int | None = None, name: str = "model"
    ) -> StreamingEncoder:
        """A stream of a loaded model folder's modules (see
        :meth:`from_model_folder`); ``name`` names the model in errors.

        Example
        -------
        >>> from hyperconformer.folder import load_model_folder
        >>> hparams = load_model_folder("model")  # doctest: +SKIP
        >>> stream = StreamingEncoder.from_hparams(hparams)  # doctest: +SKIP
        """
        from hyperconformer.folder import ModelFolderError

        chunk_size = chunk_size or hparams.get("streaming_chunk_size")
        if not chunk_size:
            raise ModelFolderError(
                f"{name}: not trained for streaming (no streaming_chunk_size); "
                "give a chunk size to stream it anyway"
            )
        modules = [hparams[k].eval() for k in ("compute_features", "normalizer")]
        cnn, model = hparams["CNN"].eval(), hparams["Transformer"].eval()
        return cls(*modules, cnn, model, int(chunk_size))

    @property
    def frame_samples(self) -> int:
        """Samples per encoder frame (640: 10 ms hops, 4x subsampling);
        encoder frame ``j`` stands for samples ``[j, j + 1) * frame_samples``."""
        return self.fbank.stride * self.frontend.stride

    def _features(self, log_mel: torch.Tensor | None) -> torch.Tensor | None:
        if log_mel is None:
            return None
        feats, self.peak = self.features.floor(log_mel, self.peak)
        if not isinstance(self.normalize, CausalNormalization):
            return self.normalize(feats, torch.ones(feats.size(0), device=feats.device))
        feats = self.normalize.global_norm(feats)
        feats, self.norm_state = self.normalize.causal(feats, self.norm_state)
        return feats

    def _encode(self, frames: torch.Tensor | None, final: bool) -> torch.Tensor:
        if frames is not None:
            pending = self.pending
            self.pending = (
                frames if pending is None else torch.cat((pending, frames), 1)
            )
        size, outputs = self.context.chunk_size, []
        while self.pending is not None and (
            self.pending.size(1) >= size or (final and self.pending.size(1) > 0)
        ):
            chunk, self.pending = self.pending[:, :size], self.pending[:, size:]
            outputs.append(self.model.encode_streaming(chunk, self.context))
        if outputs:
            return torch.cat(outputs, 1)
        return self.empty

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """Feed (batch, samples) of audio; returns the encoder frames it
        completes, (batch, frames, d_model), possibly none."""
        if samples.dim() != 2:
            raise ValueError(
                "StreamingEncoder.push expects (batch, samples), "
                f"got {tuple(samples.shape)}"
            )
        self.empty = samples.new_zeros(samples.size(0), 0, self.model.d_model)
        feats = self._features(self.fbank.push(samples))
        # A piece shorter than a hop may complete no feature frame.
        frames = self.frontend.push(feats) if feats is not None else None
        return self._encode(frames, final=False)

    def finish(self) -> torch.Tensor:
        """End the stream: the encoder frames still to come."""
        feats = self._features(self.fbank.finish())
        out = self.frontend.push(feats) if feats is not None else None
        tail = self.frontend.finish()
        if out is None:
            out = tail
        elif tail is not None:
            out = torch.cat((out, tail), 1)
        return self._encode(out, final=True)

    def state_bytes(self) -> int:
        """Bytes of every tensor the stream holds (buffers and encoder state)."""
        held = self.fbank.tensors() + self.frontend.tensors()
        held += [t for t in (self.peak, self.pending) if t is not None]
        held += list(self.norm_state or ())
        for layer in self.context.layers or []:
            held += [*layer.mixing, layer.conv]
        return sum(t.numel() * t.element_size() for t in held)

"""HyperConformerASR: HyperConformer encoder + Transformer decoder.

A drop-in for SpeechBrain's ``TransformerASR(encoder_module="conformer",
attention_type="hypermixing")``: same constructor arguments, same
``forward`` / ``encode`` / ``decode``, so SpeechBrain's
``S2STransformerBeamSearcher``, ``CTCScorer``, ``EncoderWrapper`` and
``EncoderDecoderASR`` drive it unchanged. Published SpeechBrain weights load
through :func:`hyperconformer.compat.convert_speechbrain_state_dict`.

Differences that matter: no length cap (positions are computed on demand),
no (time, time) tensor anywhere, and padding-exact encoding.

Streaming: ``encode`` and ``forward`` take SpeechBrain's
``DynChunkTrainConfig`` (chunked encoding, as dynamic chunk training samples
it); ``make_streaming_context`` and ``encode_streaming`` encode a stream chunk
by chunk with the same outputs and a state that does not grow. The mixing
always sees the whole past (that is what its constant-size state buys), so a
finite ``left_context_size`` is refused.
"""

from __future__ import annotations

import torch
from speechbrain.lobes.models.transformer.Transformer import (
    NormalizedEmbedding,
    TransformerDecoder,
    get_key_padding_mask,
)
from speechbrain.nnet.activations import Swish
from speechbrain.nnet.containers import ModuleList
from torch import nn

from hyperconformer.encoder import HyperConformerEncoder
from hyperconformer.mixing import HyperMixing
from hyperconformer.positional import SinusoidalPositions
from hyperconformer.streaming import EncoderStreamContext, chunk_size_of

__all__ = ["HyperConformerASR", "padding_mask_from_relative_lengths"]


def causal_mask(tgt: torch.Tensor) -> torch.Tensor:
    """(batch, steps) -> (steps, steps) bool mask, True above the diagonal.

    Boolean like the key padding masks, so attention gets one mask type.
    """
    steps = tgt.size(1)
    ones = torch.ones(steps, steps, dtype=torch.bool, device=tgt.device)
    return torch.triu(ones, diagonal=1)


def padding_mask_from_relative_lengths(
    wav_len: torch.Tensor, max_len: int
) -> torch.Tensor:
    """(batch,) relative lengths in [0, 1] -> (batch, max_len) bool, True = pad.

    Rounds like SpeechBrain's ``TransformerASR`` so both mask the same frames.

    Example
    -------
    >>> padding_mask_from_relative_lengths(torch.tensor([1.0, 0.5]), 4)
    tensor([[False, False, False, False],
            [False, False,  True,  True]])
    """
    abs_len = torch.round(wav_len * max_len).long()
    return torch.arange(max_len, device=wav_len.device)[None, :] >= abs_len[:, None]


class HyperConformerASR(nn.Module):
    """Encoder-decoder ASR model with a HyperConformer encoder.

    Arguments
    ---------
    input_size : int
        Feature size of the front-end output (e.g. 640 for 20 x 32 CNN maps).
    tgt_vocab : int
        Output vocabulary size of the decoder embedding.
    d_model : int
        Model width.
    nhead : int
        HyperMixing heads in the encoder, attention heads in the decoder.
    num_encoder_layers, num_decoder_layers : int
        Depths.
    d_ffn : int
        Feed-forward size; also the HyperMixing hypernetwork size unless
        ``hypernet_size`` is given (as in SpeechBrain's configs).
    dropout : float
        Dropout everywhere.
    activation : type
        Decoder feed-forward activation.
    positional_encoding : str or None
        "fixed_abs_sine" adds sinusoidal positions to the decoder input.
    normalize_before : bool
        Pre-norm decoder layers.
    kernel_size : int
        Encoder depthwise convolution kernel.
    bias : bool
        Bias in the encoder convolution modules.
    encoder_module, attention_type : str
        Accepted for compatibility; must be "conformer" and "hypermixing".
    conformer_activation : type
        Encoder activation (Swish).
    max_length : int, optional
        Ignored: there is no length cap. Accepted for compatibility.
    causal : bool
        Must be False: chunked (streaming) encoding is chosen per call
        (``dynchunktrain_config``), not by building a causal model.
    hypernet_size : int, optional
        HyperMixing hidden size; defaults to ``d_ffn``.
    tied : bool
        Tie HyperMixing's W1 and W2.
    mixing_init : str
        "xavier": HyperMixing's generator weights drawn as SpeechBrain's
        ``TransformerASR`` draws them (``xavier_normal_`` over its shapes);
        "head_uniform": uniform in +-1/sqrt(d_head).
    mixing_dropout : bool
        Apply ``dropout`` after the mixing branch. SpeechBrain's Conformer
        layer defines that dropout but never applies it (False).
    mixing_summary : str
        "sum" (SpeechBrain's) or "mean": HyperMixing's summary divided by the
        number of frames summed and multiplied by ``mixing_summary_frames``,
        so that its scale does not grow with a stream
        (:mod:`hyperconformer.mixing`).
    mixing_summary_frames : float
        For "mean": the scale of a sum over this many frames (1: the mean).

    Example
    -------
    >>> model = HyperConformerASR(
    ...     input_size=40, tgt_vocab=30, d_model=32, nhead=4,
    ...     num_encoder_layers=2, num_decoder_layers=1, d_ffn=64)
    >>> src, tgt = torch.randn(2, 50, 40), torch.randint(1, 30, (2, 7))
    >>> enc, dec = model(src, tgt, wav_len=torch.tensor([1.0, 0.6]))
    >>> enc.shape, dec.shape
    (torch.Size([2, 50, 32]), torch.Size([2, 7, 32]))
    """

    def __init__(
        self,
        input_size: int,
        tgt_vocab: int,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        d_ffn: int = 2048,
        dropout: float = 0.1,
        activation: type[nn.Module] = nn.ReLU,
        positional_encoding: str | None = "fixed_abs_sine",
        normalize_before: bool = True,
        kernel_size: int = 31,
        bias: bool = True,
        encoder_module: str = "conformer",
        conformer_activation: type[nn.Module] = Swish,
        attention_type: str = "hypermixing",
        max_length: int | None = None,
        causal: bool = False,
        hypernet_size: int | None = None,
        tied: bool = False,
        mixing_init: str = "xavier",
        mixing_dropout: bool = False,
        mixing_summary: str = "sum",
        mixing_summary_frames: float = 1.0,
    ) -> None:
        super().__init__()
        if encoder_module != "conformer" or attention_type != "hypermixing":
            raise ValueError(
                "HyperConformerASR is a conformer encoder with hypermixing; got "
                f"encoder_module={encoder_module!r}, attention_type={attention_type!r}"
            )
        if causal:
            raise ValueError(
                "HyperConformerASR: causal must be False (chunked encoding is "
                "asked per call with dynchunktrain_config)"
            )
        if positional_encoding not in ("fixed_abs_sine", None):
            raise ValueError(
                f"positional_encoding must be 'fixed_abs_sine' or None, "
                f"got {positional_encoding!r}"
            )
        if d_model % nhead != 0:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by nhead ({nhead})"
            )
        if num_encoder_layers < 1:
            raise ValueError("num_encoder_layers must be at least 1")
        self.d_model = d_model
        self.input_size = input_size
        self.input_proj = nn.Linear(input_size, d_model)
        self.input_dropout = nn.Dropout(dropout)
        self.encoder = HyperConformerEncoder(
            num_layers=num_encoder_layers,
            d_model=d_model,
            d_ffn=d_ffn,
            nhead=nhead,
            hypernet_size=hypernet_size,
            kernel_size=kernel_size,
            dropout=dropout,
            activation=conformer_activation,
            bias=bias,
            tied=tied,
            mixing_init=mixing_init,
            mixing_dropout=mixing_dropout,
            mixing_summary=mixing_summary,
            mixing_summary_frames=mixing_summary_frames,
        )
        self.decoder_positions = (
            SinusoidalPositions(d_model) if positional_encoding else None
        )
        if num_decoder_layers > 0:
            # Same names as TransformerASR so decoder weights need no mapping.
            self.custom_tgt_module = ModuleList(NormalizedEmbedding(d_model, tgt_vocab))
            self.decoder = TransformerDecoder(
                num_layers=num_decoder_layers,
                nhead=nhead,
                d_ffn=d_ffn,
                d_model=d_model,
                dropout=dropout,
                activation=activation,
                normalize_before=normalize_before,
                causal=True,
                attention_type="regularMHA",
            )
        self._init_params()

    def _init_params(self) -> None:
        # Xavier for matrices as in TransformerASR. HyperMixing draws its own
        # (its fused tensors' fans are not SpeechBrain's per-generator ones).
        skip = {
            id(p)
            for m in self.modules()
            if isinstance(m, HyperMixing)
            for p in m.parameters()
        }
        for p in self.parameters():
            if p.dim() > 1 and id(p) not in skip:
                nn.init.xavier_normal_(p)

    def _check_src(self, src: torch.Tensor) -> torch.Tensor:
        if src.dim() == 4:  # (batch, time, freq, channels) from a CNN front-end
            src = src.flatten(2)
        if src.dim() != 3 or src.size(-1) != self.input_size:
            raise ValueError(
                "HyperConformerASR expects features of shape "
                f"(batch, time, {self.input_size}) or (batch, time, freq, channels), "
                f"got {tuple(src.shape)}"
            )
        return src

    def _embed_tgt(self, tgt: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "decoder"):
            raise RuntimeError("this HyperConformerASR has no decoder layers")
        x = self.custom_tgt_module(tgt)
        if self.decoder_positions is not None:
            x = x + self.decoder_positions(x)
        return x

    def make_streaming_context(
        self, dynchunktrain_config: object
    ) -> EncoderStreamContext:
        """A fresh stream for :meth:`encode_streaming`, chunked as
        ``dynchunktrain_config`` (SpeechBrain's ``DynChunkTrainConfig``) says."""
        chunk_size = chunk_size_of(dynchunktrain_config)
        if chunk_size is None or chunk_size < 1:
            raise ValueError(
                "make_streaming_context needs a DynChunkTrainConfig with a "
                f"positive chunk_size, got {dynchunktrain_config!r}"
            )
        return EncoderStreamContext(chunk_size)

    def encode(
        self,
        src: torch.Tensor,
        wav_len: torch.Tensor | None = None,
        pad_idx: int = 0,
        dynchunktrain_config: object | None = None,
    ) -> torch.Tensor:
        """Encode features.

        Arguments
        ---------
        src : torch.Tensor
            (batch, time, input_size) or (batch, time, freq, channels).
        wav_len : torch.Tensor, optional
            (batch,) lengths relative to ``time``.
        pad_idx : int
            Accepted for compatibility with ``TransformerASR.encode``.
        dynchunktrain_config : DynChunkTrainConfig, optional
            Chunked encoding: every frame sees its chunk and all earlier ones.

        Returns
        -------
        torch.Tensor
            (batch, time, d_model).
        """
        src = self._check_src(src)
        pad_mask = None
        if wav_len is not None:
            pad_mask = padding_mask_from_relative_lengths(wav_len, src.size(1))
        x = self.input_dropout(self.input_proj(src))
        return self.encoder(x, pad_mask, chunk_size_of(dynchunktrain_config))

    def encode_streaming(
        self, src: torch.Tensor, context: EncoderStreamContext
    ) -> torch.Tensor:
        """Encode the next chunk of a stream; ``context`` is updated.

        The outputs are those of ``encode`` with the stream's chunk size on
        the whole input, and the context's size does not grow.

        Arguments
        ---------
        src : torch.Tensor
            (batch, chunk_size, input_size) or (batch, chunk_size, freq,
            channels); the last chunk of a stream may be shorter.
        context : EncoderStreamContext
            From :meth:`make_streaming_context`.

        Returns
        -------
        torch.Tensor
            (batch, frames, d_model).

        Example
        -------
        >>> from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig
        >>> model = HyperConformerASR(
        ...     input_size=40, tgt_vocab=30, d_model=32, nhead=4,
        ...     num_encoder_layers=2, num_decoder_layers=1, d_ffn=64).eval()
        >>> config = DynChunkTrainConfig(chunk_size=8)
        >>> src = torch.randn(1, 20, 40)
        >>> context = model.make_streaming_context(config)
        >>> chunks = [src[:, i : i + 8] for i in (0, 8, 16)]
        >>> streamed = torch.cat(
        ...     [model.encode_streaming(chunk, context) for chunk in chunks], 1)
        >>> chunked = model.encode(src, dynchunktrain_config=config)
        >>> bool((streamed - chunked).abs().max() < 1e-4)
        True
        """
        src = self._check_src(src)
        frames = src.size(1)
        if context.ended:
            raise ValueError("this stream has ended: a short chunk was its last")
        if not 0 < frames <= context.chunk_size:
            raise ValueError(
                f"encode_streaming takes chunks of 1 to {context.chunk_size} "
                f"frames, got {frames}"
            )
        x = self.input_dropout(self.input_proj(src))
        out, context.layers = self.encoder.stream(x, context.layers)
        context.frames += frames
        context.ended = frames < context.chunk_size
        return out

    def forward(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor,
        wav_len: torch.Tensor | None = None,
        pad_idx: int = 0,
        dynchunktrain_config: object | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced forward pass.

        Arguments
        ---------
        src : torch.Tensor
            (batch, time, input_size) or (batch, time, freq, channels).
        tgt : torch.Tensor
            (batch, tgt_len) token ids, starting with BOS.
        wav_len : torch.Tensor, optional
            (batch,) relative lengths of ``src``.
        pad_idx : int
            Padding id in ``tgt``.
        dynchunktrain_config : DynChunkTrainConfig, optional
            Chunked encoding (see ``encode``), as dynamic chunk training
            samples it.

        Returns
        -------
        encoder_out : torch.Tensor
            (batch, time, d_model).
        decoder_out : torch.Tensor
            (batch, tgt_len, d_model).
        """
        src = self._check_src(src)
        pad_mask = None
        if wav_len is not None:
            pad_mask = padding_mask_from_relative_lengths(wav_len, src.size(1))
        encoder_out = self.encoder(
            self.input_dropout(self.input_proj(src)),
            pad_mask,
            chunk_size_of(dynchunktrain_config),
        )
        decoder_out, _, _ = self.decoder(
            tgt=self._embed_tgt(tgt),
            memory=encoder_out,
            tgt_mask=causal_mask(tgt),
            tgt_key_padding_mask=get_key_padding_mask(tgt, pad_idx=pad_idx),
            memory_key_padding_mask=pad_mask,
        )
        return encoder_out, decoder_out

    @torch.no_grad()
    def decode(
        self,
        tgt: torch.Tensor,
        encoder_out: torch.Tensor,
        enc_len: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoding step for beam search.

        Arguments
        ---------
        tgt : torch.Tensor
            (batch, steps) tokens decoded so far.
        encoder_out : torch.Tensor
            (batch, time, d_model).
        enc_len : torch.Tensor, optional
            (batch,) ABSOLUTE encoder lengths, as the beam searchers pass them.

        Returns
        -------
        prediction : torch.Tensor
            (batch, steps, d_model).
        attention : torch.Tensor
            Last layer's cross-attention, (batch, steps, time).
        """
        memory_mask = None
        if enc_len is not None:
            positions = torch.arange(encoder_out.size(1), device=encoder_out.device)
            memory_mask = positions[None, :] >= enc_len[:, None]
        prediction, _, cross_attns = self.decoder(
            self._embed_tgt(tgt),
            encoder_out,
            tgt_mask=causal_mask(tgt),
            memory_key_padding_mask=memory_mask,
        )
        return prediction, cross_attns[-1]

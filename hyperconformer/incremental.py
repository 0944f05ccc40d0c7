"""Incremental (key/value-cached) decoding for SpeechBrain Transformer weights.

SpeechBrain's ``S2STransformerBeamSearcher`` feeds the whole prefix through
every decoder layer at every step and projects the encoder output into
cross-attention keys and values again at every step: step ``n`` costs
``n`` positions, a hypothesis of ``L`` tokens ``L^2 / 2``. Here only the
newest position is computed:

- self-attention keys and values of earlier positions are cached per layer
  and reordered (``select``) when beam pruning changes which hypothesis
  continues which;
- cross-attention keys and values are computed once per utterance, kept
  per utterance (not per hypothesis) and never reordered: the beam search
  keeps each utterance's hypotheses in one block of rows, so the beams of
  one utterance are one batch of queries against that utterance's keys.

The arithmetic is that of the modules it reads (``torch.nn.MultiheadAttention``
projections, pre- or post-norm layers, the final norm), so the log-probs
equal a full recomputation up to float rounding (the tests check 1e-5).

Works for the decoder of :class:`hyperconformer.HyperConformerASR` and of
SpeechBrain's ``TransformerASR`` (any encoder: the decoder is always regular
multi-head attention) and for SpeechBrain's ``TransformerLM`` (encoder-only,
regular attention), the LM fused by ``TransformerLMScorer``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["IncrementalDecoder", "IncrementalLM", "supports_incremental"]


def _projections(mha: nn.MultiheadAttention) -> tuple:
    """(w_q, w_k, w_v, b_q, b_k, b_v) of a ``torch.nn.MultiheadAttention``."""
    if mha.bias_k is not None or mha.add_zero_attn:
        raise ValueError("attention with add_bias_kv/add_zero_attn is not supported")
    if mha._qkv_same_embed_dim:
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    if mha.in_proj_bias is not None:
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    else:
        b_q = b_k = b_v = None
    return w_q, w_k, w_v, b_q, b_k, b_v


def _heads(x: torch.Tensor, nhead: int) -> torch.Tensor:
    """(..., time, d) -> (..., nhead, time, d / nhead)."""
    *lead, time, d = x.shape
    return x.reshape(*lead, time, nhead, d // nhead).transpose(-3, -2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(..., nhead, time, head_dim) -> (..., time, d)."""
    *lead, nhead, time, hd = x.shape
    return x.transpose(-3, -2).reshape(*lead, time, nhead * hd)


class _SelfAttentionCache:
    """Keys and values of earlier positions for one self-attention layer.

    ``keys``/``values``: (rows, nhead, steps, head_dim).
    """

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        if self.keys is None:
            self.keys, self.values = k, v
        else:
            self.keys = torch.cat((self.keys, k), dim=2)
            self.values = torch.cat((self.values, v), dim=2)

    def select(self, rows: torch.Tensor) -> None:
        if self.keys is not None:
            self.keys = self.keys.index_select(0, rows)
            self.values = self.values.index_select(0, rows)


class _Attention:
    """The parameters of one ``torch.nn.MultiheadAttention``, read once.

    Module calls cost more than the arithmetic of one decoding position.
    """

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        w_q, w_k, w_v, b_q, b_k, b_v = _projections(mha)
        self.nhead = mha.num_heads
        self.w_q, self.b_q = w_q, b_q
        self.w_k, self.b_k, self.w_v, self.b_v = w_k, b_k, w_v, b_v
        # Self-attention projects q, k and v of one position in one product.
        self.w_qkv = torch.cat((w_q, w_k, w_v))
        self.b_qkv = None if b_q is None else torch.cat((b_q, b_k, b_v))
        self.w_out, self.b_out = mha.out_proj.weight, mha.out_proj.bias

    def self_attend(
        self, h: torch.Tensor, cache: _SelfAttentionCache, key_mask=None
    ) -> torch.Tensor:
        """Attention of the newest position over all cached ones.

        ``h``: (rows, d) -> (rows, d). ``key_mask``: (rows, steps) bool,
        True = may attend.
        """
        rows, d = h.shape
        qkv = F.linear(h, self.w_qkv, self.b_qkv).view(rows, 3, self.nhead, 1, -1)
        q, k, v = qkv.unbind(1)  # (rows, nhead, 1, head_dim)
        cache.append(k, v)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, cache.keys, cache.values, attn_mask=mask
        )
        return F.linear(out.reshape(rows, d), self.w_out, self.b_out)


def _norm(module: nn.Module):
    """(weight, bias, eps) of a SpeechBrain or torch LayerNorm."""
    norm = getattr(module, "norm", module)
    return norm.normalized_shape, norm.weight, norm.bias, norm.eps


class _Layer:
    """One decoder/encoder layer's parameters for single-position steps."""

    def __init__(self, layer: nn.Module, self_attn, cross_attn=None) -> None:
        self.pre = layer.normalize_before
        self.self_attn = _Attention(self_attn.att)
        self.cross = None if cross_attn is None else _Attention(cross_attn.att)
        names = (
            ("norm1", "norm2", "norm3")
            if cross_attn is not None
            else ("norm1", "norm2")
        )
        self.norms = [_norm(getattr(layer, n)) for n in names]
        first, activation, _, second = layer.pos_ffn.ffn
        self.ffn = (first.weight, first.bias, activation, second.weight, second.bias)

    def feed_forward(self, h: torch.Tensor) -> torch.Tensor:
        w1, b1, activation, w2, b2 = self.ffn
        return F.linear(activation(F.linear(h, w1, b1)), w2, b2)


def _layer_norm(x: torch.Tensor, params) -> torch.Tensor:
    shape, weight, bias, eps = params
    return F.layer_norm(x, shape, weight, bias, eps)


def supports_incremental(model: nn.Module) -> bool:
    """Whether :class:`IncrementalDecoder` can drive ``model``'s decoder."""
    try:
        _decoder_parts(model)
    except ValueError:
        return False
    return True


def _decoder_parts(model: nn.Module):
    """(embedding, position module or None, TransformerDecoder) of an ASR model.

    Mirrors the ``decode`` methods of HyperConformerASR and TransformerASR.
    """
    from speechbrain.lobes.models.transformer.Transformer import TransformerDecoder

    from hyperconformer.model import HyperConformerASR

    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, TransformerDecoder):
        raise ValueError(
            f"{type(model).__name__} has no SpeechBrain TransformerDecoder"
        )
    if isinstance(model, HyperConformerASR):
        positions = model.decoder_positions
    else:
        kind = getattr(model, "attention_type", None)
        if kind in ("RelPosMHAXL", "RoPEMHA"):
            positions = model.positional_encoding_decoder
        elif (
            getattr(model, "positional_encoding_type", None) == "fixed_abs_sine"
            or kind == "hypermixing"
        ):
            positions = model.positional_encoding
        else:
            raise ValueError(f"{type(model).__name__}: unknown decoder positions")
    for layer in decoder.layers:
        for mha in (layer.self_attn, layer.multihead_attn):
            if not isinstance(getattr(mha, "att", None), nn.MultiheadAttention):
                raise ValueError(
                    "decoder attention is not regular multi-head attention"
                )
            _projections(mha.att)
    return model.custom_tgt_module, positions, decoder


def _position_table(positions, length: int, d_model: int, like: torch.Tensor):
    """(length, d_model) positions from a SpeechBrain or project module."""
    if positions is None:
        return torch.zeros(length, d_model, dtype=like.dtype, device=like.device)
    table = positions(
        torch.zeros(1, length, d_model, dtype=like.dtype, device=like.device)
    )
    return table.reshape(-1, d_model)[:length]


class IncrementalDecoder:
    """One-position-per-step Transformer decoder for beam search.

    Rows are ``utterances x beam`` hypotheses, each utterance's beams in one
    block, as in SpeechBrain's searchers.

    Arguments
    ---------
    model : torch.nn.Module
        HyperConformerASR or SpeechBrain TransformerASR (with decoder layers).
    fc : torch.nn.Module
        The output layer (d_model -> vocabulary), e.g. ``seq_lin``.
    temperature : float
        Softmax temperature, as in ``S2STransformerBeamSearcher``.

    Example
    -------
    >>> from hyperconformer import HyperConformerASR
    >>> from speechbrain.nnet.linear import Linear
    >>> model = HyperConformerASR(input_size=8, tgt_vocab=12, d_model=16, nhead=2,
    ...     num_encoder_layers=1, num_decoder_layers=2, d_ffn=32).eval()
    >>> dec = IncrementalDecoder(model, Linear(input_size=16, n_neurons=12))
    >>> enc = torch.randn(2, 20, 16)
    >>> dec.start(enc, torch.tensor([20, 14]), beam=3, max_steps=10)
    >>> dec.step(torch.ones(6, dtype=torch.long)).shape
    torch.Size([6, 12])
    """

    def __init__(self, model: nn.Module, fc: nn.Module, temperature: float = 1.0):
        self.embedding, self.positions, self.decoder = _decoder_parts(model)
        self.fc = getattr(fc, "w", fc)  # SpeechBrain's Linear wraps nn.Linear
        self.temperature = temperature
        self.nhead = self.decoder.layers[0].self_attn.att.num_heads
        self.layers = [
            _Layer(layer, layer.self_attn, layer.multihead_attn)
            for layer in self.decoder.layers
        ]
        self.final_norm = _norm(self.decoder.norm)

    @torch.no_grad()
    def start(
        self,
        enc_states: torch.Tensor,
        enc_lens: torch.Tensor,
        beam: int,
        max_steps: int,
    ) -> None:
        """Cross-attention keys/values of (utterances, time, d_model) states.

        ``enc_lens``: (utterances,) absolute lengths.
        """
        batch, time, d_model = enc_states.shape
        self.beam = beam
        self.step_index = 0
        self.table = _position_table(self.positions, max_steps + 1, d_model, enc_states)
        self.self_caches = [_SelfAttentionCache() for _ in self.decoder.layers]
        self.cross = []
        for layer in self.layers:
            att = layer.cross
            k = _heads(
                F.linear(enc_states, att.w_k, att.b_k), self.nhead
            )  # (B, H, T, hd)
            v = _heads(F.linear(enc_states, att.w_v, att.b_v), self.nhead)
            self.cross.append((k, v))
        positions = torch.arange(time, device=enc_states.device)
        # (B, 1, 1, T): True = may attend; the beams are the query axis.
        self.cross_mask = (positions[None, :] < enc_lens[:, None])[:, None, None, :]

    def select(
        self, rows: torch.Tensor, utterances: torch.Tensor | None = None
    ) -> None:
        """Keep hypothesis ``rows`` (new row i continues old row ``rows[i]``);
        ``utterances`` (kept utterance indices) when whole utterances leave."""
        for cache in self.self_caches:
            cache.select(rows)
        if utterances is not None:
            self.cross = [
                (k.index_select(0, utterances), v.index_select(0, utterances))
                for k, v in self.cross
            ]
            self.cross_mask = self.cross_mask.index_select(0, utterances)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """(rows,) newest tokens -> (rows, vocab) log-probs of the next token."""
        x = self.embedding(tokens.unsqueeze(1)).squeeze(1) + self.table[self.step_index]
        self.step_index += 1
        rows, d = x.shape
        batch = rows // self.beam
        for layer, cache, (ck, cv) in zip(
            self.layers, self.self_caches, self.cross, strict=True
        ):
            norm1, norm2, norm3 = layer.norms
            h = _layer_norm(x, norm1) if layer.pre else x
            x = x + layer.self_attn.self_attend(h, cache)
            if not layer.pre:
                x = _layer_norm(x, norm1)
            h = _layer_norm(x, norm2) if layer.pre else x
            att = layer.cross
            q = _heads(
                F.linear(h, att.w_q, att.b_q).view(batch, self.beam, d), self.nhead
            )
            out = F.scaled_dot_product_attention(q, ck, cv, attn_mask=self.cross_mask)
            x = x + F.linear(_merge(out).reshape(rows, d), att.w_out, att.b_out)
            if not layer.pre:
                x = _layer_norm(x, norm2)
            h = _layer_norm(x, norm3) if layer.pre else x
            x = x + layer.feed_forward(h)
            if not layer.pre:
                x = _layer_norm(x, norm3)
        x = _layer_norm(x, self.final_norm)
        return torch.log_softmax(self.fc(x) / self.temperature, dim=-1)


class IncrementalLM:
    """One-position-per-step SpeechBrain ``TransformerLM`` (as a beam scorer).

    Computes what ``TransformerLMScorer.score`` computes (log-softmax of the
    last position's logits over temperature), token 0 masked as padding as
    ``TransformerLM.forward`` does.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.TransformerLM import TransformerLM
    >>> lm = TransformerLM(vocab=10, d_model=16, nhead=2, num_encoder_layers=2,
    ...     num_decoder_layers=0, d_ffn=32).eval()
    >>> inc = IncrementalLM(lm, temperature=1.0)
    >>> inc.start(rows=4, max_steps=5, like=torch.zeros(1))
    >>> inc.step(torch.ones(4, dtype=torch.long)).shape
    torch.Size([4, 10])
    """

    def __init__(self, lm: nn.Module, temperature: float = 1.0):
        if getattr(lm, "num_decoder_layers", 0) or getattr(
            lm, "attention_type", ""
        ) != ("regularMHA"):
            raise ValueError("only encoder-only, regular-attention TransformerLMs")
        self.layers = [_Layer(layer, layer.self_att) for layer in lm.encoder.layers]
        self.final_norm = _norm(lm.encoder.norm)
        self.lm = lm
        self.temperature = temperature
        self.nhead = lm.encoder.layers[0].self_att.att.num_heads

    @torch.no_grad()
    def start(self, rows: int, max_steps: int, like: torch.Tensor) -> None:
        """Empty caches for ``rows`` hypotheses."""
        d_model = (
            self.lm.custom_src_module.d_model
            if self.lm.embedding_proj is None
            else self.lm.embedding_proj.w.out_features
        )
        self.table = _position_table(
            self.lm.positional_encoding, max_steps + 1, d_model, like.float()
        )
        self.caches = [_SelfAttentionCache() for _ in self.lm.encoder.layers]
        self.key_mask = torch.empty(rows, 0, dtype=torch.bool, device=like.device)
        self.step_index = 0

    def select(
        self, rows: torch.Tensor, utterances: torch.Tensor | None = None
    ) -> None:
        """Keep hypothesis ``rows``, as :meth:`IncrementalDecoder.select`."""
        for cache in self.caches:
            cache.select(rows)
        self.key_mask = self.key_mask.index_select(0, rows)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """(rows,) newest tokens -> (rows, vocab) log-probs of the next token."""
        lm = self.lm
        x = lm.custom_src_module(tokens.unsqueeze(1))
        if lm.embedding_proj is not None:
            x = lm.embedding_proj(x)
        x = x.squeeze(1) + self.table[self.step_index]
        self.step_index += 1
        self.key_mask = torch.cat((self.key_mask, (tokens != 0)[:, None]), dim=1)
        for layer, cache in zip(self.layers, self.caches, strict=True):
            norm1, norm2 = layer.norms
            h = _layer_norm(x, norm1) if layer.pre else x
            x = x + layer.self_attn.self_attend(h, cache, self.key_mask)
            if not layer.pre:
                x = _layer_norm(x, norm1)
            h = _layer_norm(x, norm2) if layer.pre else x
            x = x + layer.feed_forward(h)
            if not layer.pre:
                x = _layer_norm(x, norm2)
        x = _layer_norm(x, self.final_norm)
        logits = lm.output_proj(x)
        return torch.log_softmax(logits / self.temperature, dim=-1)

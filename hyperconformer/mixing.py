"""Multi-head HyperMixing: token mixing whose weights a hypernetwork generates.

For each head ``h`` with input ``X_h`` of shape (time, d_head), a small MLP
applied to every token (plus its sinusoidal position) produces the two weight
matrices ``W1_h`` and ``W2_h`` of shape (time, hidden). The head's output is

    Y_h = W2_h · GELU(W1_hᵀ · X_h)

so every token sees every other token through a (hidden, d_head) summary, and
cost grows linearly with the number of tokens. Heads are concatenated and
layer-normed. No (time, time) tensor is ever formed.

Chunked mixing (streaming): with ``chunk_size`` the frames are cut into
chunks and each frame mixes with its own chunk and every earlier one. Since
``W1_hᵀ · X_h = V1ᵀ(A1ᵀX) + c1·colsum(X)`` (``forward``'s comments), the
summary seen by chunk ``c`` only needs ``A1ᵀX`` (d_head x d_head) and
``colsum(X)`` summed over chunks ``0..c``: training takes cumulative sums of
the per-chunk terms (linear cost, no (time, time) tensor); a stream carries
them, with the frame count, as a :class:`MixingState` of constant size
(11 KB per layer at the 8M sizes), and :meth:`HyperMixing.stream` gives the
same outputs chunk by chunk.

Scale of the summary: ``W1ᵀX`` is a sum over tokens (SpeechBrain's), so it
grows with the context. ``summary="mean"`` divides it by the number of tokens
summed, offline and chunked alike, so one model serves both, and multiplies it
by ``summary_frames``: the scale of a sum over that many frames, which keeps
the GELU after it in the range an offline model trains in. Measured with
``python tools/mixing_scale.py`` (first layer of the 8M model at its
initialisation, an hour of random layer-normed frames with non-zero channel
means fed in 640 ms chunks): the RMS of the mixing output before its layer
norm is 2.2 after 1 s, 205 after 1 min and 12,300 after 60 min with "sum"
(linear growth: an hour puts the GELU ~100x past the 2-30 s utterances seen
in training), 0.094 at every point with the plain mean and 35 with the mean
scaled to 256 frames. Float32 streaming stays within 1e-5 of float64 after
the hour. On the streaming demo (8 epochs), the plain mean learns slower than
the mean scaled to 128 frames (10 s): test WER 43.5 % against 41.2 %.

Initialisation: ``"xavier"`` (default) draws every generator weight and bias
as SpeechBrain does (its ``TransformerASR`` re-initialises every parameter
with more than one dimension, hypernetwork biases included, with
``xavier_normal_`` over its per-generator shapes); ``"head_uniform"`` draws
them uniformly in +-1/sqrt(d_head), the fan-in of one head's linear layer.
Measured on the demo recipe (3 epochs on the embedded corpus), xavier trains
faster: 67.5 % test WER against 81.6 % with head_uniform.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hyperconformer.positional import chunk_positions

__all__ = ["HyperMixing", "MixingState"]

INITS = ("xavier", "head_uniform")
SUMMARIES = ("sum", "mean")


class MixingState(NamedTuple):
    """What one HyperMixing layer carries from a chunk of a stream to the next.

    Its size does not depend on how long the stream has run.

    gram : (heads, batch, d_head, d_head), A1ᵀX summed over the frames so far.
    colsum : (heads, batch, 1, d_head), the frames summed.
    count : (batch,), the number of frames so far.
    """

    gram: torch.Tensor
    colsum: torch.Tensor
    count: torch.Tensor


def _xavier_normal_std(*shape: int) -> float:
    """std of ``nn.init.xavier_normal_`` for a tensor of ``shape``."""
    receptive = math.prod(shape[2:])
    fan_in = shape[1] * receptive if len(shape) > 1 else shape[0]
    fan_out = shape[0] * receptive
    return math.sqrt(2.0 / (fan_in + fan_out))


class HyperMixing(nn.Module):
    """Multi-head HyperMixing token mixer, linear in the input length.

    Arguments
    ---------
    d_model : int
        Feature size of the input and output.
    hypernet_size : int
        Total hidden size of the generated token-mixing MLP, split over heads
        (each head's ``W1``/``W2`` have ``hypernet_size // num_heads`` columns).
    num_heads : int
        Number of heads; ``d_model`` and ``hypernet_size`` must divide by it.
    tied : bool
        If True, ``W2`` is ``W1`` (one generator instead of two).
    init : str
        "xavier" (SpeechBrain's) or "head_uniform" (see the module docstring).
    summary : str
        "sum" (SpeechBrain's): W1ᵀX sums over the tokens; "mean": it is
        divided by the number of tokens summed and multiplied by
        ``summary_frames``, so its scale does not grow with the input's
        length (module docstring).
    summary_frames : float
        For "mean": the summary has the scale of a sum over this many frames
        (1: the plain mean).

    Example
    -------
    >>> mix = HyperMixing(d_model=144, hypernet_size=576, num_heads=8)
    >>> x = torch.randn(2, 50, 144)
    >>> pad = torch.arange(50)[None, :] >= torch.tensor([[50], [30]])
    >>> mix(x, key_padding_mask=pad).shape
    torch.Size([2, 50, 144])
    """

    def __init__(
        self,
        d_model: int,
        hypernet_size: int,
        num_heads: int = 1,
        tied: bool = False,
        init: str = "xavier",
        summary: str = "sum",
        summary_frames: float = 1.0,
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if summary not in SUMMARIES:
            raise ValueError(f"summary must be one of {SUMMARIES}, got {summary!r}")
        if summary_frames <= 0:
            raise ValueError(f"summary_frames must be positive, got {summary_frames}")
        if d_model % num_heads != 0:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by num_heads ({num_heads})"
            )
        if hypernet_size % num_heads != 0:
            raise ValueError(
                f"hypernet_size ({hypernet_size}) must be divisible by "
                f"num_heads ({num_heads})"
            )
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.head_hidden = hypernet_size // num_heads
        self.tied = tied
        self.init = init
        self.summary = summary
        self.summary_frames = summary_frames
        # One generator for W1 and one for W2 (G = 2), or a shared one (G = 1).
        self.num_generators = 1 if tied else 2
        g, h, f, k = self.num_generators, num_heads, self.head_dim, self.head_hidden

        # Fused hypernetwork: both generators' first layers in one weight
        # (heads, G * d_head, d_head), second layers in (heads * G, d_head, k).
        self.gen_w1 = nn.Parameter(torch.empty(h, g * f, f))
        self.gen_b1 = nn.Parameter(torch.empty(h, g * f))
        self.gen_w2 = nn.Parameter(torch.empty(h * g, f, k))
        self.gen_b2 = nn.Parameter(torch.empty(h * g, k))
        self.norm = nn.LayerNorm(d_model)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw the generator weights as ``init`` says (module docstring)."""
        params = (self.gen_w1, self.gen_b1, self.gen_w2, self.gen_b2)
        if self.init == "head_uniform":
            bound = 1.0 / math.sqrt(self.head_dim)
            for p in params:
                nn.init.uniform_(p, -bound, bound)
        else:
            # SpeechBrain's shapes, per generator: first layer (heads, f, f)
            # and (heads, f), second layer (heads, k, f) and (heads, k). The
            # fused tensors hold G such blocks, each with that std.
            h, f, k = self.num_heads, self.head_dim, self.head_hidden
            shapes = ((h, f, f), (h, f), (h, k, f), (h, k))
            for p, shape in zip(params, shapes, strict=True):
                nn.init.normal_(p, std=_xavier_normal_std(*shape))
        self.norm.reset_parameters()

    def _generator_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """First (fused) hypernetwork layer: (b, t, d) -> (h, g, b, t, d_head)."""
        b, t, _ = tokens.shape
        h, g, f = self.num_heads, self.num_generators, self.head_dim
        x = tokens.reshape(b * t, h, f).transpose(0, 1)  # (h, b*t, f)
        hidden = torch.baddbmm(self.gen_b1.unsqueeze(1), x, self.gen_w1.transpose(1, 2))
        hidden = F.gelu(hidden)  # (h, b*t, g*f)
        return hidden.view(h, b, t, g, f).permute(0, 3, 1, 2, 4)

    def generate_weights(
        self, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Materialise the generated weight matrices (for inspection).

        ``forward`` never builds them: see its comments.

        Arguments
        ---------
        tokens : torch.Tensor
            (batch, time, d_model), already position-encoded.

        Returns
        -------
        W1, W2 : torch.Tensor
            Each (heads, batch, time, head_hidden); the same tensor if tied.
        """
        h, g, k = self.num_heads, self.num_generators, self.head_hidden
        feats = self._generator_features(tokens)  # (h, g, b, t, f)
        w2 = self.gen_w2.view(h, g, 1, -1, k)
        weights = feats @ w2 + self.gen_b2.view(h, g, 1, 1, k)
        return weights[:, 0], weights[:, g - 1]

    def _summarise(
        self, gram: torch.Tensor, colsum: torch.Tensor, count: torch.Tensor | None
    ) -> torch.Tensor:
        """GELU(W1ᵀX) from A1ᵀX (h, n, f, f), colsum(X) (h, n, 1, f) and the
        (n,) token counts (used by ``summary="mean"``): (h, n, k, f)."""
        h, g, f, k = (
            self.num_heads,
            self.num_generators,
            self.head_dim,
            self.head_hidden,
        )
        w2 = self.gen_w2.view(h, g, f, k)
        b2 = self.gen_b2.view(h, g, k)
        # W1 = A1·V1 + 1·c1ᵀ with A1 the generator features (t x f), V1 (f x k):
        # W1ᵀX = V1ᵀ(A1ᵀX) + c1·colsum(X), so the (t x k) W1 is never built.
        summary = w2[:, 0].transpose(1, 2).unsqueeze(1) @ gram  # (h, n, k, f)
        summary = summary + b2[:, 0, None, :, None] * colsum
        if self.summary == "mean":
            frames = count.clamp(min=1) / self.summary_frames
            summary = summary / frames.view(1, -1, 1, 1).to(summary.dtype)
        return F.gelu(summary)

    def _read_out(self, feats: torch.Tensor, summary: torch.Tensor) -> torch.Tensor:
        """W2·S from the W2 generator features (h, n, L, f) and S (h, n, k, f):
        (h, n, L, f)."""
        h, g, f, k = (
            self.num_heads,
            self.num_generators,
            self.head_dim,
            self.head_hidden,
        )
        n, length = feats.shape[1], feats.shape[2]
        w2 = self.gen_w2.view(h, g, f, k)
        b2 = self.gen_b2.view(h, g, k)
        # Likewise W2·S = A2·(V2·S) + 1·(c2ᵀS).
        projected = w2[:, g - 1].unsqueeze(1) @ summary  # (h, n, f, f)
        offset = b2[:, g - 1, None, None, :] @ summary  # (h, n, 1, f)
        out = torch.baddbmm(
            offset.reshape(h * n, 1, f),
            feats.reshape(h * n, length, f),
            projected.reshape(h * n, f, f),
        )
        return out.view(h, n, length, f)

    def _chunks(
        self,
        feats: torch.Tensor,
        heads: torch.Tensor,
        valid: torch.Tensor,
        chunk_size: int,
        state: MixingState | None,
    ) -> tuple[torch.Tensor, MixingState]:
        """Chunked mixing of generator features (h, g, b, t, f) and head
        inputs (h, b, t, f) with (b, t) valid-frame weights: (h, b, t, f)
        output and the state after the last chunk."""
        h, g, b, t, f = feats.shape
        n = -(-t // chunk_size)
        tail = n * chunk_size - t
        if tail:  # zero frames complete the last chunk and add nothing
            feats, heads = F.pad(feats, (0, 0, 0, tail)), F.pad(heads, (0, 0, 0, tail))
            valid = F.pad(valid, (0, tail))
        feats = feats.reshape(h, g, b * n, chunk_size, f)
        chunked = heads.reshape(h, b * n, chunk_size, f)
        # Per-chunk A1ᵀX and colsum(X), then running sums over chunks (chunk c
        # sees chunks 0..c), in float32 whatever the compute dtype.
        gram = (feats[:, 0].transpose(2, 3) @ chunked).float().view(h, b, n, f, f)
        colsum = chunked.sum(2, keepdim=True).float().view(h, b, n, 1, f)
        count = valid.view(b, n, chunk_size).sum(2)
        if state is not None:  # the earlier chunks of a stream, carried
            gram = torch.cat((state.gram.unsqueeze(2), gram), 2)
            colsum = torch.cat((state.colsum.unsqueeze(2), colsum), 2)
            count = torch.cat((state.count.unsqueeze(1), count), 1)
        gram, colsum, count = gram.cumsum(2), colsum.cumsum(2), count.cumsum(1)
        if state is not None:
            gram, colsum, count = gram[:, :, 1:], colsum[:, :, 1:], count[:, 1:]
        summary = self._summarise(
            gram.reshape(h, b * n, f, f).to(feats.dtype),
            colsum.reshape(h, b * n, 1, f).to(feats.dtype),
            count.reshape(b * n),
        )
        out = self._read_out(feats[:, g - 1], summary).view(h, b, n * chunk_size, f)
        last = MixingState(gram[:, :, -1], colsum[:, :, -1], count[:, -1])
        return out[:, :, :t], last

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.size(-1) != self.d_model:
            raise ValueError(
                f"HyperMixing expects input of shape (batch, time, {self.d_model}), "
                f"got {tuple(x.shape)}"
            )

    def _merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """(h, b, t, f) head outputs -> layer-normed (b, t, d_model)."""
        h, b, t, f = out.shape
        return self.norm(out.permute(1, 2, 0, 3).reshape(b, t, self.d_model))

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Mix tokens, over the whole input or chunk by chunk.

        Arguments
        ---------
        x : torch.Tensor
            (batch, time, d_model).
        key_padding_mask : torch.Tensor, optional
            (batch, time) bool, True at padded frames. Padded frames take no
            part in the mixing, so valid outputs do not depend on padding.
        positions : torch.Tensor, optional
            (time, d_model) sinusoidal table (an encoder computes it once for
            all its layers); computed here if not given: absolute positions,
            or positions within each chunk when ``chunk_size`` is given.
        chunk_size : int, optional
            Chunked mixing: time is cut into chunks of this many frames and
            every frame mixes with its own chunk and all earlier ones (what a
            stream fed chunk by chunk through :meth:`stream` computes). None:
            every frame mixes with the whole input.

        Returns
        -------
        torch.Tensor
            (batch, time, d_model).
        """
        self._check_input(x)
        b, t, _ = x.shape
        h, g, f = self.num_heads, self.num_generators, self.head_dim
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size}")
        if key_padding_mask is not None:
            if key_padding_mask.shape != (b, t):
                raise ValueError(
                    f"key_padding_mask must have shape {(b, t)}, "
                    f"got {tuple(key_padding_mask.shape)}"
                )
            # Zero rows of padded tokens: they then add nothing to W1ᵀX.
            x = x.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
        if positions is None:
            positions = chunk_positions(t, chunk_size or t, self.d_model, x.device)
        # The hypernetwork sees where each token is; the mixed values do not.
        feats = self._generator_features(x + positions.to(x.dtype))  # (h,g,b,t,f)
        heads = x.reshape(b, t, h, f).permute(2, 0, 1, 3)  # (h, b, t, f)
        valid = torch.ones(b, t, device=x.device)  # float32: a count
        if key_padding_mask is not None:
            valid = valid.masked_fill(key_padding_mask, 0.0)
        if chunk_size is not None:
            # A chunk longer than the input is the input: no padding to its size.
            out, _ = self._chunks(feats, heads, valid, min(chunk_size, t), None)
            return self._merge_heads(out)
        gram = feats[:, 0].transpose(2, 3) @ heads  # (h, b, f, f)
        summary = self._summarise(gram, heads.sum(2, keepdim=True), valid.sum(1))
        return self._merge_heads(self._read_out(feats[:, g - 1], summary))

    def stream(
        self,
        chunk: torch.Tensor,
        state: MixingState | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, MixingState]:
        """Mix the next chunk of a stream with everything before it.

        Feeding a sequence chunk by chunk gives the outputs of
        ``forward(x, chunk_size=...)``; the state has the same size whatever
        the stream's length.

        Arguments
        ---------
        chunk : torch.Tensor
            (batch, chunk_frames, d_model), one chunk.
        state : MixingState, optional
            The state returned for the previous chunk (None at the start).
        positions : torch.Tensor, optional
            (chunk_frames, d_model); by default positions within the chunk.

        Returns
        -------
        out : torch.Tensor
            (batch, chunk_frames, d_model).
        state : MixingState
            To pass with the next chunk.

        Example
        -------
        >>> mix = HyperMixing(d_model=16, hypernet_size=32, num_heads=4)
        >>> x = torch.randn(1, 12, 16)
        >>> first, state = mix.stream(x[:, :4])
        >>> rest, state = mix.stream(x[:, 4:8], state)
        >>> last, state = mix.stream(x[:, 8:], state)
        >>> streamed = torch.cat((first, rest, last), 1)
        >>> bool((streamed - mix(x, chunk_size=4)).abs().max() < 1e-5)
        True
        >>> state.gram.shape  # (heads, batch, d_head, d_head), for any length
        torch.Size([4, 1, 4, 4])
        """
        self._check_input(chunk)
        b, t, _ = chunk.shape
        h, f = self.num_heads, self.head_dim
        if positions is None:
            positions = chunk_positions(t, t, self.d_model, chunk.device)
        feats = self._generator_features(chunk + positions.to(chunk.dtype))
        heads = chunk.reshape(b, t, h, f).permute(2, 0, 1, 3)
        valid = torch.ones(b, t, device=chunk.device)
        out, state = self._chunks(feats, heads, valid, t, state)
        return self._merge_heads(out), state

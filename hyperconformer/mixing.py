"""Multi-head HyperMixing: token mixing whose weights a hypernetwork generates.

For each head ``h`` with input ``X_h`` of shape (time, d_head), a small MLP
applied to every token (plus its sinusoidal position) produces the two weight
matrices ``W1_h`` and ``W2_h`` of shape (time, hidden). The head's output is

    Y_h = W2_h · GELU(W1_hᵀ · X_h)

so every token sees every other token through a (hidden, d_head) summary, and
cost grows linearly with the number of tokens. Heads are concatenated and
layer-normed. No (time, time) tensor is ever formed.

Initialisation: ``"xavier"`` (default) draws every generator weight and bias
as SpeechBrain does (its ``TransformerASR`` re-initialises every parameter
with more than one dimension, hypernetwork biases included, with
``xavier_normal_`` over its per-generator shapes); ``"head_uniform"`` draws
them uniformly in +-1/sqrt(d_head), the fan-in of one head's linear layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hyperconformer.positional import sinusoidal_encoding

__all__ = ["HyperMixing"]

INITS = ("xavier", "head_uniform")


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
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
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

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mix tokens.

        Arguments
        ---------
        x : torch.Tensor
            (batch, time, d_model).
        key_padding_mask : torch.Tensor, optional
            (batch, time) bool, True at padded frames. Padded frames take no
            part in the mixing, so valid outputs do not depend on padding.
        positions : torch.Tensor, optional
            (time, d_model) sinusoidal table (an encoder computes it once for
            all its layers); computed here if not given.

        Returns
        -------
        torch.Tensor
            (batch, time, d_model).
        """
        if x.dim() != 3 or x.size(-1) != self.d_model:
            raise ValueError(
                f"HyperMixing expects input of shape (batch, time, {self.d_model}), "
                f"got {tuple(x.shape)}"
            )
        b, t, _ = x.shape
        h, g, f, k = (
            self.num_heads,
            self.num_generators,
            self.head_dim,
            self.head_hidden,
        )
        if key_padding_mask is not None:
            if key_padding_mask.shape != (b, t):
                raise ValueError(
                    f"key_padding_mask must have shape {(b, t)}, "
                    f"got {tuple(key_padding_mask.shape)}"
                )
            # Zero rows of padded tokens: they then add nothing to W1ᵀX.
            x = x.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)

        if positions is None:
            positions = sinusoidal_encoding(t, self.d_model, x.device)
        # The hypernetwork sees where each token is; the mixed values do not.
        feats = self._generator_features(x + positions.to(x.dtype))  # (h,g,b,t,f)
        heads = x.reshape(b, t, h, f).permute(2, 0, 1, 3)  # (h, b, t, f)
        w2 = self.gen_w2.view(h, g, f, k)
        b2 = self.gen_b2.view(h, g, k)
        # W1 = A1·V1 + 1·c1ᵀ with A1 the generator features (t x f), V1 (f x k):
        # W1ᵀX = V1ᵀ(A1ᵀX) + c1·colsum(X), so the (t x k) W1 is never built.
        gram = feats[:, 0].transpose(2, 3) @ heads  # (h, b, f, f)
        summary = w2[:, 0].transpose(1, 2).unsqueeze(1) @ gram  # (h, b, k, f)
        summary = summary + b2[:, 0, None, :, None] * heads.sum(2, keepdim=True)
        summary = F.gelu(summary)
        # Likewise W2·S = A2·(V2·S) + 1·(c2ᵀS).
        projected = w2[:, g - 1].unsqueeze(1) @ summary  # (h, b, f, f)
        offset = b2[:, g - 1, None, None, :] @ summary  # (h, b, 1, f)
        out = torch.baddbmm(
            offset.reshape(h * b, 1, f),
            feats[:, g - 1].reshape(h * b, t, f),
            projected.reshape(h * b, f, f),
        )
        out = out.view(h, b, t, f).permute(1, 2, 0, 3).reshape(b, t, self.d_model)
        return self.norm(out)

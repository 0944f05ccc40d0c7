"""Load SpeechBrain hypermixing checkpoints into :class:`HyperConformerASR`.

SpeechBrain's ``TransformerASR(encoder_module="conformer",
attention_type="hypermixing")`` names and shapes its encoder weights
differently: separate W1/W2 hypernetworks, 1x1 ``Conv1d`` pointwise layers,
wrapped layer norms and fixed position tables. The decoder and target
embedding keep their names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

__all__ = ["convert_speechbrain_state_dict"]

# Encoder-layer parameters whose mapping is a plain rename.
_LAYER_RENAMES = {
    "ffn_module1.0.": "ffn1.norm.",
    "ffn_module1.1.ffn.0.": "ffn1.linear1.",
    "ffn_module1.1.ffn.3.": "ffn1.linear2.",
    "ffn_module2.0.": "ffn2.norm.",
    "ffn_module2.1.ffn.0.": "ffn2.linear1.",
    "ffn_module2.1.ffn.3.": "ffn2.linear2.",
    "norm1.norm.": "mixing_norm.",
    "norm2.norm.": "final_norm.",
    "mha_layer.layer_norm.": "mixing.norm.",
    "convolution_module.layer_norm.": "conv.norm.",
    "convolution_module.conv.": "conv.depthwise.",
    "convolution_module.after_conv.0.": "conv.depthwise_norm.",
    "convolution_module.after_conv.2.": "conv.pointwise_out.",
}
_TOP_RENAMES = {
    "custom_src_module.layers.0.w.": "input_proj.",
    "encoder.norm.norm.": "encoder.norm.",
}
# Fixed position tables: ours are computed on demand and never saved.
_DROPPED = re.compile(r"(^|\.)positional_encoding(_decoder)?\.pe$")
_LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_HYPER = "mha_layer.hyper."


def _rename(key: str, table: Mapping[str, str]) -> str | None:
    for old, new in table.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def _fuse_hypernetwork(
    params: Mapping[str, torch.Tensor], prefix: str
) -> dict[str, torch.Tensor]:
    """Fuse SpeechBrain's per-generator hypernetworks into our layout."""
    tied = not any(k.startswith("w2_gen.") for k in params) or all(
        torch.equal(params[f"w1_gen.{n}"], params[f"w2_gen.{n}"])
        for n in ("fc1_weights", "fc1_biases", "fc2_weights", "fc2_biases")
    )
    gens = ["w1_gen"] if tied else ["w1_gen", "w2_gen"]
    try:
        w1 = torch.cat([params[f"{g}.fc1_weights"] for g in gens], dim=1)
        b1 = torch.cat([params[f"{g}.fc1_biases"] for g in gens], dim=1)
        # (heads, k, f) per generator -> (heads * G, f, k), head-major.
        w2 = torch.stack([params[f"{g}.fc2_weights"] for g in gens], dim=1)
        b2 = torch.stack([params[f"{g}.fc2_biases"] for g in gens], dim=1)
    except KeyError as err:
        raise ValueError(f"incomplete hypernetwork under {prefix}: {err}") from None
    heads, g, k, f = w2.shape
    return {
        f"{prefix}gen_w1": w1,
        f"{prefix}gen_b1": b1,
        f"{prefix}gen_w2": w2.transpose(2, 3).reshape(heads * g, f, k),
        f"{prefix}gen_b2": b2.reshape(heads * g, k),
    }


def convert_speechbrain_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Convert a SpeechBrain hypermixing ``TransformerASR`` state dict.

    Arguments
    ---------
    state_dict : Mapping[str, torch.Tensor]
        From ``TransformerASR(encoder_module="conformer",
        attention_type="hypermixing", ...)``. A "module." prefix (DDP) is
        stripped.

    Returns
    -------
    dict[str, torch.Tensor]
        Loads into :class:`HyperConformerASR` of the same sizes with
        ``strict=True`` (pass ``tied=True`` there if the checkpoint was tied).

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.TransformerASR import (
    ...     TransformerASR)
    >>> from hyperconformer import HyperConformerASR
    >>> sizes = dict(input_size=20, tgt_vocab=10, d_model=16, nhead=2,
    ...              num_encoder_layers=1, num_decoder_layers=1, d_ffn=32,
    ...              normalize_before=True)
    >>> sb = TransformerASR(**sizes, encoder_module="conformer",
    ...                     attention_type="hypermixing", causal=False)
    >>> ours = HyperConformerASR(**sizes)
    >>> ours.load_state_dict(convert_speechbrain_state_dict(sb.state_dict()))
    <All keys matched successfully>
    """
    out: dict[str, torch.Tensor] = {}
    hypernets: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if _DROPPED.search(key):
            continue
        layer = _LAYER_KEY.match(key)
        if layer:
            idx, rest = layer.groups()
            prefix = f"encoder.layers.{idx}."
            if rest.startswith(_HYPER):
                hypernets.setdefault(prefix + "mixing.", {})[rest[len(_HYPER) :]] = (
                    value
                )
                continue
            if rest.startswith("convolution_module.bottleneck.0."):
                # 1x1 Conv1d (2d, d, 1) -> Linear (2d, d)
                name = rest.rsplit(".", 1)[1]
                out[prefix + "conv.pointwise_in." + name] = (
                    value.squeeze(-1) if name == "weight" else value
                )
                continue
            new = _rename(rest, _LAYER_RENAMES)
            if new is None:
                unknown.append(key)
            else:
                out[prefix + new] = value
            continue
        new = _rename(key, _TOP_RENAMES)
        if new is not None:
            out[new] = value
        elif key.startswith(("decoder.", "custom_tgt_module.")):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            "not a SpeechBrain hypermixing conformer state dict; unexpected keys: "
            + ", ".join(unknown[:5])
            + (" ..." if len(unknown) > 5 else "")
        )
    if not hypernets:
        raise ValueError("no hypermixing layers found in the state dict")
    for prefix, params in hypernets.items():
        out.update(_fuse_hypernetwork(params, prefix))
    return out

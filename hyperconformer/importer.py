"""Command line: import a SpeechBrain HyperConformer checkpoint as a model folder.

SpeechBrain's LibriSpeech recipe (``hyperconformer_8M.yaml``,
``hyperconformer_22M.yaml``) trains ``TransformerASR(encoder_module=
"conformer", attention_type="hypermixing")`` and saves, in each checkpoint
folder, ``model.ckpt`` (the state dict of the recipe's ``model``
``ModuleList([CNN, Transformer, seq_lin, ctc_lin])``) and ``normalizer.ckpt``;
the tokenizer is a SentencePiece model. This tool rebuilds the model as a
:class:`hyperconformer.HyperConformerASR` (weights mapped by
:func:`hyperconformer.convert_speechbrain_state_dict`), checks that both
compute the same, and writes a model folder with
:func:`hyperconformer.export.export_model_folder`::

    hyperconformer-import --speechbrain-dir results/hyperconformer_8M/7775/save \\
        --hparams hparams/hyperconformer_8M.yaml --out models/hyperconformer_8M

The training yaml is never built: only its ``compute_features``,
``normalize``, ``CNN``, ``Transformer``, ``ctc_lin`` and ``seq_lin``
definitions and decoding values are read, after ``!ref`` resolution;
``!PLACEHOLDER`` values (``data_folder``) need no override.
"""

from __future__ import annotations

import argparse
import inspect
import io
import logging
import re
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml, resolve_references
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.nodes import MappingNode, SequenceNode
from ruamel.yaml.tag import Tag

from hyperconformer.compat import convert_speechbrain_state_dict
from hyperconformer.export import (
    COPIED_NODES,
    VALUES,
    export_model_folder,
    plain_value,
)
from hyperconformer.folder import (
    MODEL,
    NORMALIZER,
    TOKENIZER,
    ModelFolderError,
    check_hyperparams,
    find_file,
    load_checkpoint,
    load_normalizer_statistics,
    load_weights,
    yaml_tag,
)
from hyperconformer.model import HyperConformerASR

__all__ = ["import_speechbrain_checkpoint", "main"]

_OURS = "hyperconformer.HyperConformerASR"
_SPEECHBRAIN = "speechbrain.lobes.models.transformer.TransformerASR.TransformerASR"
_NODES = tuple(COPIED_NODES.values())
_VALUES = tuple(key for key, _ in VALUES.values())


def _placeholder_overrides(text: str, name: str) -> dict:
    """Overrides for every ``!PLACEHOLDER`` (not needed for the model).

    Also refuses the two tags that act while references are resolved:
    ``!applyref:`` calls a function and ``!include:`` reads another file.
    """
    try:
        root = YAML(typ="rt").compose(text)
    except Exception as err:
        raise ModelFolderError(f"{name}: not valid YAML ({err})") from None
    if not isinstance(root, MappingNode):
        raise ModelFolderError(f"{name}: not a HyperPyYAML mapping")
    overrides: dict = {}

    def walk(node, path: tuple) -> None:
        tag = yaml_tag(node)
        if tag.startswith(("!applyref:", "!include:")):
            raise ModelFolderError(
                f"{name}: refusing to read: tag {tag} "
                f"(line {node.start_mark.line + 1}) runs while the yaml is resolved"
            )
        if tag == "!PLACEHOLDER" and path:
            target = overrides
            for key in path[:-1]:
                target = target.setdefault(key, {})
            target[path[-1]] = "unused"
        if isinstance(node, MappingNode):
            for key, value in node.value:
                walk(value, (*path, str(key.value)))
        elif isinstance(node, SequenceNode):
            for value in node.value:
                walk(value, path + ("",))

    walk(root, ())
    return overrides


def _merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _find_checkpoint(folder: Path) -> Path:
    """The model checkpoint in ``folder``, else in its newest CKPT+* folder."""
    ckpts = sorted(p for p in folder.glob("CKPT+*") if p.is_dir())
    for where in (folder, *reversed(ckpts)):
        try:
            return find_file(where, MODEL)
        except ModelFolderError:
            continue
    raise ModelFolderError(f"{folder}: no {' or '.join(MODEL)} (nor in CKPT+*/)")


def _find_tokenizer(folder: Path, ckpt_dir: Path) -> Path:
    for where in dict.fromkeys((ckpt_dir, folder)):
        try:
            return find_file(where, TOKENIZER)
        except ModelFolderError:
            continue
    models = sorted(folder.glob("*.model"))
    if len(models) == 1:
        return models[0]
    raise ModelFolderError(f"{folder}: no {' or '.join(TOKENIZER)}; pass --tokenizer")


def _model_yaml(tree: Mapping, name: str, tied: bool) -> tuple[str, str]:
    """The import's training-style yaml and the original Transformer's.

    Returns
    -------
    ours : str
        Values and module definitions with the Transformer rebuilt as a
        HyperConformerASR (what ``export_model_folder`` copies).
    original : str
        The original ``Transformer`` definition alone, for verification.
    """
    missing = [key for key in _NODES if key not in tree]
    if missing:
        raise ModelFolderError(f"{name}: does not define {', '.join(missing)}")
    transformer = tree["Transformer"]
    if not isinstance(transformer, Mapping):
        raise ModelFolderError(f"{name}: Transformer is not a module definition")
    kind = yaml_tag(transformer).split(":", 1)[-1]
    if kind not in (_SPEECHBRAIN, _OURS):
        raise ModelFolderError(
            f"{name}: Transformer is {kind or 'untagged'}, not a SpeechBrain "
            "TransformerASR or HyperConformerASR"
        )
    args = {str(k): v for k, v in transformer.items()}
    encoder = str(args.get("encoder_module", "conformer"))
    attention = str(args.get("attention_type", "hypermixing"))
    if encoder != "conformer" or attention != "hypermixing":
        raise ModelFolderError(
            f"{name}: not a HyperConformer (encoder_module={encoder}, "
            f"attention_type={attention}); conformer + hypermixing is needed"
        )
    if args.get("causal"):
        raise ModelFolderError(f"{name}: causal (streaming) models are not supported")

    accepted = set(inspect.signature(HyperConformerASR).parameters)
    ours = CommentedMap((k, v) for k, v in args.items() if k in accepted)
    dropped = sorted(set(args) - accepted)
    if dropped:
        print(
            f"note: Transformer arguments not used by HyperConformerASR: "
            f"{', '.join(dropped)}",
            file=sys.stderr,
        )
    ours["causal"] = False
    if tied:
        ours["tied"] = True
    ours.yaml_set_ctag(Tag(suffix=f"!new:{_OURS}"))

    values = {}
    for key in _VALUES:
        if key in tree:
            values[key] = plain_value(tree[key])
    if "temperature" not in values:
        search = tree.get("test_search")
        if isinstance(search, Mapping) and "temperature" in search:
            values["temperature"] = plain_value(search["temperature"])
    nodes = {key: tree[key] for key in _NODES}
    nodes["Transformer"] = ours

    yaml = YAML()
    out = io.StringIO()
    yaml.dump(values, out)
    yaml.dump(nodes, out)
    original = io.StringIO()
    yaml.dump({"Transformer": transformer}, original)
    return out.getvalue(), original.getvalue()


def _build(text: str, name: str) -> dict:
    check_hyperparams(text, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_hyperpyyaml(text)
    except ModelFolderError:
        raise
    except Exception as err:
        raise ModelFolderError(f"{name}: cannot build the model ({err})") from None


def _split_state(state: Mapping[str, torch.Tensor], name: str) -> list[dict]:
    """ModuleList state dict -> one state dict per position 0..3."""
    parts: list[dict] = [{}, {}, {}, {}]
    for key, value in state.items():
        match = re.match(r"^(?:module\.)?([0-3])\.(.+)$", key)
        if not match:
            raise ModelFolderError(
                f"{name}: unexpected key {key!r}; expected the recipe's "
                "ModuleList([CNN, Transformer, seq_lin, ctc_lin])"
            )
        parts[int(match.group(1))][match.group(2)] = value
    if not all(parts):
        raise ModelFolderError(f"{name}: some of the four modules have no weights")
    return parts


@torch.no_grad()
def _verify(original: torch.nn.Module, ours: HyperConformerASR, vocab: int) -> float:
    """Max abs difference of encoder and decoder outputs on random input."""
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(2, 120, ours.input_size, generator=gen)
    wav_len = torch.tensor([1.0, 1.0])
    tgt = torch.randint(1, vocab, (2, 9), generator=gen)
    enc_a, enc_b = original.encode(src, wav_len), ours.encode(src, wav_len)
    lens = torch.full((2,), enc_a.size(1))
    dec_a, _ = original.decode(tgt, enc_a, lens)
    dec_b, _ = ours.decode(tgt, enc_a, lens)
    return max(
        (enc_a - enc_b).abs().max().item(),
        (dec_a - dec_b).abs().max().item(),
    )


def import_speechbrain_checkpoint(
    speechbrain_dir: str | Path,
    hparams_file: str | Path,
    out_dir: str | Path,
    tokenizer_file: str | Path | None = None,
    overrides: Mapping | None = None,
    verify: bool = True,
    tolerance: float = 1e-4,
) -> Path:
    """Import a SpeechBrain HyperConformer checkpoint as a model folder.

    Arguments
    ---------
    speechbrain_dir : str or Path
        Folder with model.ckpt (or asr.ckpt, or CKPT+*/model.ckpt: the
        newest is used), normalizer.ckpt and the tokenizer.
    hparams_file : str or Path
        The training (or SpeechBrain inference) yaml.
    out_dir : str or Path
        The model folder to write.
    tokenizer_file : str or Path, optional
        SentencePiece model, if not in ``speechbrain_dir``.
    overrides : mapping, optional
        Overrides the model was trained with (sizes, vocabulary, ...).
    verify : bool
        Check that SpeechBrain's model and ours give the same encoder and
        decoder outputs on random input (builds SpeechBrain's model too).
    tolerance : float
        Largest accepted absolute difference.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    ModelFolderError
        A file is missing or unsafe, the yaml is not a HyperConformer, the
        weights do not fit, or the outputs differ.
    """
    folder = Path(speechbrain_dir)
    hparams_file = Path(hparams_file)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: no such folder")
    if not hparams_file.is_file():
        raise ModelFolderError(f"{hparams_file}: no such file")
    model_file = _find_checkpoint(folder)
    tokenizer = Path(tokenizer_file) if tokenizer_file else None
    tokenizer = tokenizer or _find_tokenizer(folder, model_file.parent)
    if not tokenizer.is_file():
        raise ModelFolderError(f"{tokenizer}: no such file")
    try:
        stats_file = find_file(model_file.parent, NORMALIZER)
    except ModelFolderError:
        stats_file = find_file(folder, NORMALIZER)

    text = hparams_file.read_text(encoding="utf-8")
    resolve_overrides = _merge(
        _placeholder_overrides(text, str(hparams_file)), overrides or {}
    )
    try:
        resolved = resolve_references(text, resolve_overrides)
    except Exception as err:
        raise ModelFolderError(f"{hparams_file}: cannot resolve ({err})") from None
    tree = YAML(typ="rt").load(resolved)

    state = load_checkpoint(model_file)
    if not isinstance(state, Mapping):
        raise ModelFolderError(f"{model_file}: not a state dict")
    cnn_sd, transformer_sd, seq_sd, ctc_sd = _split_state(state, str(model_file))
    already_ours = any(".mixing.gen_w1" in k for k in transformer_sd)
    try:
        converted = (
            dict(transformer_sd)
            if already_ours
            else convert_speechbrain_state_dict(transformer_sd)
        )
    except ValueError as err:
        raise ModelFolderError(f"{model_file}: {err}") from None
    # One hypernetwork generator per layer means W1 and W2 are tied.
    gen = next(v for k, v in converted.items() if k.endswith("mixing.gen_w1"))
    tied = gen.shape[1] == gen.shape[2]

    ours_text, original_text = _model_yaml(tree, str(hparams_file), tied)
    modules = _build(ours_text, f"{hparams_file} (imported)")
    asr_model = torch.nn.ModuleList(
        [modules["CNN"], modules["Transformer"], modules["seq_lin"], modules["ctc_lin"]]
    )
    parts = {"CNN": cnn_sd, "Transformer": converted, "seq_lin": seq_sd}
    for key, part in {**parts, "ctc_lin": ctc_sd}.items():
        load_weights(modules[key], part, f"{model_file}: does not fit {hparams_file}")
    asr_model.eval()

    normalizer = modules["normalize"]
    load_normalizer_statistics(normalizer, stats_file)

    if verify and not already_ours:
        original = _build(original_text, f"{hparams_file} (Transformer)")["Transformer"]
        original.load_state_dict(transformer_sd, strict=True)
        original.eval()
        vocab = modules["seq_lin"].w.out_features
        diff = _verify(original, modules["Transformer"], vocab)
        if not diff <= tolerance:
            raise ModelFolderError(
                f"{model_file}: imported model differs from SpeechBrain's by {diff:.2e}"
                f" (tolerance {tolerance:.0e})"
            )
        print(f"verified: max |difference| to SpeechBrain {diff:.1e}", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        yaml_file = Path(tmp) / hparams_file.name
        yaml_file.write_text(ours_text, encoding="utf-8")
        out = export_model_folder(out_dir, yaml_file, asr_model, normalizer, tokenizer)
    return Path(out)


def build_parser() -> argparse.ArgumentParser:
    """The ``hyperconformer-import`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="hyperconformer-import",
        description="Turn a SpeechBrain HyperConformer checkpoint into a model "
        "folder for hyperconformer-transcribe and EncoderDecoderASR.",
    )
    parser.add_argument(
        "--speechbrain-dir",
        required=True,
        help="folder with model.ckpt (or CKPT+*/), normalizer.ckpt, tokenizer",
    )
    parser.add_argument("--hparams", required=True, help="the training yaml")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--tokenizer", help="SentencePiece model, if not in the dir")
    parser.add_argument(
        "--overrides",
        default=None,
        help="yaml mapping of the overrides used in training, e.g. "
        "'{output_neurons: 1000}'",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the output comparison with SpeechBrain's model",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failed)."""
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("speechbrain").setLevel(logging.ERROR)
    overrides = None
    if args.overrides:
        try:
            overrides = YAML(typ="safe").load(args.overrides)
        except Exception as err:
            print(f"error: --overrides: not valid yaml ({err})", file=sys.stderr)
            return 1
        if not isinstance(overrides, dict):
            print("error: --overrides must be a yaml mapping", file=sys.stderr)
            return 1
    try:
        out = import_speechbrain_checkpoint(
            args.speechbrain_dir,
            args.hparams,
            args.out,
            tokenizer_file=args.tokenizer,
            overrides=overrides,
            verify=not args.no_verify,
        )
    except ModelFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

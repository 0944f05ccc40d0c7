"""The model folder: what it holds and how it is loaded safely.

A model folder (written by :mod:`hyperconformer.export` or
:mod:`hyperconformer.importer`) holds ``hyperparams.yaml``, ``model.ckpt``,
``normalizer.ckpt`` and ``tokenizer.ckpt``; it also loads with SpeechBrain's
stock ``EncoderDecoderASR``.

Both files of a model folder can carry code. Checkpoints are read with
``torch.load(..., weights_only=True)``, so a pickled object that would run
code on load is refused, never executed. The YAML is checked before it is
built: every ``!new:``/``!name:``/``!apply:``/``!module:`` tag must point into
``speechbrain``, ``hyperconformer``, ``torch`` or ``sentencepiece`` (resolved
attribute by attribute, so ``torch.os.system`` does not pass), a few known
code-running or file-fetching functions inside those packages are refused as
well, and ``!include:``, ``!applyref:``, Python tags and tuples holding tags
are refused. This is a guard against code-carrying model folders, not a
sandbox: a folder can still make the model compute nonsense.
"""

from __future__ import annotations

import importlib
import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

from hyperconformer.audio import TranscriptionError

__all__ = [
    "check_hparams_safety",
    "load_checkpoint",
    "load_model_folder",
    "load_normalizer_statistics",
]

ALLOWED_PACKAGES = ("speechbrain", "hyperconformer", "torch", "sentencepiece")

# Inside the allowed packages: things that run shell commands, import files,
# unpickle, fetch from the network or write files.
_DENIED_TARGETS = (
    "torch.load",
    "torch.save",
    "torch.hub",
    "torch.package",
    "torch.jit.load",
    "torch.serialization",
    "torch.utils.cpp_extension",
    "torch.utils.model_zoo",
    "torch.ops",
    "torch.classes",
    "torch.distributed",
    "torch.multiprocessing",
    "speechbrain.utils.superpowers",
    "speechbrain.utils.fetching",
    "speechbrain.utils.importutils",
    "speechbrain.utils.checkpoints",
    "speechbrain.inference.interfaces.foreign_class",
    "speechbrain.utils.data_utils.download_file",
)
_CALLABLE_TAGS = ("!new:", "!name:", "!apply:", "!module:")
_PLAIN_TAGS = {"!ref", "!copy", "!tuple", "!PLACEHOLDER"}
_CORE_TAGS = {
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge")
}


def _in_package(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in ALLOWED_PACKAGES)


def _denied(name: str, extra: tuple[str, ...] = ()) -> bool:
    return any(
        name == d or name.startswith(d + ".") for d in (*_DENIED_TARGETS, *extra)
    )


def _check_target(target: str) -> str | None:
    """Why ``target`` (a dotted path from a tag) is refused, or None.

    Walks the path as ``pydoc.locate`` would, but refuses any step that leaves
    the allowed packages (``torch.os`` is the ``os`` module).
    """
    if not re.fullmatch(r"[A-Za-z_][\w.]*", target) or ".." in target:
        return "is not a dotted Python name"
    if not _in_package(target):
        return f"points outside the allowed packages ({', '.join(ALLOWED_PACKAGES)})"
    # torch._C only as a written path: many torch functions live there.
    if _denied(target, ("torch._C",)):
        return "names a function that can run code, fetch or write files"
    parts = target.split(".")
    # Longest importable module prefix, then attributes.
    obj, n = None, len(parts)
    while n > 0:
        try:
            obj = importlib.import_module(".".join(parts[:n]))
            break
        except ImportError:
            n -= 1
    if obj is None:
        return "names no importable module"
    for part in parts[n:]:
        if not hasattr(obj, part):
            return "names nothing that exists"
        obj = getattr(obj, part)
        if isinstance(obj, type(importlib)):
            home = obj.__name__
        else:
            home = getattr(obj, "__module__", None) or ""
        if home and (not _in_package(home) or _denied(home)):
            return f"resolves into {home}, outside the allowed packages"
    return None


def _tag_of(node) -> str:
    tag = node.tag
    return tag if isinstance(tag, str) else (getattr(tag, "value", None) or "")


def check_hparams_safety(text: str, name: str = "hyperparams.yaml") -> None:
    """Refuse a HyperPyYAML text whose tags could run foreign code.

    Arguments
    ---------
    text : str
        The YAML.
    name : str
        Used in the message.

    Raises
    ------
    TranscriptionError
        Naming the first offending tag.

    Example
    -------
    >>> check_hparams_safety("lin: !new:torch.nn.Linear [2, 3]")
    >>> check_hparams_safety("x: !apply:os.system [ls]")
    Traceback (most recent call last):
    ...
    hyperconformer.audio.TranscriptionError: hyperparams.yaml: refusing to load: \
tag !apply:os.system points outside the allowed packages \
(speechbrain, hyperconformer, torch, sentencepiece) (line 1)
    """
    try:
        root = YAML(typ="rt").compose(text)
    except Exception as err:  # ruamel raises many error types
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise TranscriptionError(f"{name}: not valid YAML ({first})") from None
    if root is None:
        raise TranscriptionError(f"{name}: empty YAML")

    def refuse(node, what: str) -> TranscriptionError:
        line = node.start_mark.line + 1 if node.start_mark else "?"
        return TranscriptionError(f"{name}: refusing to load: {what} (line {line})")

    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        tag = _tag_of(node)
        if tag.startswith(_CALLABLE_TAGS):
            target = tag.split(":", 1)[1]
            why = _check_target(target)
            if why:
                raise refuse(node, f"tag {tag} {why}")
        elif tag.startswith(("!include:", "!applyref:")):
            raise refuse(node, f"tag {tag} is not allowed in a model folder")
        elif tag not in _PLAIN_TAGS and tag not in _CORE_TAGS:
            raise refuse(node, f"tag {tag} is not a HyperPyYAML tag")
        if isinstance(node, ScalarNode):
            # HyperPyYAML parses "(...)" values (also ones pieced together by
            # !ref) with PyYAML's unsafe loader: no value may carry a tag.
            if "!" in str(node.value):
                raise refuse(node, "a value holds '!', which could smuggle in a tag")
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, MappingNode):
            for key, value in node.value:
                stack.extend((key, value))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """``torch.load(path, weights_only=True)`` with one-line errors.

    Arguments
    ---------
    path : str or Path
        A checkpoint holding tensors and plain containers.
    map_location : str or torch.device
        Where tensors go.

    Returns
    -------
    object
        Usually a dict of tensors.

    Raises
    ------
    TranscriptionError
        The file is missing, not a checkpoint, or needs arbitrary unpickling
        (which could run code, and is never attempted).
    """
    path = Path(path)
    if not path.is_file():
        raise TranscriptionError(f"{path}: missing")
    try:
        with warnings.catch_warnings():
            # Protocol-version notes from the restricted unpickler.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # The restricted unpickler refused something. A zip archive (what
        # torch.save writes) or a raw pickle (protocol 2+ starts with 0x80)
        # holds objects it will not build; anything else is just not a
        # checkpoint.
        with open(path, "rb") as fin:
            is_pickle = fin.read(1) == b"\x80" or zipfile.is_zipfile(path)
        if "Weights only load failed" in str(err) and is_pickle:
            raise TranscriptionError(
                f"{path}: refusing to load: the checkpoint holds pickled Python "
                "objects, which can run code; only tensors and plain containers "
                "are accepted"
            ) from None
        raise TranscriptionError(
            f"{path}: not a PyTorch checkpoint (unreadable pickle data)"
        ) from None
    except Exception as err:  # corrupt files raise anything from EOFError to KeyError
        raise TranscriptionError(
            f"{path}: not a PyTorch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'unreadable'})"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (
        f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
    )


def load_normalizer_statistics(normalizer: torch.nn.Module, stats_file: Path) -> None:
    """Loads a model folder's ``normalizer.ckpt`` into SpeechBrain's
    ``InputNormalization``, with :func:`load_checkpoint`'s safety and errors.

    Only global normalisation has statistics to load; a per-sentence
    normaliser is left as it is.
    """
    if getattr(normalizer, "norm_type", "") != "global":
        return
    stats = load_checkpoint(stats_file)
    try:
        normalizer._load_statistics_dict(stats)
    except (KeyError, TypeError) as err:
        raise TranscriptionError(
            f"{stats_file}: not normalizer statistics ({_first_line(err)})"
        ) from None


def first_existing(folder: Path, names: Sequence[str]) -> Path:
    """The first of ``names`` that is a file in ``folder``."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise TranscriptionError(
        f"{folder / names[0]}: missing from the model folder"
        + (f" (nor {', '.join(names[1:])})" if len(names) > 1 else "")
    )


def load_model_folder(folder: str | Path) -> dict:
    """Build a model folder's ``hyperparams.yaml`` and load its weights.

    Arguments
    ---------
    folder : str or Path
        Folder with hyperparams.yaml, model.ckpt (or asr.ckpt),
        tokenizer.ckpt (or tokenizer.model) and normalizer.ckpt.

    Returns
    -------
    dict
        The built hyperparameters, weights in place, on the CPU.

    Raises
    ------
    TranscriptionError
        A part is missing, unsafe or does not fit the others.

    Example
    -------
    >>> hparams = load_model_folder("model")  # doctest: +SKIP
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TranscriptionError(f"{folder}: model folder not found")
    yaml_file = folder / "hyperparams.yaml"
    if not yaml_file.is_file():
        raise TranscriptionError(f"{yaml_file}: missing from the model folder")
    model_file = first_existing(folder, ("model.ckpt", "asr.ckpt"))
    tokenizer_file = first_existing(folder, ("tokenizer.ckpt", "tokenizer.model"))
    text = yaml_file.read_text(encoding="utf-8", errors="replace")
    check_hparams_safety(text, str(yaml_file))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hparams = load_hyperpyyaml(text)
    except Exception as err:
        raise TranscriptionError(
            f"{yaml_file}: cannot build the model ({_first_line(err)})"
        ) from None
    needed = ("sample_rate", "encoder", "decoder", "tokenizer", "asr_model")
    missing = [k for k in (*needed, "ctc_lin") if k not in hparams]
    if missing:
        raise TranscriptionError(
            f"{yaml_file}: not a model folder's hyperparams "
            f"(missing {', '.join(missing)})"
        )

    state = load_checkpoint(model_file)
    if not isinstance(state, dict):
        raise TranscriptionError(f"{model_file}: not a state dict")
    try:
        hparams["asr_model"].load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else "mismatch"
        raise TranscriptionError(
            f"{model_file}: does not fit hyperparams.yaml ({detail})"
        ) from None

    normalizer = hparams.get("normalizer", hparams.get("normalize"))
    if normalizer is not None:
        load_normalizer_statistics(normalizer, folder / "normalizer.ckpt")
    try:
        hparams["tokenizer"].load(str(tokenizer_file))
    except Exception as err:
        raise TranscriptionError(
            f"{tokenizer_file}: not a SentencePiece model ({_first_line(err)})"
        ) from None
    return hparams

"""The model folder: its files, what its yaml may contain, and safe loading.

Written by :mod:`hyperconformer.export` (also for
:mod:`hyperconformer.importer`), read by :func:`load_model_folder` (the
:class:`~hyperconformer.Transcriber`) and by SpeechBrain's
``EncoderDecoderASR.from_hparams``:

====================  =====================================================
``hyperparams.yaml``  HyperPyYAML building the model, see export.py
``model.ckpt``        ``asr_model``'s state dict (``asr.ckpt`` is accepted)
``normalizer.ckpt``   global feature statistics ``{count, glob_mean, glob_std}``
``tokenizer.ckpt``    SentencePiece model file (``tokenizer.model`` accepted)
``lm.ckpt``           optional: the fused Transformer LM's state dict
====================  =====================================================

Loading runs nothing of the folder. Checkpoints: ``weights_only=True``. The
tokenizer: an empty ``SentencePieceProcessor`` loads the model file. The
yaml: :func:`check_hyperparams`, before anything is built, allows exactly
the ``!new:``/``!name:`` targets of :data:`ALLOWED` (full dotted names, with
the arguments listed there), literals, and ``!ref <key>``; everything else is
a one-line :class:`ModelFolderError` naming the line. Adding an allowed class
is one line of :data:`ALLOWED`, for a class that reads, writes, fetches and
runs nothing given literal arguments.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from sentencepiece import SentencePieceProcessor

__all__ = [
    "ALLOWED",
    "Allowed",
    "ModelFolderError",
    "check_hyperparams",
    "find_file",
    "load_checkpoint",
    "load_model_folder",
    "load_normalizer_statistics",
    "load_weights",
    "yaml_tag",
]


class ModelFolderError(Exception):
    """A model folder (or checkpoint) is missing, unsafe or inconsistent.

    The message is one line and names the file (and line); command-line
    tools print it without a traceback. Problems with an audio file are
    :class:`hyperconformer.TranscriptionError` instead.
    """


# ---------------------------------------------------------------- files

HYPERPARAMS = "hyperparams.yaml"
# Each part: the name export writes first, then names SpeechBrain uses.
MODEL = ("model.ckpt", "asr.ckpt")
NORMALIZER = ("normalizer.ckpt",)
TOKENIZER = ("tokenizer.ckpt", "tokenizer.model")
LM = ("lm.ckpt",)  # present when the yaml has an lm_model


def find_file(folder: str | Path, names: Sequence[str]) -> Path:
    """The first of ``names`` that is a file in ``folder``.

    Example
    -------
    >>> find_file(".", ("no-such.ckpt", "asr.ckpt"))
    Traceback (most recent call last):
    ...
    hyperconformer.folder.ModelFolderError: no-such.ckpt: missing (nor asr.ckpt)
    """
    folder = Path(folder)
    for name in names:
        if (folder / name).is_file():
            return folder / name
    nor = f" (nor {', '.join(names[1:])})" if len(names) > 1 else ""
    raise ModelFolderError(f"{folder / names[0]}: missing{nor}")


# ---------------------------------------------------------------- the yaml


@dataclass(frozen=True)
class Allowed:
    """How a model folder may use one class or function.

    ``tag`` is ``"!new:"`` (built) or ``"!name:"`` (named, never called by
    the yaml). ``args`` lists the keyword arguments it may take (None: any,
    for classes whose arguments are sizes and options, never file names or
    code); ``files`` lists those of them that map names to files, which must
    be plain file names inside the folder.
    """

    tag: str = "!new:"
    args: tuple[str, ...] | None = None
    files: tuple[str, ...] = ()


# Exactly what hyperconformer.export writes for the project's yamls and for
# imported SpeechBrain checkpoints: one line per class or function.
ALLOWED: dict[str, Allowed] = {
    "speechbrain.dataio.preprocess.AudioNormalizer": Allowed(),
    "speechbrain.lobes.features.Fbank": Allowed(),
    "hyperconformer.CausalFbank": Allowed(),
    "speechbrain.processing.features.InputNormalization": Allowed(),
    "hyperconformer.CausalNormalization": Allowed(),
    "hyperconformer.ConvFrontEnd": Allowed(),
    "speechbrain.lobes.models.convolution.ConvolutionFrontEnd": Allowed(),
    "hyperconformer.HyperConformerASR": Allowed(),
    "speechbrain.lobes.models.transformer.TransformerASR.TransformerASR": Allowed(),
    "torch.nn.GELU": Allowed("!name:", args=()),
    "speechbrain.nnet.linear.Linear": Allowed(),
    "torch.nn.ModuleList": Allowed(),
    "speechbrain.nnet.containers.LengthsCapableSequential": Allowed(),
    "speechbrain.lobes.models.transformer.TransformerASR.EncoderWrapper": Allowed(),
    "speechbrain.decoders.scorer.CTCScorer": Allowed(),
    "speechbrain.decoders.scorer.ScorerBuilder": Allowed(),
    "speechbrain.decoders.S2STransformerBeamSearcher": Allowed(),
    "hyperconformer.JointBeamSearcher": Allowed(),
    "speechbrain.lobes.models.transformer.TransformerLM.TransformerLM": Allowed(),
    "speechbrain.decoders.scorer.TransformerLMScorer": Allowed(),
    # Built empty; the loader gives it tokenizer.ckpt and nothing else.
    "sentencepiece.SentencePieceProcessor": Allowed(args=()),
    # Used by EncoderDecoderASR only; no hooks, no download locations.
    "speechbrain.utils.parameter_transfer.Pretrainer": Allowed(
        args=("loadables", "paths"), files=("paths",)
    ),
}

_PLAIN = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")}
_SEQ, _MAP = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_REF = re.compile(r"<([A-Za-z_]\w*)>")
_FILE_NAME = re.compile(r"[\w][\w.+-]*")


def yaml_tag(node) -> str:
    """A composed ruamel node's tag as a string ('' if none)."""
    tag = getattr(node, "tag", None) or ""
    return tag if isinstance(tag, str) else (getattr(tag, "value", None) or "")


def check_hyperparams(text: str, name: str = HYPERPARAMS) -> None:
    """Refuse a model folder's yaml (``text``, called ``name`` in messages)
    unless every node is allowed, naming the line of the first that is not.

    Allowed: ``!new:``/``!name:`` of :data:`ALLOWED` with the arguments it
    lists; numbers, strings, booleans, null, lists and mappings of allowed
    nodes, ``(...)`` tuples of plain scalars; ``!ref <key>`` naming a
    top-level key. Refused: everything else, among it ``!apply:``,
    ``!applyref:``, ``!module:``, ``!include:``, ``!copy``, Python tags,
    ``!ref`` expressions, and ``!`` or ``<...>`` inside a value (HyperPyYAML
    re-parses such strings).

    Example
    -------
    >>> check_hyperparams("lin: !new:torch.nn.ModuleList []")
    >>> check_hyperparams("x: 1\\nlin: !new:torch.nn.Linear [2, 3]")
    Traceback (most recent call last):
    ...
    hyperconformer.folder.ModelFolderError: hyperparams.yaml, line 2: refusing \
to load: !new:torch.nn.Linear is not in the model-folder allow-list \
(hyperconformer.folder.ALLOWED)
    """
    try:
        root = YAML(typ="rt").compose(text)
    except Exception as err:  # ruamel raises many error types
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ModelFolderError(f"{name}: not valid YAML ({first})") from None
    if not isinstance(root, MappingNode) or yaml_tag(root) != _MAP:
        raise ModelFolderError(f"{name}: not a YAML mapping of names to values")
    keys = {str(k.value) for k, _ in root.value}

    def refuse(node, what: str) -> ModelFolderError:
        line = node.start_mark.line + 1 if node.start_mark else "?"
        return ModelFolderError(f"{name}, line {line}: refusing to load: {what}")

    def scalar(node) -> None:
        tag, value = yaml_tag(node), str(node.value)
        if tag == "!tuple" or (tag == "tag:yaml.org,2002:str" and value[:1] == "("):
            # HyperPyYAML parses "(...)" with PyYAML's unsafe loader.
            if "!" in value or not _flat_literals(value):
                raise refuse(node, f"{value!r} is not a tuple of plain values")
        elif tag not in _PLAIN:
            raise refuse(node, f"tag {tag} is not allowed in a model folder")
        if "!" in value:
            raise refuse(node, "a value holds '!', which could smuggle in a tag")
        if re.search(r"<[^>]*>", value):
            raise refuse(node, "a value holds '<...>', which HyperPyYAML resolves")

    def call(node, tag: str) -> None:
        kind, target = tag.split(":", 1)[0] + ":", tag.split(":", 1)[1]
        rule = ALLOWED.get(target)
        if rule is None or rule.tag != kind:
            raise refuse(node, f"{tag} is not in the model-folder allow-list "
                         "(hyperconformer.folder.ALLOWED)")  # fmt: skip
        if isinstance(node, ScalarNode):
            if node.value:
                raise refuse(node, f"{tag} takes a mapping or a list")
            return
        if isinstance(node, SequenceNode):
            if rule.args is not None:
                raise refuse(node, f"{tag} takes no positional arguments")
            for item in node.value:
                value(item)
            return
        for key, item in node.value:
            arg = str(key.value)
            scalar(key)
            if rule.args is not None and arg not in rule.args:
                raise refuse(key, f"argument {arg!r} of {tag} is not allowed")
            if arg in rule.files:
                folder_files(item)
            value(item)

    def folder_files(node) -> None:
        items = node.value if isinstance(node, MappingNode) else [(None, node)]
        for _, item in items:
            if not (isinstance(item, ScalarNode) and yaml_tag(item) in _PLAIN):
                raise refuse(item, "a file name must be a plain string")
            file = str(item.value)
            if not _FILE_NAME.fullmatch(file) or ".." in file:
                raise refuse(item, f"file {file!r} is not inside the model folder")

    seen: set[int] = set()

    def value(node) -> None:
        if id(node) in seen:  # an alias: checked where its anchor is
            return
        seen.add(id(node))
        tag = yaml_tag(node)
        if tag.startswith(("!new:", "!name:", "!apply:", "!applyref:", "!module:")):
            call(node, tag)
        elif tag.startswith("!include:"):
            raise refuse(node, f"tag {tag} reads another file")
        elif tag == "!ref":
            ref = isinstance(node, ScalarNode) and _REF.fullmatch(node.value)
            if not ref or ref.group(1) not in keys:
                raise refuse(node, "!ref must be '<key>' naming a top-level key")
        elif isinstance(node, ScalarNode):
            scalar(node)
        elif isinstance(node, SequenceNode) and tag == _SEQ:
            for item in node.value:
                value(item)
        elif isinstance(node, MappingNode) and tag == _MAP:
            for key, item in node.value:
                scalar(key)
                value(item)
        else:
            raise refuse(node, f"tag {tag} is not allowed in a model folder")

    value(root)


def _flat_literals(text: str) -> bool:
    """Whether "(a, b, ...)" holds only plain scalars (read safely)."""
    try:
        items = YAML(typ="safe", pure=True).load("[" + text.strip()[1:-1] + "]")
    except Exception:  # ruamel raises many error types
        return False
    return isinstance(items, list) and all(
        item is None or isinstance(item, (bool, int, float, str)) for item in items
    )


# ---------------------------------------------------------------- loading


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """``torch.load(path, weights_only=True)`` with one-line errors.

    Returns what the file holds (tensors and plain containers). Raises
    :class:`ModelFolderError` if it is missing, not a checkpoint, or needs
    arbitrary unpickling (which could run code, and is never attempted).

    Example
    -------
    >>> state = load_checkpoint("model/model.ckpt")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"{path}: missing")
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
            raise ModelFolderError(
                f"{path}: refusing to load: the checkpoint holds pickled Python "
                "objects, which can run code; only tensors and plain containers "
                "are accepted"
            ) from None
        raise ModelFolderError(
            f"{path}: not a PyTorch checkpoint (unreadable pickle data)"
        ) from None
    except Exception as err:  # corrupt files raise anything from EOFError to KeyError
        raise ModelFolderError(
            f"{path}: not a PyTorch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'unreadable'})"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (
        f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
    )


def load_weights(module: torch.nn.Module, state: dict, what: str) -> None:
    """``module.load_state_dict(state)``; a mismatch is a one-line error.

    ``what`` starts the message, e.g. "model.ckpt: does not fit x.yaml".
    """
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else "mismatch"
        raise ModelFolderError(f"{what} ({detail})") from None


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
        raise ModelFolderError(
            f"{stats_file}: not normalizer statistics ({_first_line(err)})"
        ) from None


def load_model_folder(folder: str | Path) -> dict:
    """Check and build a model folder's ``hyperparams.yaml``, load its weights,
    statistics and tokenizer; returns the built hyperparameters (on the CPU).
    Raises :class:`ModelFolderError` if a part is missing, unsafe or does not
    fit the others.

    Example
    -------
    >>> hparams = load_model_folder("model")  # doctest: +SKIP
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: model folder not found")
    yaml_file = find_file(folder, (HYPERPARAMS,))
    model_file = find_file(folder, MODEL)
    tokenizer_file = find_file(folder, TOKENIZER)
    text = yaml_file.read_text(encoding="utf-8", errors="replace")
    check_hyperparams(text, str(yaml_file))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hparams = load_hyperpyyaml(text)
    except Exception as err:
        raise ModelFolderError(
            f"{yaml_file}: cannot build the model ({_first_line(err)})"
        ) from None
    needed = ("sample_rate", "encoder", "decoder", "tokenizer", "asr_model")
    missing = [k for k in (*needed, "ctc_lin") if k not in hparams]
    if missing:
        raise ModelFolderError(
            f"{yaml_file}: not a model folder's hyperparams "
            f"(missing {', '.join(missing)})"
        )

    state = load_checkpoint(model_file)
    if not isinstance(state, dict):
        raise ModelFolderError(f"{model_file}: not a state dict")
    fit = f"{model_file}: does not fit {yaml_file.name}"
    load_weights(hparams["asr_model"], state, fit)
    if "lm_model" in hparams:
        lm_file = find_file(folder, LM)
        lm_state = load_checkpoint(lm_file)
        load_weights(hparams["lm_model"], lm_state, f"{lm_file}: does not fit lm_model")
        hparams["lm_model"].eval()
    normalizer = hparams.get("normalizer", hparams.get("normalize"))
    if normalizer is not None:
        load_normalizer_statistics(normalizer, folder / NORMALIZER[0])
    if not isinstance(hparams["tokenizer"], SentencePieceProcessor):
        raise ModelFolderError(f"{yaml_file}: tokenizer is not SentencePiece")
    try:
        hparams["tokenizer"].load(str(tokenizer_file))
    except Exception as err:
        raise ModelFolderError(
            f"{tokenizer_file}: not a SentencePiece model ({_first_line(err)})"
        ) from None
    return hparams

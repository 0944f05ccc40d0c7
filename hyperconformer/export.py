"""Export a trained recipe model as a self-contained SpeechBrain model folder.

The file names, the classes the yaml may use and the loader are defined in
:mod:`hyperconformer.folder`; this module writes what that module accepts.
The folder holds four files:

``hyperparams.yaml``
    HyperPyYAML that rebuilds the model for inference. It loads with
    SpeechBrain's stock ``EncoderDecoderASR``::

        from speechbrain.inference.ASR import EncoderDecoderASR
        asr = EncoderDecoderASR.from_hparams(source="results/x/model", savedir="tmp")
        asr.transcribe_file("utt.flac")

    Top-level keys:

    - ``sample_rate``, ``bos_index``, ``eos_index``, ``blank_index``,
      ``beam_size``, ``ctc_weight``, ``min_decode_ratio``, ``max_decode_ratio``,
      ``temperature``: plain values; ``streaming_chunk_size``: the encoder
      frames per chunk a streaming model was trained for (null: offline),
      read by :meth:`hyperconformer.StreamingEncoder.from_model_folder`.
    - ``compute_features`` (fbank), ``normalizer`` (global
      ``InputNormalization``), ``CNN`` (front-end), ``Transformer`` (the
      encoder-decoder), ``ctc_lin``, ``seq_lin``: copied from the training
      yaml, with every reference resolved, so any model class works.
    - ``asr_model``: ``torch.nn.ModuleList([CNN, Transformer, seq_lin, ctc_lin])``,
      the module whose state dict is ``model.ckpt``.
    - ``tokenizer``: a ``sentencepiece.SentencePieceProcessor``.
    - ``encoder``: waveform -> encoder states (``compute_features``,
      ``normalizer``, ``CNN``, ``Transformer.encode``), a
      ``LengthsCapableSequential`` taking relative lengths.
    - ``decoder``: joint CTC/attention :class:`hyperconformer.JointBeamSearcher`
      (SpeechBrain's ``S2STransformerBeamSearcher`` search, much faster;
      ``ctc_scorer`` and ``scorer`` hold its CTC part).
    - ``audio_normalizer``: resampling/downmixing to ``sample_rate``.
    - ``modules`` (``encoder``, ``decoder``) and ``pretrainer`` (loads the
      three checkpoint files below), as ``Pretrained.from_hparams`` expects.

``model.ckpt``
    ``asr_model.state_dict()`` on the CPU; loads with
    ``torch.load(path, weights_only=True)``.
``normalizer.ckpt``
    The global feature statistics ``{"count", "glob_mean", "glob_std"}``.
``tokenizer.ckpt``
    The SentencePiece model file.
``lm.ckpt``
    Only with ``lm_file``: the Transformer LM's state dict. The yaml then
    builds ``lm_model`` (the training yaml's, with its sizes), an
    ``lm_scorer`` and scores with ``ctc_weight`` and ``lm_weight``
    (shallow fusion), and loads the LM through ``pretrainer`` and ``modules``.

The training yaml must name its modules ``compute_features``, ``normalize``,
``CNN``, ``Transformer``, ``ctc_lin`` and ``seq_lin``, and may set
``sample_rate``, ``bos_index``, ``eos_index``, ``blank_index``,
``test_beam_size``, ``ctc_weight_decode``, ``min_decode_ratio``,
``max_decode_ratio``, ``temperature`` and ``streaming_chunk_size`` (defaults
below); with an LM also
``lm_model`` (``!name:`` SpeechBrain's ``TransformerLM``), ``lm_weight`` and
``lm_scorer``'s ``temperature``.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from hyperpyyaml import resolve_references
from ruamel.yaml import YAML

from hyperconformer.folder import HYPERPARAMS, LM, MODEL, NORMALIZER, TOKENIZER

__all__ = ["export_model_folder"]

# Exported name -> key in the training yaml (the importer reads the same).
COPIED_NODES = {
    "compute_features": "compute_features",
    "normalizer": "normalize",
    "CNN": "CNN",
    "Transformer": "Transformer",
    "ctc_lin": "ctc_lin",
    "seq_lin": "seq_lin",
}

# Exported name -> (key in the training yaml, default).
VALUES = {
    "sample_rate": ("sample_rate", 16000),
    "bos_index": ("bos_index", 1),
    "eos_index": ("eos_index", 2),
    "blank_index": ("blank_index", 0),
    "beam_size": ("test_beam_size", 10),
    "ctc_weight": ("ctc_weight_decode", 0.4),
    "min_decode_ratio": ("min_decode_ratio", 0.0),
    "max_decode_ratio": ("max_decode_ratio", 1.0),
    "temperature": ("temperature", 1.0),
    # Encoder frames per chunk the model was trained to stream (null: offline).
    "streaming_chunk_size": ("streaming_chunk_size", None),
}

_ENCODER_WRAPPER = "speechbrain.lobes.models.transformer.TransformerASR.EncoderWrapper"

_INFERENCE_PART = """
audio_normalizer: !new:speechbrain.dataio.preprocess.AudioNormalizer
    sample_rate: !ref <sample_rate>

tokenizer: !new:sentencepiece.SentencePieceProcessor

encoder: !new:speechbrain.nnet.containers.LengthsCapableSequential
    compute_features: !ref <compute_features>
    normalizer: !ref <normalizer>
    CNN: !ref <CNN>
    transformer_encoder: !new:ENCODER_WRAPPER
        transformer: !ref <Transformer>

ctc_scorer: !new:speechbrain.decoders.scorer.CTCScorer
    ctc_fc: !ref <ctc_lin>
    blank_index: !ref <blank_index>
    eos_index: !ref <eos_index>

scorer: !new:speechbrain.decoders.scorer.ScorerBuilder
    full_scorers: [!ref <ctc_scorer>]
    weights:
        ctc: !ref <ctc_weight>

decoder: !new:hyperconformer.JointBeamSearcher
    modules: [!ref <Transformer>, !ref <seq_lin>]
    bos_index: !ref <bos_index>
    eos_index: !ref <eos_index>
    min_decode_ratio: !ref <min_decode_ratio>
    max_decode_ratio: !ref <max_decode_ratio>
    beam_size: !ref <beam_size>
    temperature: !ref <temperature>
    using_eos_threshold: False
    length_normalization: True
    scorer: !ref <scorer>

LM_PART
asr_model: !new:torch.nn.ModuleList
    - [!ref <CNN>, !ref <Transformer>, !ref <seq_lin>, !ref <ctc_lin>]

modules:
    encoder: !ref <encoder>
    decoder: !ref <decoder>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        model: !ref <asr_model>
        normalizer: !ref <normalizer>
        tokenizer: !ref <tokenizer>
"""


def _strip_comments(node):
    """Drops the training yaml's comments, which ruamel attaches oddly."""
    ca = getattr(node, "ca", None)
    if ca is not None:
        ca.items.clear()
        ca.comment = None
        ca.end = None
    if isinstance(node, Mapping):
        for value in node.values():
            _strip_comments(value)
    elif isinstance(node, list):
        for value in node:
            _strip_comments(value)


def plain_value(value):
    """ruamel scalars (ScalarFloat, ...) as plain Python values.

    Example
    -------
    >>> from ruamel.yaml.scalarfloat import ScalarFloat
    >>> type(plain_value(ScalarFloat(0.5)))
    <class 'float'>
    """
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


_LM_CLASS = "speechbrain.lobes.models.transformer.TransformerLM.TransformerLM"
_LM_PART = """lm_scorer: !new:speechbrain.decoders.scorer.TransformerLMScorer
    language_model: !ref <lm_model>
    temperature: !ref <lm_temperature>

"""
# With an LM, these lines of _INFERENCE_PART gain the LM's part.
_WITH_LM = {
    "    full_scorers: [!ref <ctc_scorer>]\n": (
        "    full_scorers: [!ref <ctc_scorer>, !ref <lm_scorer>]\n"
    ),
    "        ctc: !ref <ctc_weight>\n": (
        "        ctc: !ref <ctc_weight>\n        transformerlm: !ref <lm_weight>\n"
    ),
    "    decoder: !ref <decoder>\n": (
        "    decoder: !ref <decoder>\n    lm_model: !ref <lm_model>\n"
    ),
    "        tokenizer: !ref <tokenizer>\n": (
        "        tokenizer: !ref <tokenizer>\n        lm: !ref <lm_model>\n"
    ),
}


def export_hparams(hparams_file, overrides=None, with_lm: bool = False) -> str:
    """The inference ``hyperparams.yaml`` text for a training yaml.

    Arguments
    ---------
    hparams_file : str or Path
        The training yaml.
    overrides : str or dict, optional
        The overrides the model was trained with (as given to
        ``load_hyperpyyaml``); they change sizes, vocabulary, ...
    with_lm : bool
        Add the training yaml's ``lm_model`` for shallow fusion (lm.ckpt).

    Returns
    -------
    str
    """
    with open(hparams_file, encoding="utf-8") as fin:
        resolved = resolve_references(fin, overrides or {})
    yaml = YAML()
    tree = yaml.load(resolved)
    missing = [key for key in COPIED_NODES.values() if key not in tree]
    if missing:
        raise KeyError(f"{hparams_file} does not define {', '.join(missing)}")

    values = {name: plain_value(tree.get(k, d)) for name, (k, d) in VALUES.items()}
    nodes = {name: tree[key] for name, key in COPIED_NODES.items()}
    _strip_comments(nodes)

    out = io.StringIO()
    out.write(
        f"# Inference model exported from {Path(hparams_file).name}.\n"
        "# Load with speechbrain.inference.ASR.EncoderDecoderASR.from_hparams.\n\n"
    )
    yaml.dump(values, out)
    out.write("\n")
    yaml.dump(nodes, out)
    inference = _INFERENCE_PART.replace("ENCODER_WRAPPER", _ENCODER_WRAPPER)
    if with_lm:
        lm_model = tree.get("lm_model")
        if yaml_tag_of(lm_model) != f"!name:{_LM_CLASS}":
            raise KeyError(f"{hparams_file}: lm_model must be !name:{_LM_CLASS}")
        lm_values = {
            "lm_weight": plain_value(tree.get("lm_weight", 0.6)),
            "lm_temperature": plain_value(
                (tree.get("lm_scorer") or {}).get("temperature", 1.0)
            ),
        }
        _strip_comments(lm_model)
        lm_text = io.StringIO()
        yaml.dump(lm_values, lm_text)
        lm_text.write("\n")
        yaml.dump({"lm_model": lm_model}, lm_text)
        # The training yaml names the class; the folder builds it.
        out.write(lm_text.getvalue().replace(f"!name:{_LM_CLASS}", f"!new:{_LM_CLASS}"))
        for line, with_lm_line in _WITH_LM.items():
            inference = inference.replace(line, with_lm_line)
        inference = inference.replace("LM_PART\n", _LM_PART)
    else:
        inference = inference.replace("LM_PART\n", "")
    out.write(inference)
    return out.getvalue()


def yaml_tag_of(node) -> str:
    """The tag of a ruamel node loaded by ``YAML().load`` ('' if none)."""
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", tag)
    return value if isinstance(value, str) else ""


def export_model_folder(
    out_dir,
    hparams_file,
    asr_model: torch.nn.Module,
    normalizer: torch.nn.Module,
    tokenizer_file,
    overrides=None,
    lm_file=None,
) -> Path:
    """Writes a model folder loadable with SpeechBrain's ``EncoderDecoderASR``.

    Arguments
    ---------
    out_dir : str or Path
        The folder to (over)write: hyperparams.yaml, model.ckpt,
        normalizer.ckpt, tokenizer.ckpt (see the module docstring).
    hparams_file : str or Path
        The training yaml; module definitions are copied from it.
    asr_model : torch.nn.Module
        ``ModuleList([CNN, Transformer, seq_lin, ctc_lin])`` with the weights
        to export (the recipe's ``model``).
    normalizer : speechbrain.processing.features.InputNormalization
        The trained global feature normalisation.
    tokenizer_file : str or Path
        The SentencePiece ``.model`` file.
    overrides : str or dict, optional
        The overrides the model was trained with.
    lm_file : str or Path, optional
        The Transformer LM state dict (for the yaml's ``lm_model``) to decode
        with: copied as lm.ckpt.

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    text = export_hparams(hparams_file, overrides, with_lm=lm_file is not None)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / HYPERPARAMS).write_text(text, encoding="utf-8")

    state = {k: v.detach().cpu() for k, v in asr_model.state_dict().items()}
    torch.save(state, out_dir / MODEL[0])
    stats = {
        "count": int(normalizer.count),
        "glob_mean": normalizer.glob_mean.detach().cpu(),
        "glob_std": normalizer.glob_std.detach().cpu(),
    }
    torch.save(stats, out_dir / NORMALIZER[0])
    shutil.copyfile(tokenizer_file, out_dir / TOKENIZER[0])
    if lm_file is not None:
        shutil.copyfile(lm_file, out_dir / LM[0])
    else:  # a re-export without the LM must not keep an old one
        (out_dir / LM[0]).unlink(missing_ok=True)
    return out_dir

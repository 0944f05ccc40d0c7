"""Transcribe audio with an exported HyperConformer model folder.

A model folder (see :mod:`hyperconformer.export`) holds ``hyperparams.yaml``,
``model.ckpt``, ``normalizer.ckpt`` and ``tokenizer.ckpt``; it also loads with
SpeechBrain's stock ``EncoderDecoderASR`` and transcribes the same.
:class:`Transcriber` adds what the stock class lacks: safe loading, CTC-only
decoding, decoding settings at load time, long recordings and per-file errors.

Safety
------
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

Long recordings
---------------
HyperMixing is linear in time, so memory alone does not rule out encoding a
10-minute file in one pass (15 000 encoder frames). Two things make it a poor
default: HyperMixing's token summary is a sum over all frames without length
normalisation, so on 10 minutes it is far outside what a model trained on
utterances of at most 30 s has seen, and attention decoding over 10 minutes
of memory would run thousands of steps, each attending over all of it.
Recordings longer than ``chunk_seconds`` (30 s) are therefore cut into
equally spaced 30 s windows overlapping by at least ``overlap_seconds`` (5 s),
decoded ``batch_size`` windows at a time with the chosen decoder, and
stitched by time. Each word gets its frame span: from the CTC spikes (greedy
CTC), from the prefix beam search, or, for attention hypotheses, from a CTC
forced alignment of the hypothesis to the window's CTC posteriors. Each pair
of neighbouring windows is cut at the widest pause between words within the
middle half of their overlap, and each window contributes the words whose
centre lies between its cuts, so a word cut by a window edge comes from the
neighbouring window, which saw it whole. Joint attention/CTC decoding of the
windows scores CTC only on the best attention candidates of each step
(``ctc_scoring="auto"``): SpeechBrain's full scoring costs frames x beams x
vocabulary per step, about 8 s per step of a 30 s window with 5000 tokens on
one CPU core.

Cost: 1.2x the encoder work of one pass (30 / 25), one Viterbi alignment
per window (milliseconds), and memory set by ``batch_size`` windows whatever
the file length. Measured with the 8M-parameter configuration (d_model 144,
10 encoder layers, 5000 tokens, random weights) on 10 minutes of speech, one
CPU thread on a shared 2-core machine, RSS above the loaded model's 827 MB:

==============================================  =====  ========
decoding                                        time   peak RSS
==============================================  =====  ========
CTC greedy, windows, batch_size 8               11 s   +0.51 GB
CTC greedy, windows, batch_size 2               9 s    +0.22 GB
CTC greedy, one pass (chunk_seconds=None)       13 s   +1.02 GB
attention + CTC, beam 10, windows, batch 8 (*)  690 s  +1.9 GB
==============================================  =====  ========

(*) random weights never stop early, so decoding was capped at 100 tokens
per window, about what a trained model emits for 30 s of speech. SpeechBrain's
Transformer decoder recomputes every position and the cross-attention
projections of the whole window at each step, which dominates this time.
"""

from __future__ import annotations

import importlib
import math
import pickle
import re
import time
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from speechbrain.decoders.seq2seq import S2STransformerBeamSearcher

from hyperconformer.audio import TranscriptionError, load_audio

__all__ = [
    "FileResult",
    "LastStepTransformerBeamSearcher",
    "Transcriber",
    "TranscriptionError",
    "Word",
    "check_hparams_safety",
    "ctc_align",
    "load_checkpoint",
    "stitch_windows",
]

# ----------------------------------------------------------------------------
# Safe loading

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


# ----------------------------------------------------------------------------
# Alignment and stitching


@dataclass
class Word:
    """A decoded word and its time span in seconds."""

    text: str
    start: float
    end: float

    @property
    def centre(self) -> float:
        return 0.5 * (self.start + self.end)


@dataclass
class FileResult:
    """One input file's outcome.

    ``decoding_time`` is the wall time of the batch that decoded the file,
    shared among the batch's files in proportion to their duration.
    """

    file: str
    transcript: str | None = None
    duration: float | None = None
    decoding_time: float | None = None
    error: str | None = None


def ctc_align(
    log_probs: torch.Tensor, tokens: Sequence[int], blank: int = 0
) -> list[tuple[int, int]] | None:
    """Viterbi (forced) alignment of a token sequence to CTC posteriors.

    Arguments
    ---------
    log_probs : torch.Tensor
        (time, vocab) log-probabilities of one utterance, padding removed.
    tokens : sequence of int
        The hypothesis, without blanks.
    blank : int
        Blank index.

    Returns
    -------
    list of (start, end) or None
        Frame span ``[start, end)`` of each token; None if the tokens do not
        fit in ``time`` frames.

    Example
    -------
    >>> lp = torch.full((6, 3), -9.0)
    >>> lp[[0, 3, 4], 0] = 0.0; lp[[1, 2], 1] = 0.0; lp[5, 2] = 0.0
    >>> ctc_align(lp, [1, 2])
    [(1, 3), (5, 6)]
    """
    n_frames = log_probs.size(0)
    if not tokens:
        return []
    ext = np.full(2 * len(tokens) + 1, blank, dtype=np.int64)
    ext[1::2] = tokens
    repeats = sum(a == b for a, b in zip(tokens[:-1], tokens[1:], strict=False))
    if len(tokens) + repeats > n_frames:
        return None
    emit = log_probs.detach().float().cpu().numpy()[:, ext]  # (time, states)
    states = ext.size
    # A skip over a blank is allowed into a token unless it repeats the last.
    skip_ok = np.zeros(states, dtype=bool)
    skip_ok[3::2] = ext[3::2] != ext[1:-2:2]
    alpha = np.full(states, -np.inf)
    alpha[:2] = emit[0, :2]
    back = np.zeros((n_frames, states), dtype=np.int8)
    for t in range(1, n_frames):
        stay = alpha
        step = np.concatenate(([-np.inf], alpha[:-1]))
        skip = np.concatenate(([-np.inf, -np.inf], alpha[:-2]))
        skip = np.where(skip_ok, skip, -np.inf)
        cand = np.stack((stay, step, skip))
        back[t] = cand.argmax(axis=0)
        alpha = cand.max(axis=0) + emit[t]
    final = states - 1 if alpha[-1] >= alpha[-2] else states - 2
    if not np.isfinite(alpha[final]):
        return None
    spans: list[list[int]] = [[-1, -1] for _ in tokens]
    state = final
    for t in range(n_frames - 1, -1, -1):
        if state % 2 == 1:
            span = spans[state // 2]
            span[0] = t
            if span[1] < 0:
                span[1] = t + 1
        state -= int(back[t, state])
    return [(a, b) for a, b in spans]


def stitch_windows(
    windows: Sequence[tuple[float, float, Sequence[Word]]],
) -> list[Word]:
    """Merge the words of overlapping windows into one transcript.

    Neighbouring windows are cut at the widest pause between two words of the
    earlier window within the middle half of their overlap (or at the middle
    of the overlap if there is none); each window keeps the words whose centre
    lies between its cuts.

    Arguments
    ---------
    windows : sequence of (start, end, words)
        In time order; start/end in seconds and words with absolute times.

    Returns
    -------
    list[Word]

    Example
    -------
    >>> w = lambda text, t: Word(text, t, t + 0.4)
    >>> first = (0.0, 30.0, [w("a", 20.0), w("b", 26.0), w("c", 28.5)])
    >>> second = (25.0, 55.0, [w("b", 26.1), w("c", 28.5), w("d", 40.0)])
    >>> " ".join(word.text for word in stitch_windows([first, second]))
    'a b c d'
    """
    cuts = []
    for (_, end, words), (start, _, _) in zip(windows[:-1], windows[1:], strict=True):
        overlap = end - start
        middle = start + 0.5 * overlap
        lo, hi = start + 0.25 * overlap, end - 0.25 * overlap
        best, best_gap = middle, 0.0
        for left, right in zip(words[:-1], words[1:], strict=False):
            gap = right.start - left.end
            centre = 0.5 * (left.end + right.start)
            if lo <= centre <= hi and gap > best_gap:
                best, best_gap = centre, gap
        cuts.append(best)
    bounds = [-math.inf, *cuts, math.inf]
    merged: list[Word] = []
    for (_, _, words), lo, hi in zip(windows, bounds[:-1], bounds[1:], strict=True):
        merged.extend(w for w in words if lo <= w.centre < hi)
    return merged


def window_starts(n_samples: int, window: int, overlap: int) -> list[int]:
    """Equally spaced start samples of full windows covering ``n_samples``.

    Example
    -------
    >>> window_starts(100, 30, 5)
    [0, 23, 47, 70]
    """
    if n_samples <= window:
        return [0]
    count = math.ceil((n_samples - overlap) / (window - overlap))
    count = max(count, 2)
    hop = (n_samples - window) / (count - 1)
    return [round(i * hop) for i in range(count)]


class LastStepTransformerBeamSearcher(S2STransformerBeamSearcher):
    """``S2STransformerBeamSearcher`` that projects only the newest step.

    SpeechBrain's searcher applies the output layer to every decoded position
    at every step and keeps the last; with 5000 tokens that is about half of
    a step's work once hypotheses reach a hundred tokens (a 30 s window).
    Same arguments, same search.
    """

    def forward_step(self, inp_tokens, memory, enc_states, enc_lens):
        """One step: (batch x beam,) tokens -> (batch x beam, vocab) log-probs."""
        if memory is None:
            memory = torch.empty(inp_tokens.size(0), 0, device=inp_tokens.device)
        memory = torch.cat([memory, inp_tokens.unsqueeze(1)], dim=-1)
        pred, attn = self.model.decode(memory, enc_states, enc_lens)
        log_probs = self.softmax(self.fc(pred[:, -1]) / self.temperature)
        return log_probs, memory, attn


# ----------------------------------------------------------------------------
# The transcriber


@dataclass
class _Hyp:
    text: str
    words: list[Word] | None = None  # seconds from the start of the input


class Transcriber:
    """Speech-to-text with an exported model folder.

    Build it with :meth:`from_pretrained`.

    Arguments
    ---------
    hparams : dict
        The loaded ``hyperparams.yaml`` with weights in place.
    device : str
        "cpu", "cuda", "cuda:1", ...
    beam_size : int, optional
        Beam size; the folder's default if None. With ``ctc_only``, None or 1
        means greedy CTC and more means CTC prefix beam search.
    ctc_weight : float, optional
        CTC weight in joint attention/CTC beam search; the folder's default
        if None.
    ctc_only : bool
        Decode with the CTC head alone (fast).
    chunk_seconds : float, optional
        Longer inputs are transcribed in overlapping windows of this length;
        None or 0 transcribes every input in one pass.
    overlap_seconds : float
        Least overlap between neighbouring windows.
    batch_size : int
        Windows decoded together for long inputs (files per batch in
        :meth:`transcribe_files`).
    ctc_scoring : str
        How joint decoding applies CTC: "full" scores every token at every
        step, as the folder's decoder and SpeechBrain's ``EncoderDecoderASR``
        do (same transcripts); "partial" scores only the ``2 x beam`` best
        attention candidates (far cheaper: full scoring costs
        frames x beams x vocabulary per step, minutes per utterance on a
        CPU with 5000 tokens); "auto" is full for inputs decoded in one pass
        and partial for the windows of long recordings.
    """

    def __init__(
        self,
        hparams: dict,
        device: str = "cpu",
        beam_size: int | None = None,
        ctc_weight: float | None = None,
        ctc_only: bool = False,
        chunk_seconds: float | None = 30.0,
        overlap_seconds: float = 5.0,
        batch_size: int = 8,
        ctc_scoring: str = "auto",
    ) -> None:
        if beam_size is not None and beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        if ctc_weight is not None and not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if chunk_seconds and not 0 <= overlap_seconds < chunk_seconds / 2:
            raise ValueError(
                "overlap_seconds must be in [0, chunk_seconds / 2), "
                f"got {overlap_seconds} for chunk_seconds={chunk_seconds}"
            )
        self.hparams = hparams
        self.device = torch.device(device)
        self.sample_rate = int(hparams["sample_rate"])
        self.tokenizer = hparams["tokenizer"]
        self.encoder = hparams["encoder"]
        self.ctc_lin = hparams["ctc_lin"]
        self.blank_index = int(hparams.get("blank_index", 0))
        self.ctc_only = ctc_only
        self.batch_size = batch_size
        self.chunk_seconds = chunk_seconds or None
        self.overlap_seconds = overlap_seconds
        self.beam_size = beam_size
        if ctc_scoring not in ("auto", "full", "partial"):
            raise ValueError(
                f"ctc_scoring must be 'auto', 'full' or 'partial', got {ctc_scoring!r}"
            )
        self.ctc_scoring = ctc_scoring
        self.decoder = self._window_decoder = hparams["decoder"]
        if not ctc_only:
            self.decoder = self._make_decoder(
                beam_size, ctc_weight, partial_ctc=ctc_scoring == "partial"
            )
            self._window_decoder = self._make_decoder(
                beam_size, ctc_weight, partial_ctc=ctc_scoring != "full"
            )
        self._prefix_searcher = None
        if ctc_only and beam_size is not None and beam_size > 1:
            from speechbrain.decoders.ctc import CTCPrefixBeamSearcher

            self._prefix_searcher = CTCPrefixBeamSearcher(
                blank_index=self.blank_index,
                vocab_list=self._vocab_list(),
                beam_size=beam_size,
            )

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls, source: str | Path, device: str = "cpu", **kwargs
    ) -> Transcriber:
        """Load a model folder safely (see the module docstring).

        Arguments
        ---------
        source : str or Path
            Folder with hyperparams.yaml, model.ckpt (or asr.ckpt),
            tokenizer.ckpt (or tokenizer.model) and normalizer.ckpt.
        device : str
            Where to run.
        **kwargs
            Decoding options, see :class:`Transcriber`.

        Returns
        -------
        Transcriber

        Raises
        ------
        TranscriptionError
            A part is missing, unsafe or does not fit the others.

        Example
        -------
        >>> asr = Transcriber.from_pretrained("model", ctc_only=True)  # doctest: +SKIP
        >>> asr.transcribe_file("speech.flac")  # doctest: +SKIP
        'HELLO WORLD'
        """
        folder = Path(source)
        device = str(device)
        if not folder.is_dir():
            raise TranscriptionError(f"{folder}: model folder not found")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise TranscriptionError(f"device {device}: CUDA is not available")
        yaml_file = folder / "hyperparams.yaml"
        if not yaml_file.is_file():
            raise TranscriptionError(f"{yaml_file}: missing from the model folder")
        model_file = _first_existing(folder, ("model.ckpt", "asr.ckpt"))
        tokenizer_file = _first_existing(folder, ("tokenizer.ckpt", "tokenizer.model"))
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

        for key in ("asr_model", "compute_features", "encoder"):
            if isinstance(hparams.get(key), torch.nn.Module):
                hparams[key].to(device).eval()
        if normalizer is not None:
            normalizer.to(device)  # its statistics are plain attributes
            normalizer.eval()
        if isinstance(hparams["decoder"], torch.nn.Module):
            hparams["decoder"].to(device).eval()
        return cls(hparams, device=device, **kwargs)

    def _make_decoder(
        self, beam_size: int | None, ctc_weight: float | None, partial_ctc: bool
    ):
        """The folder's beam searcher, or a copy with other settings.

        ``partial_ctc`` moves the CTC scorer from full scoring (every token,
        every step: O(frames x beams x vocabulary)) to partial scoring (the
        ``2 x beam`` best attention candidates of each step).
        """
        from speechbrain.decoders.scorer import CTCScorer, ScorerBuilder

        old = self.hparams["decoder"]
        scorer = getattr(old, "scorer", None)
        full = dict(scorer.full_scorers) if scorer else {}
        partial = dict(scorer.partial_scorers) if scorer else {}
        wants_partial = partial_ctc and "ctc" in full
        if beam_size is None and ctc_weight is None and not wants_partial:
            return old
        if not isinstance(old, S2STransformerBeamSearcher):
            raise TranscriptionError(
                "decoder: only S2STransformerBeamSearcher folders take a beam size, "
                f"CTC weight or CTC scoring, this one has {type(old).__name__}"
            )
        weights = {k: scorer.weights[k] for k in (*full, *partial)} if scorer else {}
        if ctc_weight is not None:
            if ctc_weight > 0 and "ctc" not in full and "ctc" not in partial:
                full["ctc"] = CTCScorer(
                    ctc_fc=self.ctc_lin,
                    blank_index=self.blank_index,
                    eos_index=old.eos_index,
                )
            if ctc_weight == 0:
                # A zero-weight scorer would still cost its full price.
                full.pop("ctc", None)
                partial.pop("ctc", None)
                weights.pop("ctc", None)
            else:
                weights["ctc"] = ctc_weight
        if partial_ctc and "ctc" in full:
            partial["ctc"] = full.pop("ctc")
        if full or partial:
            scorer = ScorerBuilder(
                weights=weights,
                full_scorers=list(full.values()),
                partial_scorers=list(partial.values()),
                scorer_beam_scale=scorer.scorer_beam_scale if scorer else 2,
            )
        else:
            scorer = None
        return LastStepTransformerBeamSearcher(
            modules=[old.model, old.fc],
            temperature=old.temperature,
            bos_index=old.bos_index,
            eos_index=old.eos_index,
            min_decode_ratio=old.min_decode_ratio,
            max_decode_ratio=old.max_decode_ratio,
            beam_size=beam_size if beam_size is not None else old.beam_size,
            scorer=scorer,
            using_eos_threshold=old.using_eos_threshold,
            eos_threshold=old.eos_threshold,
            length_normalization=old.length_normalization,
            using_max_attn_shift=old.using_max_attn_shift,
            max_attn_shift=old.max_attn_shift,
            minus_inf=old.minus_inf,
        )

    def _vocab_list(self) -> list[str]:
        """Token strings for the CTC prefix searcher; specials print as ''."""
        sp = self.tokenizer
        n_out = self.ctc_lin.w.out_features if hasattr(self.ctc_lin, "w") else None
        size = max(sp.vocab_size(), n_out or 0)
        vocab = []
        for i in range(size):
            special = i >= sp.vocab_size() or sp.is_control(i) or sp.is_unknown(i)
            vocab.append("" if special else sp.id_to_piece(i))
        return vocab

    # ------------------------------------------------------------------ decoding

    @torch.no_grad()
    def _decode(
        self, wavs: torch.Tensor, wav_lens: torch.Tensor, timed: bool = False
    ) -> list[_Hyp]:
        """Decode one batch.

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) at ``sample_rate``.
        wav_lens : torch.Tensor
            (batch,) relative lengths.
        timed : bool
            Also return words with times (seconds from the start of each row).

        Returns
        -------
        list[_Hyp]
        """
        wavs = wavs.to(self.device, torch.float32)
        wav_lens = wav_lens.to(self.device, torch.float32)
        enc = self.encoder(wavs, wav_lens)  # (batch, frames, d_model)
        n_frames = enc.size(1)
        frame_seconds = wavs.size(1) / self.sample_rate / max(n_frames, 1)
        enc_lens = torch.round(wav_lens * n_frames).long().clamp(1, n_frames).tolist()
        need_ctc = self.ctc_only or timed
        log_probs = None
        if need_ctc:
            log_probs = torch.log_softmax(self.ctc_lin(enc), dim=-1).float()

        hyps: list[_Hyp] = []
        if self.ctc_only and self._prefix_searcher is not None:
            beams = self._prefix_searcher(log_probs.cpu(), wav_lens.cpu())
            for beam in beams:
                best = beam[0]
                words = None
                if timed:
                    words = [
                        Word(text, a * frame_seconds, b * frame_seconds)
                        for text, (a, b) in best.text_frames or []
                    ]
                hyps.append(_Hyp(" ".join(best.text.split()), words))
            return hyps

        if self.ctc_only:
            best = log_probs.argmax(dim=-1).cpu()
            for row, length in zip(best, enc_lens, strict=True):
                row = row[:length]
                keep = row != self.blank_index
                keep[1:] &= row[1:] != row[:-1]
                frames = keep.nonzero().flatten().tolist()
                tokens = row[frames].tolist()
                spans = [(f, f + 1) for f in frames]
                hyps.append(self._hyp(tokens, spans if timed else None, frame_seconds))
            return hyps

        decoder = self._window_decoder if timed else self.decoder
        token_seqs, _, _, _ = decoder(enc, wav_lens)
        for i, tokens in enumerate(token_seqs):
            tokens = [int(t) for t in tokens]
            spans = None
            if timed:
                spans = ctc_align(log_probs[i, : enc_lens[i]], tokens, self.blank_index)
                if spans is None:  # does not fit: spread evenly
                    step = enc_lens[i] / max(len(tokens), 1)
                    spans = [
                        (int(k * step), max(int((k + 1) * step), int(k * step) + 1))
                        for k in range(len(tokens))
                    ]
            hyps.append(self._hyp(tokens, spans, frame_seconds))
        return hyps

    def _hyp(
        self,
        tokens: list[int],
        spans: list[tuple[int, int]] | None,
        frame_seconds: float,
    ) -> _Hyp:
        text = self.tokenizer.decode_ids(tokens)
        if spans is None:
            return _Hyp(text)
        # Group tokens into words: a SentencePiece piece starting with "▁"
        # opens a word.
        groups: list[tuple[list[int], int, int]] = []
        for token, (a, b) in zip(tokens, spans, strict=True):
            piece = self.tokenizer.id_to_piece(token)
            if not groups or piece.startswith("\u2581"):
                groups.append(([token], a, b))
            else:
                ids, start, _ = groups[-1]
                groups[-1] = (ids + [token], start, b)
        words = []
        for ids, a, b in groups:
            word = self.tokenizer.decode_ids(ids).strip()
            if word:
                words.append(Word(word, a * frame_seconds, b * frame_seconds))
        return _Hyp(text, words)

    def _transcribe_long(self, wav: torch.Tensor) -> str:
        """(samples,) signal longer than a window -> text, by stitched windows."""
        window = int(self.chunk_seconds * self.sample_rate)
        overlap = int(self.overlap_seconds * self.sample_rate)
        starts = window_starts(wav.numel(), window, overlap)
        pieces: list[tuple[float, float, list[Word]]] = []
        for first in range(0, len(starts), self.batch_size):
            batch_starts = starts[first : first + self.batch_size]
            batch = torch.stack([wav[s : s + window] for s in batch_starts])
            hyps = self._decode(batch, torch.ones(len(batch_starts)), timed=True)
            for s, hyp in zip(batch_starts, hyps, strict=True):
                offset = s / self.sample_rate
                words = [
                    Word(w.text, w.start + offset, w.end + offset) for w in hyp.words
                ]
                pieces.append((offset, offset + window / self.sample_rate, words))
        return " ".join(w.text for w in stitch_windows(pieces))

    # ------------------------------------------------------------------ public

    def transcribe_batch(
        self, wavs: torch.Tensor, wav_lens: torch.Tensor | None = None
    ) -> list[str]:
        """Transcribe a padded batch of signals.

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) float at ``sample_rate`` (16 kHz), or (samples,).
        wav_lens : torch.Tensor, optional
            (batch,) lengths relative to ``samples``, as in SpeechBrain;
            all 1.0 if None.

        Returns
        -------
        list[str]
            One transcript per row. Rows longer than ``chunk_seconds`` are
            transcribed in overlapping windows.
        """
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be (batch, samples), got {tuple(wavs.shape)}")
        batch, samples = wavs.shape
        if wav_lens is None:
            wav_lens = torch.ones(batch)
        wav_lens = wav_lens.detach().float().cpu()
        lengths = torch.round(wav_lens * samples).long().clamp(1, samples).tolist()
        limit = (
            int(self.chunk_seconds * self.sample_rate) if self.chunk_seconds else None
        )
        long_rows = [i for i, n in enumerate(lengths) if limit and n > limit]
        texts = [""] * batch
        short_rows = [i for i in range(batch) if i not in long_rows]
        if short_rows and not long_rows:
            for i, hyp in enumerate(self._decode(wavs, wav_lens)):
                texts[i] = hyp.text
        elif short_rows:
            width = max(lengths[i] for i in short_rows)
            sub = wavs[short_rows, :width]
            rel = torch.tensor([lengths[i] / width for i in short_rows])
            for i, hyp in zip(short_rows, self._decode(sub, rel), strict=True):
                texts[i] = hyp.text
        for i in long_rows:
            texts[i] = self._transcribe_long(wavs[i, : lengths[i]])
        return texts

    def transcribe_file(self, path: str | Path) -> str:
        """Transcribe one audio file (any format, rate and channel count).

        Raises
        ------
        TranscriptionError
            The file is missing, not audio, empty or too short.
        """
        wav = load_audio(path, self.sample_rate)
        return self.transcribe_batch(wav.unsqueeze(0))[0]

    def transcribe_files(
        self,
        paths: Iterable[str | Path],
        batch_size: int | None = None,
        progress: bool | None = False,
    ) -> Iterator[FileResult]:
        """Transcribe many files in batches, in input order.

        Files that cannot be read give a result with ``error`` set; the
        others are still transcribed.

        Arguments
        ---------
        paths : iterable of str or Path
            Audio files.
        batch_size : int, optional
            Files decoded together; the transcriber's ``batch_size`` if None.
        progress : bool or None
            Show a tqdm bar on stderr; None shows it only on a terminal.

        Yields
        ------
        FileResult
        """
        from tqdm import tqdm

        paths = [Path(p) for p in paths]
        batch_size = batch_size or self.batch_size
        limit = (
            int(self.chunk_seconds * self.sample_rate) if self.chunk_seconds else None
        )
        bar = tqdm(
            total=len(paths),
            unit="file",
            disable=None if progress is None else not progress,
            dynamic_ncols=True,
        )
        try:
            for first in range(0, len(paths), batch_size):
                chunk = paths[first : first + batch_size]
                results = [FileResult(str(p)) for p in chunk]
                loaded: list[tuple[int, torch.Tensor]] = []
                for i, path in enumerate(chunk):
                    try:
                        wav = load_audio(path, self.sample_rate)
                    except TranscriptionError as err:
                        results[i].error = str(err)
                        continue
                    results[i].duration = wav.numel() / self.sample_rate
                    loaded.append((i, wav))
                short = [(i, w) for i, w in loaded if not limit or w.numel() <= limit]
                if short:
                    started = time.perf_counter()
                    width = max(w.numel() for _, w in short)
                    batch = torch.zeros(len(short), width)
                    for row, (_, w) in enumerate(short):
                        batch[row, : w.numel()] = w
                    rel = torch.tensor([w.numel() / width for _, w in short])
                    texts = self.transcribe_batch(batch, rel)
                    spent = time.perf_counter() - started
                    total = sum(w.numel() for _, w in short)
                    for (i, w), text in zip(short, texts, strict=True):
                        results[i].transcript = text
                        results[i].decoding_time = spent * w.numel() / total
                for i, w in loaded:
                    if limit and w.numel() > limit:
                        started = time.perf_counter()
                        results[i].transcript = self._transcribe_long(w)
                        results[i].decoding_time = time.perf_counter() - started
                for result in results:
                    bar.update(1)
                    yield result
        finally:
            bar.close()


def _first_existing(folder: Path, names: Sequence[str]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise TranscriptionError(
        f"{folder / names[0]}: missing from the model folder"
        + (f" (nor {', '.join(names[1:])})" if len(names) > 1 else "")
    )

"""Timing, memory and models built from the recipe yamls, for the tools.

``tools/benchmark.py`` (encoders against length), ``tools/compare.py`` (yaml
against yaml, with training steps and WER) and ``tools/gpu_check.py`` (the
CUDA check) measure with these functions, and build every model from its
yaml: model sizes live in ``hparams/LibriSpeech`` only.

Inputs are random fbank-shaped tensors, ``(batch, seconds * 100, 80)``.
"""

from __future__ import annotations

import gc
import re
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
HPARAMS_DIR = ROOT / "hparams" / "LibriSpeech"
FRAMES_PER_SECOND = 100
N_MELS = 80
# Random training targets: LibriSpeech has ~2.7 words/s, ~1.2 unigram pieces
# per word with 5000 pieces.
TOKENS_PER_SECOND = 3.0

# Yaml overrides that make any recipe model tiny: the tools' quick modes.
TINY_SIZES = dict(
    d_model=32,
    nhead=2,
    d_ffn=64,
    num_encoder_layers=2,
    num_decoder_layers=1,
    output_neurons=32,
)

# Class swaps that turn a recipe yaml into another model of the same sizes.
_SPEECHBRAIN_CLASSES = {
    "!new:hyperconformer.ConvFrontEnd": (
        "!new:speechbrain.lobes.models.convolution.ConvolutionFrontEnd"
    ),
    "!new:hyperconformer.HyperConformerASR": (
        "!new:speechbrain.lobes.models.transformer.TransformerASR.TransformerASR"
    ),
}
_OUR_FRONT_END = {
    "!new:speechbrain.lobes.models.convolution.ConvolutionFrontEnd": (
        "!new:hyperconformer.ConvFrontEnd"
    ),
}
# HyperConformerASR arguments that SpeechBrain's TransformerASR lacks.
_OUR_ONLY_ARGUMENT = re.compile(
    r"^\s+(mixing_init|mixing_dropout|hypernet_size):.*\n", re.M
)


def speechbrain_classes(text: str) -> str:
    """The yaml ``text`` with SpeechBrain's front-end and ``TransformerASR``
    in place of ours (same sizes: SpeechBrain's own hypermixing)."""
    for ours, theirs in _SPEECHBRAIN_CLASSES.items():
        text = text.replace(ours, theirs)
    return _OUR_ONLY_ARGUMENT.sub("", text)


def our_front_end(text: str) -> str:
    """The yaml ``text`` with :class:`hyperconformer.ConvFrontEnd` in place of
    SpeechBrain's ``ConvolutionFrontEnd`` (same arguments and outputs)."""
    for theirs, ours in _OUR_FRONT_END.items():
        text = text.replace(theirs, ours)
    return text


# Benchmark model name -> (yaml, text transformation).
MODEL_YAMLS: dict[str, tuple[str, Callable[[str], str] | None]] = {
    "ours": ("hyperconformer_8M.yaml", None),
    "sb_hypermixing": ("hyperconformer_8M.yaml", speechbrain_classes),
    "conformer_small": ("conformer_small.yaml", None),
    # The same Conformer behind our front-end: the encoder comparison is then
    # not partly a front-end comparison.
    "conformer_small_convfe": ("conformer_small.yaml", our_front_end),
}


def model_yaml_text(name: str) -> str:
    """The yaml text that defines benchmark model ``name``."""
    if name not in MODEL_YAMLS:
        raise ValueError(f"unknown model {name!r}; choose from {tuple(MODEL_YAMLS)}")
    filename, transform = MODEL_YAMLS[name]
    text = (HPARAMS_DIR / filename).read_text(encoding="utf-8")
    return transform(text) if transform else text


class EncoderPipeline(torch.nn.Module):
    """Front-end followed by ``encode``: ``(B, T, 80)`` fbanks to ``(B, T', d)``.

    Arguments
    ---------
    frontend : torch.nn.Module
        Maps ``(B, T, n_mels)`` to ``(B, T', F', C)``.
    asr : torch.nn.Module
        Has ``encode(src, wav_len)`` like SpeechBrain's ``TransformerASR``.
    """

    def __init__(self, frontend: torch.nn.Module, asr: torch.nn.Module):
        super().__init__()
        self.frontend = frontend
        self.asr = asr

    def forward(self, feats: torch.Tensor, wav_lens: torch.Tensor) -> torch.Tensor:
        return self.asr.encode(self.frontend(feats), wav_lens)


def make_inputs(
    seconds: float, batch: int, device: str | torch.device = "cpu", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random fbank-shaped features and relative lengths.

    Returns ``feats`` ``(batch, seconds * 100, 80)`` and ``wav_lens``
    ``(batch,)``: 1.0 for batch 1, else evenly spread from 0.5 to 1.0 (the
    frames past each length are zero).
    """
    frames = int(round(seconds * FRAMES_PER_SECOND))
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, frames, N_MELS, generator=gen)
    if batch == 1:
        wav_lens = torch.ones(1)
    else:
        wav_lens = torch.linspace(0.5, 1.0, batch)
        for i, rel in enumerate(wav_lens.tolist()):
            feats[i, int(round(rel * frames)) :] = 0.0
    return feats.to(device), wav_lens.to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], object],
    device: torch.device,
    repeats: int,
    budget_s: float | None = None,
    clock: str = "wall",
) -> list[float]:
    """Seconds per call of ``fn``: one warm-up call, then up to ``repeats``.

    Stops early (keeping at least one timing) once ``budget_s`` would be
    exceeded; if the warm-up alone takes over half the budget, its own time is
    returned.  ``clock="cpu"`` (CPU only) counts the CPU time of the whole
    process instead of wall time: with ``--threads 1`` it measures the work
    done, which a busy machine distorts much less than wall time.
    """
    timer = time.process_time if clock == "cpu" else time.perf_counter
    start = timer()
    fn()
    synchronize(device)
    warmup = timer() - start
    if budget_s is not None and warmup > budget_s / 2:
        return [warmup]
    times = []
    for _ in range(max(repeats, 1)):
        if device.type == "cuda":
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1000)
        else:
            start = timer()
            fn()
            times.append(timer() - start)
        spent = warmup + sum(times)
        if budget_s is not None and spent + times[-1] > budget_s:
            break
    return times


def rss_mb() -> float:
    """Current resident set size of this process, in MiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def reset_peak_rss() -> None:
    """Resets the peak RSS (and ru_maxrss) to the current RSS, where Linux
    allows it, so the peak measured next excludes model construction."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # the peak then includes construction: still an upper bound


def status_for(exc: BaseException) -> str:
    """A short table-friendly description of why a cell failed."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or re.search(
        r"out of memory|can't allocate memory|not enough memory", text, re.I
    ):
        return "OOM"
    sizes = re.search(r"size of tensor a \((\d+)\) must match .* b \((\d+)\)", text)
    if sizes:
        return f"fails: >{min(int(sizes[1]), int(sizes[2]))} frames"
    first_line = text.splitlines()[0] if text else type(exc).__name__
    return "fails: " + first_line[:60]


@dataclass
class CellResult:
    """The outcome of one (model, length, batch) measurement."""

    model: str
    seconds: float
    batch: int
    status: str = "ok"  # "ok", "OOM", "skipped ...", "fails: ...", "timeout"
    time_s: float | None = None  # median
    times_s: list[float] = field(default_factory=list)
    peak_mem_mb: float | None = None  # increase over the post-construction level
    peak_abs_mb: float | None = None  # absolute peak (RSS on CPU)
    base_mem_mb: float | None = None
    encoder_frames: int | None = None


def start_cuda_peak(device: torch.device) -> int | None:
    """Frees cached blocks and restarts the CUDA peak count; returns the bytes
    allocated now, the base that :func:`record_peak_memory` subtracts (None
    on other devices, which have no allocator statistics)."""
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    return base


def record_peak_memory(
    result: CellResult,
    device: torch.device,
    cuda_base: int | None,
    base_mem_mb: float | None,
) -> None:
    """Fills ``result``'s memory fields after its runs: on CUDA from the
    allocator's peak above ``cuda_base``; on CPU from the peak RSS above
    ``base_mem_mb``, when that is known (a fresh process only)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        result.peak_mem_mb = (peak - cuda_base) / 2**20
        result.peak_abs_mb = peak / 2**20
        result.base_mem_mb = cuda_base / 2**20
    elif base_mem_mb is not None:
        result.base_mem_mb = base_mem_mb
        result.peak_abs_mb = peak_rss_mb()
        result.peak_mem_mb = result.peak_abs_mb - base_mem_mb


def measure(
    model: torch.nn.Module,
    name: str,
    seconds: float,
    batch: int,
    device: str | torch.device = "cpu",
    repeats: int = 3,
    budget_s: float | None = None,
    base_mem_mb: float | None = None,
    clock: str = "wall",
) -> CellResult:
    """Times ``model(feats, wav_lens)`` for one cell; failures become statuses.

    On CUDA the peak memory is measured here; on CPU only when
    ``base_mem_mb`` (the RSS after model construction) is given, which is
    meaningful in a fresh process only.
    """
    device = torch.device(device)
    result = CellResult(name, seconds, batch)

    def setup():
        feats, wav_lens = make_inputs(seconds, batch, device)

        def call():
            with torch.inference_mode():
                out = model(feats, wav_lens)
            result.encoder_frames = int(out.shape[1])

        return call

    return time_cell(result, device, setup, repeats, budget_s, base_mem_mb, clock)


def time_cell(
    result: CellResult,
    device: torch.device,
    setup,
    repeats: int,
    budget_s: float | None,
    base_mem_mb: float | None,
    clock: str,
) -> CellResult:
    """Fills ``result`` for one cell: ``setup()`` builds the inputs and
    returns the call to time; its times and peak memory (see
    :func:`record_peak_memory`) go into ``result``, and a failure (out of
    memory, too long, ...) becomes its status instead."""
    try:
        call = setup()
        base = start_cuda_peak(device)
        times = time_call(call, device, repeats, budget_s, clock)
        result.times_s = times
        result.time_s = statistics.median(times)
        record_peak_memory(result, device, base, base_mem_mb)
    except (RuntimeError, MemoryError, ValueError, IndexError) as exc:
        result.status = status_for(exc)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def limit_memory(max_memory_gb: float | None) -> None:
    """Caps this process's address space at its current size + the budget,
    so an oversized cell fails with an allocation error instead of making
    the machine swap or the OOM killer pick a victim."""
    if not max_memory_gb or not hasattr(resource, "RLIMIT_AS"):
        return
    with open("/proc/self/status") as status:
        vm_kb = next(int(line.split()[1]) for line in status if line[:7] == "VmSize:")
    limit = int(vm_kb * 1024 + max_memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))


def load_hparams(
    path: str | Path, overrides: dict | None = None, text: str | None = None
) -> dict:
    """Instantiates a recipe yaml (from ``text`` when given, else from
    ``path``); its output and data folders are throw-away (the checkpointer
    creates its folder on construction)."""
    from hyperpyyaml import load_hyperpyyaml

    if text is None:
        text = Path(path).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        merged = {"data_folder": tmp, "output_folder": tmp, **(overrides or {})}
        return load_hyperpyyaml(text, merged, overrides_must_match=False)


def encoder_pipeline(hp: dict) -> EncoderPipeline:
    """``(B, T, 80)`` fbanks -> encoder output, as the recipe computes it."""
    missing = [k for k in ("CNN", "Transformer") if k not in hp]
    if missing:
        raise ValueError(f"hparams lack {', '.join(missing)}")
    return EncoderPipeline(hp["CNN"], hp["Transformer"])


def build_model(
    name: str, device: str | torch.device = "cpu", overrides: dict | None = None
) -> EncoderPipeline:
    """Front-end + encoder of :data:`MODEL_YAMLS` ``name`` (seeded, eval mode).

    Example
    -------
    >>> build_model("ours", overrides={"num_encoder_layers": 1}).asr.d_model
    144
    """
    torch.manual_seed(0)
    hp = load_hparams(name, overrides, model_yaml_text(name))
    return encoder_pipeline(hp).to(device).eval()


def make_training_batch(
    seconds: float, batch: int, vocab: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``batch`` full-length utterances: fbank-shaped features, relative
    lengths (all 1) and random token ids (never blank/bos/eos)."""
    frames = int(round(seconds * FRAMES_PER_SECOND))
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, frames, N_MELS, generator=gen)
    n_tokens = max(1, int(round(seconds * TOKENS_PER_SECOND)))
    tokens = torch.randint(3, max(vocab, 4), (batch, n_tokens), generator=gen)
    return feats.to(device), torch.ones(batch, device=device), tokens.to(device)


def training_loss_name(hp: dict) -> str:
    needed = ("ctc_lin", "seq_lin", "ctc_cost", "seq_cost", "ctc_weight")
    if all(k in hp for k in needed):
        w = hp["ctc_weight"]
        smoothing = getattr(hp["seq_cost"], "keywords", {}).get("label_smoothing", 0)
        return (
            f"{w:g} x CTC + {1 - w:g} x attention (KL, label smoothing {smoothing:g})"
        )
    return "proxy: mean square of the encoder output"


def training_loss(
    hp: dict, feats: torch.Tensor, wav_lens: torch.Tensor, tokens: torch.Tensor
) -> torch.Tensor:
    """The recipe's training loss (see ``ASR.compute_objectives`` in train.py),
    without feature normalisation and augmentation."""
    if training_loss_name(hp).startswith("proxy"):
        return encoder_pipeline(hp)(feats, wav_lens).pow(2).mean()
    bos = torch.full_like(tokens[:, :1], hp.get("bos_index", 1))
    eos = torch.full_like(tokens[:, :1], hp.get("eos_index", 2))
    token_lens = torch.ones(tokens.size(0), device=tokens.device)
    enc, dec = hp["Transformer"](
        hp["CNN"](feats),
        torch.cat([bos, tokens], 1),
        wav_lens,
        pad_idx=hp.get("pad_index", 0),
    )
    p_ctc = torch.log_softmax(hp["ctc_lin"](enc), dim=-1)
    p_seq = torch.log_softmax(hp["seq_lin"](dec), dim=-1)
    loss_ctc = hp["ctc_cost"](p_ctc, tokens, wav_lens, token_lens)
    loss_seq = hp["seq_cost"](p_seq, torch.cat([tokens, eos], 1), length=token_lens)
    weight = hp["ctc_weight"]
    return weight * loss_ctc + (1 - weight) * loss_seq


def measure_training(
    hp: dict,
    label: str,
    seconds: float,
    batch: int,
    device: str | torch.device = "cpu",
    repeats: int = 3,
    budget_s: float | None = None,
    base_mem_mb: float | None = None,
    clock: str = "wall",
) -> CellResult:
    """Times forward + backward of :func:`training_loss`, like
    ``benchmark.measure`` does for inference; failures become statuses."""
    device = torch.device(device)
    result = CellResult(label, seconds, batch)

    def setup():
        modules = [
            hp[k] for k in ("CNN", "Transformer", "ctc_lin", "seq_lin") if k in hp
        ]
        for module in modules:
            module.to(device).train()
        params = [p for module in modules for p in module.parameters()]
        vocab = int(hp.get("output_neurons", 32))
        feats, wav_lens, tokens = make_training_batch(seconds, batch, vocab, device)

        def step() -> None:
            for p in params:
                p.grad = None  # each step allocates its gradients, as in training
            training_loss(hp, feats, wav_lens, tokens).backward()

        return step

    with warnings.catch_warnings():
        # SpeechBrain's own decoder mixes mask types; not ours to fix.
        warnings.filterwarnings("ignore", message="Support for mismatched")
        return time_cell(result, device, setup, repeats, budget_s, base_mem_mb, clock)

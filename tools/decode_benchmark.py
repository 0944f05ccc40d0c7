#!/usr/bin/env python
"""Decoding speed: JointBeamSearcher against SpeechBrain's searcher, side by side.

Two measurements, each in one process, ours and SpeechBrain's alternating on
the same inputs:

1. ``folder``: an exported model folder, test files one at a time, end to end
   (audio -> text): SpeechBrain's ``EncoderDecoderASR`` with its stock
   ``S2STransformerBeamSearcher`` (the folder's settings) against
   :class:`hyperconformer.Transcriber`; same transcripts counted.
2. ``search``: the searchers alone on the same encoder output, for the
   folder's model (``demo``) and for the ``hyperconformer_8M.yaml`` sizes
   (``8M``: 5000 tokens, random weights, so decoding is capped at
   ``--cap`` tokens per 30 s as a trained model would emit, for both), on
   short utterances (the test files, in batches of 8) and on a long
   recording (the test files joined to ``--long-minutes``, cut into the
   Transcriber's 30 s windows, batches of 8). CTC greedy decoding is timed
   for reference. SpeechBrain's searcher on the long recording is timed on
   the first ``--sb-windows`` windows only and scaled to all (stated in the
   table).

Wall-clock times (``time.perf_counter``) with ``--threads`` threads; on a
shared machine, compare only numbers from the same run.

Usage::

    python tools/decode_benchmark.py --model results/demo/hyperconformer_demo/model \\
        --data data/synthetic/LibriSpeech/test-clean --threads 2 --out report.md
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import soundfile
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hyperconformer import JointBeamSearcher, Transcriber  # noqa: E402
from hyperconformer.longform import window_starts  # noqa: E402

SR = 16000
WINDOW, OVERLAP = 30.0, 5.0


def _clock(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def stock_searcher(fast: JointBeamSearcher):
    """SpeechBrain's searcher with ``fast``'s settings."""
    from speechbrain.decoders.seq2seq import S2STransformerBeamSearcher

    return S2STransformerBeamSearcher(**JointBeamSearcher.settings(fast))


def load_files(folder: Path, count: int) -> list[torch.Tensor]:
    files = sorted(folder.rglob("*.flac"))[:count]
    if not files:
        raise SystemExit(f"error: no .flac files under {folder}")
    return [torch.from_numpy(soundfile.read(f, dtype="float32")[0]) for f in files]


def long_recording(wavs: list[torch.Tensor], minutes: float) -> torch.Tensor:
    """The files joined with 0.3 s pauses, repeated to ``minutes``."""
    gap = torch.zeros(int(0.3 * SR))
    pieces, total = [], 0
    while total < minutes * 60 * SR:
        for wav in wavs:
            pieces += [wav, gap]
            total += wav.numel() + gap.numel()
    return torch.cat(pieces)[: int(minutes * 60 * SR)]


def folder_case(args, wavs, rows):
    """EncoderDecoderASR (stock searcher) vs Transcriber, files one at a time."""
    from speechbrain.inference.ASR import EncoderDecoderASR

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock = EncoderDecoderASR.from_hparams(
            source=str(args.model), savedir=str(args.model)
        )
    stock.mods.decoder = stock_searcher(stock.mods.decoder)
    ours = Transcriber.from_pretrained(args.model)
    ours.transcribe_batch(wavs[0])  # warm-up
    seconds = sum(w.numel() for w in wavs) / SR

    def run_stock():
        return [stock.transcribe_batch(w[None], torch.ones(1))[0][0] for w in wavs]

    def run_ours():
        return [ours.transcribe_batch(w)[0] for w in wavs]

    def run_stock_batched():
        texts = []
        for signal, lens in batches(wavs, 8):
            texts += stock.transcribe_batch(signal, lens)[0]
        return texts

    def run_ours_batched():
        texts = []
        for signal, lens in batches(wavs, 8):
            texts += ours.transcribe_batch(signal, lens)
        return texts

    for how, stock_fn, ours_fn in (
        ("one at a time", run_stock, run_ours),
        ("in batches of 8", run_stock_batched, run_ours_batched),
    ):
        t_stock, texts_stock = _clock(stock_fn)
        t_ours, texts_ours = _clock(ours_fn)
        same = sum(a == b for a, b in zip(texts_stock, texts_ours, strict=True))
        rows.append(
            f"| {len(wavs)} files {how} ({seconds:.0f} s), joint, beam "
            f"{ours.decoder.beam_size} | EncoderDecoderASR {t_stock:.2f} s | "
            f"Transcriber {t_ours:.2f} s | {t_stock / t_ours:.1f}x | "
            f"{same}/{len(wavs)} same |"
        )
        print(rows[-1], flush=True)
    long_wav = long_recording(wavs, args.long_minutes)
    t_long, _ = _clock(lambda: ours.transcribe_batch(long_wav))
    rows.append(
        f"| {args.long_minutes:g} min recording, joint, beam "
        f"{ours.decoder.beam_size}, 30 s windows | | Transcriber {t_long:.2f} s | | "
        f"RTF {t_long / (long_wav.numel() / SR):.4f} (audio to text) |"
    )


def model_parts(name: str, args):
    """(wav -> (enc, lens) function, ctc_lin, fast searcher template)."""
    from speechbrain.decoders.scorer import CTCScorer, ScorerBuilder

    if name == "demo":
        asr = Transcriber.from_pretrained(args.model)
        return asr.encoder, asr.ctc_lin, asr.decoder
    from hyperpyyaml import load_hyperpyyaml

    torch.manual_seed(0)
    with open(ROOT / "hparams" / "LibriSpeech" / "hyperconformer_8M.yaml") as f:
        hp = load_hyperpyyaml(f, {"data_folder": "unused"})
    for key in ("CNN", "Transformer", "ctc_lin", "seq_lin"):
        hp[key].eval()

    def encode(wavs, lens):
        feats = hp["compute_features"](wavs)
        feats = (feats - feats.mean(1, keepdim=True)) / (
            feats.std(1, keepdim=True) + 1e-5
        )
        return hp["Transformer"].encode(hp["CNN"](feats), lens)

    ctc = CTCScorer(ctc_fc=hp["ctc_lin"], blank_index=0, eos_index=2)
    fast = JointBeamSearcher(
        modules=[hp["Transformer"], hp["seq_lin"]],
        bos_index=1,
        eos_index=2,
        min_decode_ratio=0.0,
        max_decode_ratio=1.0,
        beam_size=10,
        temperature=1.0,
        using_eos_threshold=False,
        length_normalization=True,
        scorer=ScorerBuilder(full_scorers=[ctc], weights={"ctc": 0.4}),
    )
    return encode, hp["ctc_lin"], fast


def batches(wavs: list[torch.Tensor], size: int):
    for first in range(0, len(wavs), size):
        group = wavs[first : first + size]
        width = max(w.numel() for w in group)
        signal = torch.stack(
            [torch.nn.functional.pad(w, (0, width - w.numel())) for w in group]
        )
        yield signal, torch.tensor([w.numel() / width for w in group])


@torch.no_grad()
def search_case(name, args, wavs, long_wav, rows):
    encode, ctc_lin, template = model_parts(name, args)
    window, overlap = int(WINDOW * SR), int(OVERLAP * SR)
    windows = [
        long_wav[s : s + window]
        for s in window_starts(long_wav.numel(), window, overlap)
    ]
    inputs = {
        f"{len(wavs)} utterances ({sum(w.numel() for w in wavs) / SR:.0f} s)": wavs,
        f"{args.long_minutes:g} min recording ({len(windows)} windows)": windows,
    }
    for label, items in inputs.items():
        audio = (
            sum(w.numel() for w in items) / SR
            if "utterances" in label
            else (long_wav.numel() / SR)
        )
        t_enc, encoded = _clock(
            lambda: [(encode(s, n), n) for s, n in batches(items, 8)]  # noqa: B023
        )
        t_ctc, _ = _clock(
            lambda: [ctc_lin(e).argmax(-1) for e, _ in encoded]  # noqa: B023
        )
        rows.append(
            f"| {name} | {label} | encoder | | {t_enc:.2f} s | | "
            f"RTF {t_enc / audio:.4f} |"
        )
        rows.append(f"| {name} | {label} | CTC greedy | | {t_ctc:.2f} s | | |")
        for beam in args.beams:
            ratio = template.max_decode_ratio
            if name == "8M":  # random weights: cap the steps for both
                frames = encoded[0][0].size(1) / (
                    max(w.numel() for w in items[:8]) / SR
                )
                ratio = args.cap / WINDOW / frames
            fast = JointBeamSearcher.like(
                template, beam_size=beam, max_decode_ratio=ratio
            )
            stock = stock_searcher(fast)
            t_ours, ours = _clock(lambda: [fast(e, n)[0] for e, n in encoded])  # noqa: B023
            limit = (
                encoded
                if "utterances" in label
                else encoded[: max(1, args.sb_windows // 8)]
            )
            if "recording" in label and args.sb_windows < 8:
                limit = [
                    (e[: args.sb_windows], n[: args.sb_windows]) for e, n in encoded[:1]
                ]
            n_limit = sum(e.size(0) for e, _ in limit)
            n_all = sum(e.size(0) for e, _ in encoded)
            if name == "8M" and "recording" in label and beam > 10:
                rows.append(
                    f"| {name} | {label} | joint, beam {beam} | not run | "
                    f"{t_ours:.2f} s | | RTF ours {(t_ours + t_enc) / audio:.4f} "
                    "(with encoder) |"
                )
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t_sb, theirs = _clock(lambda: [stock(e, n)[0] for e, n in limit])  # noqa: B023
            scaled = t_sb * n_all / n_limit
            flat_ours = [h for group in ours for h in group]
            flat_sb = [h for group in theirs for h in group]
            same = sum(a == b for a, b in zip(flat_sb, flat_ours, strict=False))
            note = (
                ""
                if n_limit == n_all
                else f" (x{n_all / n_limit:.0f}: {n_limit} measured)"
            )
            rows.append(
                f"| {name} | {label} | joint, beam {beam} | {scaled:.2f} s{note} | "
                f"{t_ours:.2f} s | {scaled / t_ours:.1f}x | "
                f"{same}/{len(flat_sb)} same; "
                f"RTF ours {(t_ours + t_enc) / audio:.4f} (with encoder) |"
            )
            print(rows[-1], flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="exported model folder")
    p.add_argument(
        "--data", type=Path, required=True, help="folder of .flac test files"
    )
    p.add_argument("--files", type=int, default=40)
    p.add_argument("--beams", type=int, nargs="+", default=[10, 66])
    p.add_argument("--long-minutes", type=float, default=10.0)
    p.add_argument("--sizes", nargs="+", default=["demo", "8M"], choices=["demo", "8M"])
    p.add_argument("--cases", nargs="+", default=["folder", "search"])
    p.add_argument("--cap", type=int, default=100, help="8M: tokens per 30 s")
    p.add_argument("--sb-windows", type=int, default=8, help="windows SB decodes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    wavs = load_files(args.data, args.files)
    rows = [
        f"threads {args.threads}, wall clock; SpeechBrain / ours side by side",
        "",
        "| case | SpeechBrain | ours | speed-up | notes |",
        "|---|---|---|---|---|",
    ]
    if "folder" in args.cases:
        folder_case(args, wavs, rows)
        print(rows[-1], flush=True)
    if "search" in args.cases:
        rows += [
            "",
            "| model | input | decoding | SpeechBrain | ours | speed-up | notes |",
            "|---|---|---|---|---|---|---|",
        ]
        long_wav = long_recording(wavs, args.long_minutes)
        for name in args.sizes:
            search_case(name, args, wavs, long_wav, rows)
    text = "\n".join(rows) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

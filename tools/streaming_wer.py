#!/usr/bin/env python3
"""WER of one model offline and with its encoder in chunks of several sizes.

Every utterance of a LibriSpeech-format split is decoded with an exported
model folder, once with the offline encoder and once per chunk size with the
encoder chunked as a stream computes it (``HyperConformerASR.encode`` with a
``DynChunkTrainConfig``: each frame sees its chunk and the whole past; a
:class:`hyperconformer.StreamingEncoder` fed the audio gives the same encoder
outputs). The decoding itself is the model folder's: joint CTC/attention beam
search over the whole utterance, or greedy CTC with ``--ctc-only``. Batches of
``--batch-size`` utterances of similar length, on the CPU.

    python tools/streaming_wer.py --model results/hyperconformer_8M_streaming/model \\
        --split data/synthetic/LibriSpeech/test-clean --chunks 8 16 32

Prints a markdown table (WER and its ratio to the offline WER per row);
``--json FILE`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from longform_accuracy import Utterance, load_split, word_errors  # noqa: E402

from hyperconformer.folder import load_model_folder  # noqa: E402
from hyperconformer.search import ctc_decode  # noqa: E402


@torch.no_grad()
def decode(
    hparams: dict,
    utterances: Sequence[Utterance],
    chunk_size: int | None,
    ctc_only: bool = False,
    batch_size: int = 8,
) -> list[str]:
    """Hypotheses for ``utterances`` (in their order), with the encoder in
    chunks of ``chunk_size`` frames (None: offline)."""
    config = None if chunk_size is None else DynChunkTrainConfig(chunk_size)
    modules = [hparams[k].eval() for k in ("compute_features", "normalizer", "CNN")]
    features, normalizer, cnn = modules
    model, tokenizer = hparams["Transformer"].eval(), hparams["tokenizer"]
    order = sorted(range(len(utterances)), key=lambda i: len(utterances[i].audio))
    texts = [""] * len(utterances)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        longest = max(len(utterances[i].audio) for i in rows)
        wavs = torch.zeros(len(rows), longest)
        for r, i in enumerate(rows):
            wavs[r, : len(utterances[i].audio)] = torch.from_numpy(utterances[i].audio)
        lens = torch.tensor([len(utterances[i].audio) / longest for i in rows])
        feats = normalizer(features(wavs), lens)
        enc = model.encode(cnn(feats), lens, 0, config)
        if ctc_only:
            n = enc.size(1)
            log_probs = torch.log_softmax(hparams["ctc_lin"](enc), -1)
            enc_lens = torch.round(lens * n).long().clamp(1, n).tolist()
            seconds = longest / int(hparams["sample_rate"]) / n
            blank = int(hparams.get("blank_index", 0))
            decoded = [
                t
                for t, _ in ctc_decode(
                    log_probs, lens, enc_lens, tokenizer, seconds, blank
                )
            ]
        else:
            tokens, _, _, _ = hparams["decoder"](enc, lens)
            decoded = [tokenizer.decode_ids([int(t) for t in seq]) for seq in tokens]
        for i, text in zip(rows, decoded, strict=True):
            texts[i] = text
    return texts


def encoder_frame_ms(hparams: dict) -> float:
    """Milliseconds of audio per encoder frame (10 ms fbank frames times the
    front-end's subsampling, measured on 8 s of features)."""
    n_mels = int(hparams.get("n_mels", 80))
    with torch.no_grad():
        frames = hparams["CNN"].eval()(torch.zeros(1, 800, n_mels)).size(1)
    return 8000.0 / frames


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="exported model folder")
    parser.add_argument("--split", required=True, help="LibriSpeech-format split")
    parser.add_argument("--chunks", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--ctc-only", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    hparams = load_model_folder(args.model)
    utterances = load_split(Path(args.split))
    refs = [u.text for u in utterances]
    seconds = sum(len(u.audio) for u in utterances) / int(hparams["sample_rate"])
    decoding = "greedy CTC" if args.ctc_only else "joint CTC/attention"
    print(f"{len(utterances)} utterances, {seconds / 60:.1f} min, {decoding}")
    print("| encoder | WER (%) | x offline | decoding time (s) |")
    print("|:---|---:|---:|---:|")
    frame_ms = encoder_frame_ms(hparams)
    results = {}
    for chunk in (None, *args.chunks):
        start = time.perf_counter()
        hyps = decode(hparams, utterances, chunk, args.ctc_only, args.batch_size)
        spent = time.perf_counter() - start
        name = (
            "offline"
            if chunk is None
            else f"chunks of {chunk} ({chunk * frame_ms:.0f} ms)"
        )
        wer = word_errors(refs, hyps)["wer"]
        results[name] = {"wer": wer, "seconds": round(spent, 1), "hyps": hyps}
        ratio = wer / max(results["offline"]["wer"], 1e-9)
        print(f"| {name} | {wer:.2f} | {ratio:.2f} | {spent:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return results


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Compute and memory of a long stream through the streaming encoder.

Audio is fed to :class:`hyperconformer.StreamingEncoder` in pieces of
``--piece-ms`` (default 160 ms, as from a microphone) for ``--minutes``; the
model is ``hyperconformer_8M_streaming.yaml``'s (sizes read from the yaml,
freshly initialised: compute and memory do not depend on the weights), or an
exported model folder with ``--model``. Global normalisation statistics of a
fresh model come from the first minute. The audio is noise shaped like speech
(bursts and pauses); its content does not change compute or memory.

At each reported minute: the real-time factor so far (process CPU time or
wall time per second of audio, ``--clock``), the resident memory of the
process (``VmRSS``) and the bytes of the stream's state.

``--training`` measures instead what chunked encoding costs in training:
front-end and encoder forward and backward on a batch of 4 utterances of
15 s (random features), offline and in chunks of 32, 16 and 8 frames (the
median of 3 after a warm-up).

``--live`` measures the latency of live transcription
(:class:`hyperconformer.LiveTranscription`): utterances of 2, 5, 10 and 15 s
of the noise above (no pause as long as an endpoint), each followed by a
pause, fed in pieces; for each, the audio that has to arrive after the end of
its speech before its final comes (the endpoint's silence and the rest of
its chunk) and the compute of the push that gives the final (the chunk's
encoding and the segment's joint CTC/attention decoding). The fresh model's
folder gets a SentencePiece model of its 5000 pieces trained on random
letters, and its beam search, which never meets an end-of-sentence with
random weights, runs as many steps as a trained model emits tokens
(``--cap`` per 30 s, 100 by default).

Usage::

    python tools/streaming_benchmark.py                      # 60 min, 1 thread
    python tools/streaming_benchmark.py --minutes 5 --threads 2 --clock wall
    python tools/streaming_benchmark.py --training
    python tools/streaming_benchmark.py --live --beam 10
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from measurement import HPARAMS_DIR, load_hparams, rss_mb

from hyperconformer import LiveTranscription, StreamingEncoder

SAMPLE_RATE = 16000


def speechlike(seconds: float, generator: torch.Generator) -> torch.Tensor:
    """(1, samples) noise in 0.2-2 s bursts separated by 0.1-0.6 s pauses."""
    pieces, total = [], int(seconds * SAMPLE_RATE)
    while sum(p.numel() for p in pieces) < total:
        burst = int(SAMPLE_RATE * (0.2 + 1.8 * torch.rand(1, generator=generator)))
        pause = int(SAMPLE_RATE * (0.1 + 0.5 * torch.rand(1, generator=generator)))
        pieces.append(0.1 * torch.randn(burst, generator=generator))
        pieces.append(torch.zeros(pause))
    return torch.cat(pieces)[:total][None]


def build(args: argparse.Namespace) -> tuple[dict, torch.Tensor]:
    """The model's modules and the first minute of audio."""
    generator = torch.Generator().manual_seed(0)
    first_minute = speechlike(60, generator)
    if args.model:
        from hyperconformer.folder import load_model_folder

        hp = load_model_folder(args.model)
        return {**hp, "normalize": hp["normalizer"]}, first_minute
    hp = load_hparams(HPARAMS_DIR / "hyperconformer_8M_streaming.yaml")
    norm = hp["normalize"]
    norm(hp["compute_features"](first_minute), torch.ones(1))
    return hp, first_minute


def training_cost(timer) -> None:
    """Forward + backward time of chunked against offline encoding."""
    from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

    hp = load_hparams(HPARAMS_DIR / "hyperconformer_8M_streaming.yaml")
    cnn, model = hp["CNN"].train(), hp["Transformer"].train()
    feats = torch.randn(4, 1500, 80, generator=torch.Generator().manual_seed(0))
    lens = torch.tensor([1.0, 0.9, 0.8, 0.7])
    print("| encoding | forward + backward (s) |")
    print("|:---|---:|")
    for chunk in (None, 32, 16, 8):
        config = None if chunk is None else DynChunkTrainConfig(chunk)
        times = []
        for _ in range(4):
            start = timer()
            model.encode(cnn(feats), lens, 0, config).square().mean().backward()
            times.append(timer() - start)
        name = "offline" if chunk is None else f"chunks of {chunk}"
        print(f"| {name} | {sorted(times[1:])[1]:.3f} |")


def random_folder(out: Path, seed: int = 0) -> Path:
    """The streaming yaml's model, freshly initialised, exported as a model
    folder with a real SentencePiece model of its 5000 pieces (trained on
    random letters: the pieces do not change the compute)."""
    import random

    import sentencepiece as spm

    from hyperconformer.export import export_model_folder

    torch.manual_seed(seed)
    yaml = HPARAMS_DIR / "hyperconformer_8M_streaming.yaml"
    hp = load_hparams(yaml)
    rng = random.Random(seed)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(20000)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=(" ".join(rng.choices(words, k=12)) for _ in range(20000)),
        model_prefix=str(out / "tokenizer"),
        vocab_size=hp["output_neurons"],
        model_type="unigram",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    norm = hp["normalize"]
    norm(hp["compute_features"](speechlike(60, torch.Generator())), torch.ones(1))
    return export_model_folder(
        out / "model",
        yaml,
        hp["model"],
        norm,
        out / "tokenizer.model",
        {"data_folder": str(out), "output_folder": str(out)},
    )


def utterance(seconds: float, generator: torch.Generator) -> torch.Tensor:
    """(samples,) speech-shaped noise without a pause as long as an endpoint:
    0.2-2 s bursts separated by 0.1-0.3 s of silence."""
    pieces, total = [], int(seconds * SAMPLE_RATE)
    while sum(p.numel() for p in pieces) < total:
        burst = int(SAMPLE_RATE * (0.2 + 1.8 * torch.rand(1, generator=generator)))
        gap = int(SAMPLE_RATE * (0.1 + 0.2 * torch.rand(1, generator=generator)))
        pieces += [0.1 * torch.randn(burst, generator=generator), torch.zeros(gap)]
    speech = torch.cat(pieces)[:total]
    speech[-int(0.3 * SAMPLE_RATE) :] = 0.1 * torch.randn(int(0.3 * SAMPLE_RATE))
    return speech  # ends with speech


def live_latency(args: argparse.Namespace, timer) -> None:
    """Latency of final results: from the end of a segment's speech to its
    final, on utterances of several lengths each followed by a pause."""
    import tempfile

    from hyperconformer import Transcriber

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.model) if args.model else random_folder(Path(tmp))
        asr = Transcriber.from_pretrained(folder, beam_size=args.beam)
    if not args.model:  # random weights never stop: as many steps as a model
        asr.decoder.max_decode_ratio = args.cap / 30 / 25  # emits (25 frames/s)
    generator = torch.Generator().manual_seed(2)
    piece = SAMPLE_RATE * args.piece_ms // 1000
    print(
        f"chunk {args.chunk} frames ({args.chunk * 40} ms), pieces of "
        f"{args.piece_ms} ms, beam {asr.decoder.beam_size}, endpoint after "
        f"{args.endpoint:g} s of silence, {args.threads} thread(s), {args.clock} clock"
    )
    print("| speech (s) | waiting for audio (s) | compute (s) | latency (s) |")
    print("|---:|---:|---:|---:|")
    live = LiveTranscription(asr, args.chunk, endpoint_seconds=args.endpoint)
    heard, chunk_compute = 0, []
    with torch.inference_mode():
        for seconds in [s for s in (2, 5, 10, 15) for _ in range(args.repeats)]:
            speech = utterance(seconds, generator)
            audio = torch.cat((speech, torch.zeros(2 * SAMPLE_RATE)))
            speech_end = (heard + speech.numel()) / SAMPLE_RATE
            final = None
            for i in range(0, audio.numel(), piece):
                encoded = live.encoder.context.frames
                start = timer()
                events = live.push(audio[i : i + piece])
                spent = timer() - start
                heard += audio[i : i + piece].numel()
                if any(e.kind == "final" for e in events) and final is None:
                    final = (heard / SAMPLE_RATE - speech_end, spent)
                elif live.encoder.context.frames > encoded:
                    chunk_compute.append(spent)  # a chunk and its partial
            if final is None:
                raise SystemExit(f"no final after {seconds} s of speech and a pause")
            print(
                f"| {seconds} | {final[0]:.2f} | {final[1]:.3f} | "
                f"{final[0] + final[1]:.2f} |"
            )
    chunk_compute.sort()
    print(
        f"pieces that complete a chunk (its encoding, CTC and partial): compute "
        f"median {chunk_compute[len(chunk_compute) // 2]:.3f} s, max "
        f"{chunk_compute[-1]:.3f} s ({len(chunk_compute)} pieces)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--chunk", type=int, default=16, help="encoder frames")
    parser.add_argument("--piece-ms", type=int, default=160)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--model", help="an exported model folder")
    parser.add_argument("--training", action="store_true")
    parser.add_argument("--live", action="store_true", help="final latency")
    parser.add_argument("--beam", type=int, default=None, help="--live: beam size")
    parser.add_argument("--endpoint", type=float, default=0.5, help="--live: s")
    parser.add_argument("--repeats", type=int, default=3, help="--live")
    parser.add_argument("--cap", type=int, default=100, help="--live: tokens/30 s")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timer = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.training:
        training_cost(timer)
        return
    if args.live:
        live_latency(args, timer)
        return
    hp, first_minute = build(args)
    modules = [hp[k].eval() for k in ("compute_features", "normalize", "CNN")]
    model = hp["Transformer"].eval()
    stream = StreamingEncoder(*modules, model, args.chunk)
    piece = SAMPLE_RATE * args.piece_ms // 1000
    generator = torch.Generator().manual_seed(1)
    report = {1, 5, 10, 20, 30, 40, 50, 60} | {math.ceil(args.minutes)}
    print(
        f"chunk {args.chunk} frames ({args.chunk * 40} ms), pieces of "
        f"{args.piece_ms} ms, {args.threads} thread(s), {args.clock} clock"
    )
    print("| minute | RTF so far | RSS (MiB) | stream state (KiB) |")
    print("|---:|---:|---:|---:|")
    spent, frames = 0.0, 0
    with torch.inference_mode():
        for minute in range(1, math.ceil(args.minutes) + 1):
            audio = first_minute if minute == 1 else speechlike(60, generator)
            start = timer()
            for i in range(0, audio.size(1), piece):
                frames += stream.push(audio[:, i : i + piece]).size(1)
            spent += timer() - start
            if minute in report:
                print(
                    f"| {minute} | {spent / (60 * minute):.4f} | {rss_mb():.1f} | "
                    f"{stream.state_bytes() / 1024:.1f} |"
                )
        frames += stream.finish().size(1)
    print(f"{frames} encoder frames in {spent:.1f} s ({args.clock})")


if __name__ == "__main__":
    main()

"""Command line: transcribe audio files with an exported model folder.

Example::

    hyperconformer-transcribe --model results/hyperconformer_8M/7775/model \\
        recordings/ talk.mp3 --output json > transcripts.json

Inputs are audio files (anything soundfile or librosa reads, any rate and
channel count) or folders (searched recursively). Problems with one input
(missing, not audio, empty, too short) are reported on stderr, one line each,
and the other inputs are still transcribed; the exit status is then 1.

Output formats (stdout):

``text``
    The transcript alone for a single input file, else ``FILE<TAB>TRANSCRIPT``
    lines.
``json``
    A list of objects with ``file``, ``transcript``, ``duration`` (seconds),
    ``decoding_time`` (seconds), ``error`` (null unless it failed) and
    ``words``: ``{"word", "start", "end"}`` objects, times in seconds from the
    start of the file (from the CTC alignment of the transcript, kept out of
    the pauses of the audio).
``csv``
    The same fields but the words, with a header row.
``srt``, ``vtt``
    Subtitles (SubRip, WebVTT) of the timed words: to stdout for one input
    file, else one ``<name>.srt``/``.vtt`` per file in ``--output-dir``.

Live (``--stream``): one input, an audio file played at real-time pace
(``--stream-speed`` times faster; 0: no waiting) or ``-``, raw 16 kHz 16-bit
little-endian mono PCM read from standard input as it arrives, transcribed
with :mod:`hyperconformer.live`. Each partial and final result is printed as
it comes: ``text`` rewrites a partial line on a terminal and ends it with the
final (``[start-end] text``), and elsewhere prints one
``kind<TAB>start<TAB>end<TAB>text`` line per event; ``json`` prints one
object per event and line: ``event`` ("partial" or "final"), ``start``,
``end``, ``text`` and, for finals, ``words``. A model folder trained offline
needs ``--stream-chunk``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, TextIO

from hyperconformer.audio import TranscriptionError, collect_audio_files, load_audio
from hyperconformer.folder import ModelFolderError

__all__ = ["build_parser", "main"]

_FIELDS = ("file", "transcript", "duration", "decoding_time", "error")


def build_parser() -> argparse.ArgumentParser:
    """The ``hyperconformer-transcribe`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="hyperconformer-transcribe",
        description="Transcribe audio files with a HyperConformer model folder.",
    )
    parser.add_argument("inputs", nargs="+", help="audio files or folders")
    parser.add_argument(
        "--model", required=True, help="exported model folder (hyperparams.yaml, ...)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--beam-size",
        type=int,
        default=None,
        help="beam size (default: the model's); with --ctc-only, >1 selects "
        "CTC prefix beam search instead of greedy decoding",
    )
    parser.add_argument(
        "--ctc-weight",
        type=float,
        default=None,
        help="CTC weight of joint attention/CTC decoding (default: the model's)",
    )
    parser.add_argument(
        "--ctc-only",
        action="store_true",
        help="decode with the CTC head alone (fast)",
    )
    parser.add_argument(
        "--ctc-scoring",
        choices=("full", "partial"),
        default="full",
        help="joint decoding: CTC-score every token (full, the search of "
        "SpeechBrain's EncoderDecoderASR) or only the best attention candidates "
        "of each hypothesis (partial, SpeechBrain's partial scorers)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="files (or long-file windows) per batch",
    )
    parser.add_argument(
        "--output",
        choices=("text", "json", "csv", "srt", "vtt"),
        default="text",
        help="format",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="srt/vtt: write one subtitle file per input file here",
    )
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=20.0,
        help="longer files are decoded in pieces of at most this length; "
        "0 decodes every file in one pass (default: 20)",
    )
    parser.add_argument(
        "--long-form",
        choices=("pauses", "windows"),
        default="pauses",
        help="how longer files are cut: in their pauses, each piece decoded "
        "like an utterance, or in overlapping windows stitched by time "
        "(default: pauses)",
    )
    parser.add_argument(
        "--overlap-seconds",
        type=float,
        default=5.0,
        help="least overlap between windows, with --long-form windows (default: 5)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar on stderr"
    )
    live = parser.add_argument_group("live transcription")
    live.add_argument(
        "--stream",
        action="store_true",
        help="transcribe one input as it is played: an audio file at real-time "
        "pace, or - for raw 16 kHz 16-bit mono PCM on standard input; prints "
        "partial and final results (text, or json: one event per line)",
    )
    live.add_argument(
        "--stream-speed",
        type=float,
        default=1.0,
        help="play a file this many times faster than real time; 0: as fast "
        "as it is transcribed (default: 1)",
    )
    live.add_argument(
        "--stream-chunk",
        type=int,
        default=None,
        help="encoder frames per chunk (default: the model's streaming_chunk_size)",
    )
    live.add_argument(
        "--endpoint-seconds",
        type=float,
        default=0.5,
        help="a pause this long ends a segment and gives its final (default: 0.5)",
    )
    return parser


def _file_pieces(wav, sample_rate: int, speed: float, seconds: float = 0.1) -> Iterator:
    """(samples,) audio in pieces of ``seconds``, each when it would have
    been heard at ``speed`` times real time (0: at once)."""
    start, step = time.monotonic(), int(seconds * sample_rate)
    for first in range(0, wav.numel(), step):
        piece = wav[first : first + step]
        if speed > 0:
            due = start + (first + piece.numel()) / sample_rate / speed
            time.sleep(max(0.0, due - time.monotonic()))
        yield piece


def _pcm_pieces(stream: BinaryIO, size: int = 3200) -> Iterator:
    """Raw 16-bit little-endian mono PCM as (samples,) float pieces, as
    they arrive."""
    import numpy as np
    import torch

    rest = b""
    while data := stream.read1(size) if hasattr(stream, "read1") else stream.read(size):
        data = rest + data
        even = len(data) - len(data) % 2
        rest = data[even:]
        samples = np.frombuffer(data[:even], dtype="<i2").astype(np.float32)
        yield torch.from_numpy(samples / 32768.0)
    if rest:
        raise TranscriptionError("-: the 16-bit PCM ended on half a sample")


def _show(event, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        row = {
            "event": event.kind,
            "start": round(event.start, 3),
            "end": round(event.end, 3),
            "text": event.text,
        }
        if event.words is not None:
            row["words"] = [
                {"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)}
                for w in event.words
            ]
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif out.isatty():  # a partial rewrites the line, a final ends it
        if event.kind == "partial":
            width = shutil.get_terminal_size().columns - 1
            out.write("\r\033[K" + event.text[-width:])
        else:
            span = f"[{event.start:.2f}-{event.end:.2f}]"
            out.write(f"\r\033[K{span} {event.text}\n")
    else:
        out.write(f"{event.kind}\t{event.start:.2f}\t{event.end:.2f}\t{event.text}\n")
    out.flush()


def _stream(args: argparse.Namespace, asr) -> int:
    """``--stream``: one input, live; the exit status."""
    chunk = args.stream_chunk
    if not chunk and not asr.hparams.get("streaming_chunk_size"):
        print(
            f"error: {args.model}: trained offline (no streaming_chunk_size); "
            "give --stream-chunk to stream it anyway",
            file=sys.stderr,
        )
        return 1
    source = args.inputs[0]
    try:
        if source == "-":
            pieces = _pcm_pieces(sys.stdin.buffer)
        else:
            wav = load_audio(source, asr.sample_rate)
            pieces = _file_pieces(wav, asr.sample_rate, args.stream_speed)
        events = asr.stream(pieces, chunk, endpoint_seconds=args.endpoint_seconds)
        for event in events:
            _show(event, args.output, sys.stdout)
    except (TranscriptionError, ModelFolderError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the way to stop a live input
        return 130
    return 0


def _subtitles(result, fmt: str) -> str:
    from hyperconformer.subtitles import to_srt, to_vtt

    return (to_srt if fmt == "srt" else to_vtt)(result.words or [])


def _write(results: list[dict], fmt: str, single: bool, out: TextIO) -> None:
    if fmt == "json":
        json.dump(results, out, indent=2, ensure_ascii=False)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(results)
    else:
        for row in results:
            if row["error"] is None:
                out.write(
                    row["transcript"] + "\n"
                    if single
                    else f"{row['file']}\t{row['transcript']}\n"
                )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    0 when every input was transcribed, 1 when any input or the model failed,
    2 for a usage error.
    """
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    subtitles = args.output in ("srt", "vtt")
    if args.stream:
        problem = None
        if len(args.inputs) != 1:
            problem = "--stream transcribes one input (a file, or - for stdin)"
        elif args.output not in ("text", "json"):
            problem = f"--stream prints text or json, not {args.output}"
        elif args.stream_speed < 0:
            problem = "--stream-speed must be 0 (no waiting) or more"
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    # Library chatter (deprecation notes, SpeechBrain's logging) is not ours
    # to show; errors are reported below.
    warnings.filterwarnings("ignore")
    logging.getLogger("speechbrain").setLevel(logging.ERROR)

    from hyperconformer.inference import Transcriber

    failed = False
    files: list[Path] = []
    early: list[dict] = []
    for item in [] if args.stream else args.inputs:
        try:
            files.extend(collect_audio_files([item]))
        except TranscriptionError as err:
            print(f"error: {err}", file=sys.stderr)
            early.append(dict.fromkeys(_FIELDS) | {"file": item, "error": str(err)})
            failed = True
    try:
        asr = Transcriber.from_pretrained(
            args.model,
            device=args.device,
            beam_size=args.beam_size,
            ctc_weight=args.ctc_weight,
            ctc_only=args.ctc_only,
            chunk_seconds=args.chunk_seconds or None,
            overlap_seconds=args.overlap_seconds,
            long_form=args.long_form,
            batch_size=args.batch_size,
            ctc_scoring=args.ctc_scoring,
        )
    except (ModelFolderError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.stream:
        return _stream(args, asr)

    results = list(early)
    single = (
        len(args.inputs) == 1 and len(files) == 1 and not Path(args.inputs[0]).is_dir()
    )
    if subtitles and not single and args.output_dir is None:
        print(
            f"error: --output {args.output} with several files needs --output-dir",
            file=sys.stderr,
        )
        return 2
    progress = None if len(files) > 1 and not args.no_progress else False
    timed = args.output in ("json", "srt", "vtt")
    for result in asr.transcribe_files(files, progress=progress, words=timed):
        if result.error is not None:
            print(f"error: {result.error}", file=sys.stderr)
            failed = True
        row = {name: getattr(result, name) for name in _FIELDS}
        for key in ("duration", "decoding_time"):
            if row[key] is not None:
                row[key] = round(row[key], 3)
        if args.output == "json":
            row["words"] = [
                {"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)}
                for w in result.words or []
            ]
        results.append(row)
        if subtitles and result.error is None:
            text = _subtitles(result, args.output)
            if args.output_dir is None:
                sys.stdout.write(text)
            else:
                args.output_dir.mkdir(parents=True, exist_ok=True)
                name = Path(result.file).with_suffix("." + args.output).name
                (args.output_dir / name).write_text(text, encoding="utf-8")
        if args.output == "text":
            # Stream text output so long runs show results as they come.
            _write([row], "text", single, sys.stdout)
            sys.stdout.flush()
    if args.output in ("json", "csv"):
        _write(results, args.output, single, sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

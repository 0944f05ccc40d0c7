"""Live transcription: a stream of the tiny streaming model (trained by
tests/conftest.py) gives partial and final results per segment, the same
ones as a chunked pass over the whole recording, whatever the piece sizes,
in bounded memory; and ``hyperconformer-transcribe --stream``."""

import io
import json
import sys
import time
from pathlib import Path

import pytest
import soundfile
import torch
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

from hyperconformer import (
    CausalSilence,
    LiveTranscription,
    Transcriber,
    find_pauses,
    load_audio,
)
from hyperconformer.folder import ModelFolderError
from hyperconformer.search import best_path_tokens
from hyperconformer.transcribe import main

FRAME = 640  # samples per encoder frame


def corpus_files(tiny_corpus, count):
    return sorted((Path(tiny_corpus) / "LibriSpeech" / "test-clean").rglob("*.flac"))[
        :count
    ]


def recording(tiny_corpus, count: int) -> torch.Tensor:
    """``count`` test utterances, each followed by 1 s of digital silence."""
    wavs = [load_audio(f) for f in corpus_files(tiny_corpus, count)]
    return torch.cat([torch.cat((w, torch.zeros(16000))) for w in wavs])


def stream(asr, wav, piece, **kwargs):
    pieces = (wav[i : i + piece] for i in range(0, wav.numel(), piece))
    return list(asr.stream(pieces, **kwargs))


def frames_of(seconds: float) -> int:
    return round(seconds * 16000 / FRAME)


def test_causal_silence_finds_the_pauses_of_the_whole_recording(tiny_corpus):
    wav = recording(tiny_corpus, 6)  # about a minute
    silence = CausalSilence(16000)
    for i in range(0, wav.numel(), 999):
        silence.push(wav[i : i + 999])
    flags = silence.take(wav.numel() // 160) + [False]
    runs, start = [], None
    for i, silent in enumerate(flags):
        if silent and start is None:
            start = i
        elif not silent and start is not None:
            if i - start >= 30:
                runs.append((start / 100, i / 100))
            start = None
    pauses = [(a, b) for a, b in find_pauses(wav, 16000) if b - a >= 0.3]
    assert len(runs) == len(pauses) > 10
    for run, pause in zip(runs, pauses, strict=True):
        assert run == pytest.approx(pause, abs=0.02)


def test_finals_equal_chunked_decoding_of_their_segments(streaming_run, tiny_corpus):
    asr = Transcriber.from_pretrained(streaming_run / "model", beam_size=4)
    wav = recording(tiny_corpus, 2)
    events = stream(asr, wav, 2731)
    finals = [e for e in events if e.kind == "final"]
    assert len(finals) >= 3  # sentence pauses and the silences between files
    assert events[-1].kind == "final"
    # The reference: one chunked pass over the whole recording, each
    # segment's frames decoded as the offline Transcriber decodes them.
    hp = asr.hparams
    with torch.no_grad():
        feats = hp["normalizer"](hp["compute_features"](wav[None]), torch.ones(1))
        whole = hp["Transformer"].encode(
            hp["CNN"](feats), None, 0, DynChunkTrainConfig(16)
        )
        best = asr.ctc_lin(whole).argmax(-1)[0]
    previous_end = 0.0
    for event in events:
        first, last = frames_of(event.start), frames_of(event.end)
        assert previous_end <= event.start < event.end
        if event.kind == "partial":
            tokens, _ = best_path_tokens(best[first:last])
            assert event.text == asr.tokenizer.decode_ids(tokens)
            continue
        audio = wav[first * FRAME : last * FRAME]
        audio = torch.nn.functional.pad(audio, (0, (last - first) * FRAME - len(audio)))
        ref = asr._decode_encoded(
            whole[:, first:last], audio[None], torch.ones(1), True
        )
        assert event.text == ref[0].text and event.text
        for word, ref_word in zip(event.words, ref[0].words, strict=True):
            start, end = (t + event.start for t in (ref_word.start, ref_word.end))
            assert word.start == pytest.approx(min(start, event.end))
            assert word.end == pytest.approx(min(end, event.end))
            assert event.start <= word.start <= word.end <= event.end
        previous_end = event.end
    # The silence after the first file ends a segment within it.
    first_file = load_audio(corpus_files(tiny_corpus, 1)[0]).numel() / 16000
    assert any(first_file < e.end < first_file + 1.0 for e in finals)


def test_piece_sizes_do_not_change_the_events(streaming_run, tiny_corpus):
    asr = Transcriber.from_pretrained(streaming_run / "model", ctc_only=True)
    wav = recording(tiny_corpus, 2)
    runs = [stream(asr, wav, piece) for piece in (150, 2731, wav.numel())]
    assert sum(e.kind == "partial" for e in runs[0]) > 5
    assert runs[0] == runs[1]
    # One piece: no partials before the end, the same finals.
    assert [e for e in runs[0] if e.kind == "final"] == [
        e for e in runs[2] if e.kind == "final"
    ]


def test_memory_stays_bounded_over_many_segments(streaming_run, tiny_corpus):
    asr = Transcriber.from_pretrained(streaming_run / "model", ctc_only=True)
    live = LiveTranscription(asr, max_segment_seconds=8.0)
    piece = 8000
    # The encoder's state, and what the stream holds beyond it after a final
    # (the audio of at most a chunk, its look-ahead and a piece) and at most
    # (8 s of frames, best outputs and audio, and that audio ahead).
    d_model = asr.hparams["Transformer"].d_model
    ahead = (16 * FRAME + 1000 + piece) * 4
    segment = frames_of(8.0) * (d_model * 4 + 8) + 8.0 * 16000 * 4 + ahead
    wav = recording(tiny_corpus, 8)  # about 90 s
    # A minute of noise without a pause still ends segments every 8 s.
    noise = 0.1 * torch.randn(40 * 16000, generator=torch.Generator().manual_seed(0))
    sizes, after_final, ends = [], [], []
    for audio in (wav, noise):
        for i in range(0, audio.numel(), piece):
            finals = [e for e in live.push(audio[i : i + piece]) if e.kind == "final"]
            sizes.append(live.state_bytes())
            if finals:
                after_final.append(sizes[-1] - live.encoder.state_bytes())
                ends += [e.end for e in finals if audio is noise]
    assert len(after_final) > 10
    assert max(after_final) <= ahead
    assert max(sizes) <= live.encoder.state_bytes() + segment
    assert len(ends) >= 4
    assert {round(b - a, 2) for a, b in zip(ends, ends[1:], strict=False)} == {8.0}


def test_stream_errors(streaming_run, offline_model):
    asr = Transcriber.from_pretrained(offline_model, ctc_only=True)
    with pytest.raises(ModelFolderError, match="not trained for streaming"):
        asr.stream([])
    with pytest.raises(ValueError, match="streaming needs CausalFbank"):
        asr.stream([], chunk_size=16)
    asr = Transcriber.from_pretrained(streaming_run / "model", ctc_only=True)
    live = LiveTranscription(asr)
    with pytest.raises(ValueError, match=r"push expects \(samples,\) mono audio"):
        live.push(torch.zeros(2, 100))
    assert live.finish() == []  # nothing heard, nothing to say
    with pytest.raises(ValueError, match="this stream has ended"):
        live.push(torch.zeros(100))
    with pytest.raises(ValueError, match="endpoint_seconds must be positive"):
        LiveTranscription(asr, endpoint_seconds=0)


def run_cli(capsys, *args):
    status = main(["--model", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_streams_a_file_and_stdin_pcm(
    streaming_run, tiny_corpus, capsys, monkeypatch
):
    model = str(streaming_run / "model")
    path = corpus_files(tiny_corpus, 1)[0]
    expected = stream(
        Transcriber.from_pretrained(model, ctc_only=True), load_audio(path), 1600
    )
    common = ["--ctc-only", "--stream", "--output", "json"]
    status, out, err = run_cli(capsys, model, *common, str(path), "--stream-speed", "0")
    assert status == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["event"], e["text"]) for e in events] == [
        (e.kind, e.text) for e in expected
    ]
    finals = [e for e in events if e["event"] == "final"]
    assert finals[0]["words"] and "words" not in events[0]

    pcm, _ = soundfile.read(path, dtype="int16")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm.tobytes())))
    status, out, err = run_cli(capsys, model, *common, "-")
    assert status == 0, err
    assert [json.loads(line) for line in out.splitlines() if "final" in line] == finals

    # Text output, played 8x faster than real time.
    started = time.monotonic()
    status, out, _ = run_cli(
        capsys, model, "--ctc-only", "--stream", str(path), "--stream-speed", "8"
    )
    assert status == 0 and time.monotonic() - started >= len(pcm) / 16000 / 8
    lines = [line.split("\t") for line in out.splitlines()]
    assert [(k, text) for k, _, _, text in lines] == [
        (e.kind, e.text) for e in expected
    ]


def test_cli_stream_errors(
    streaming_run, offline_model, tiny_corpus, capsys, monkeypatch
):
    model = str(streaming_run / "model")
    path = str(corpus_files(tiny_corpus, 1)[0])
    for args, status, message in (
        ([str(offline_model), "--stream", path], 1, "give --stream-chunk"),
        (
            [str(offline_model), "--stream", path, "--stream-chunk", "16"],
            1,
            "CausalFbank",
        ),
        ([model, "--stream", path, path], 2, "--stream transcribes one input"),
        ([model, "--stream", path, "--output", "srt"], 2, "prints text or json"),
        ([model, "--stream", path, "--stream-speed", "-1"], 2, "--stream-speed"),
        ([model, "--stream", "missing.wav"], 1, "missing.wav"),
    ):
        got, out, err = run_cli(capsys, *args)
        assert got == status and message in err, err
        assert len(err.strip().splitlines()) == 1 and out == ""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\x00" * 3)))
    got, _, err = run_cli(capsys, model, "--ctc-only", "--stream", "-")
    assert got == 1 and "half a sample" in err

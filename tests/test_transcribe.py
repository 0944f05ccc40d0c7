"""Transcription: Python API, command line, SpeechBrain round trip, long
recordings, and refusal of bad or unsafe inputs.

The model folder is exported with random weights (and a SentencePiece model
trained on a few sentences), so transcripts are gibberish but deterministic:
the tests compare paths through the code, not accuracy.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional as AF
from conftest import train_sentencepiece

from hyperconformer import JointBeamSearcher, Transcriber
from hyperconformer.audio import load_audio
from hyperconformer.longform import Word, ctc_align, stitch_windows, window_starts
from hyperconformer.transcribe import main

SR = 16000
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "speech recognition with hyper mixing is linear in time",
    "a stitch in time saves nine",
    "she sells sea shells by the sea shore",
]

TRAINING_YAML = """
sample_rate: 16000
n_mels: 80
output_neurons: {vocab}
d_model: 32
test_beam_size: 3
ctc_weight_decode: 0.4
max_decode_ratio: 0.3
compute_features: !new:speechbrain.lobes.features.Fbank
    sample_rate: !ref <sample_rate>
    n_fft: 400
    n_mels: !ref <n_mels>
normalize: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
# The real front-end's sizes, so activations grow with input as they would.
CNN: !new:speechbrain.lobes.models.convolution.ConvolutionFrontEnd
    input_shape: [null, null, !ref <n_mels>]
    num_blocks: 2
    num_layers_per_block: 1
    out_channels: (64, 32)
    kernel_sizes: (3, 3)
    strides: (2, 2)
    residuals: (False, False)
Transformer: !new:hyperconformer.HyperConformerASR
    input_size: !ref <n_mels> // 4 * 32
    tgt_vocab: !ref <output_neurons>
    d_model: !ref <d_model>
    nhead: 4
    num_encoder_layers: 2
    num_decoder_layers: 1
    d_ffn: 64
    activation: !name:torch.nn.GELU
    normalize_before: True
    causal: False
ctc_lin: !new:speechbrain.nnet.linear.Linear
    input_size: !ref <d_model>
    n_neurons: !ref <output_neurons>
seq_lin: !new:speechbrain.nnet.linear.Linear
    input_size: !ref <d_model>
    n_neurons: !ref <output_neurons>
model: !new:torch.nn.ModuleList
    - [!ref <CNN>, !ref <Transformer>, !ref <seq_lin>, !ref <ctc_lin>]
"""


def train_tokenizer(path: Path, vocab_size: int = 40) -> Path:
    train_sentencepiece(SENTENCES * 5, vocab_size, path)
    return path


def speechlike(seconds: float, rate: int = SR, seed: int = 0) -> np.ndarray:
    """Band-limited (< 4 kHz), amplitude-modulated tones plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wav = np.zeros_like(t)
    for f in rng.uniform(100, 3500, size=6):
        wav += np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
    wav *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    wav += 0.01 * rng.standard_normal(t.size)
    return (0.1 * wav).astype(np.float32)


def export_test_model(tmp: Path) -> Path:
    """A model folder with random weights, exported from ``TRAINING_YAML``."""
    from hyperpyyaml import load_hyperpyyaml

    from hyperconformer.export import export_model_folder

    tokenizer = train_tokenizer(tmp / "tokenizer.model")
    yaml_file = tmp / "train.yaml"
    yaml_file.write_text(TRAINING_YAML.format(vocab=40))
    torch.manual_seed(0)
    hparams = load_hyperpyyaml(yaml_file.read_text())
    normalizer = hparams["normalize"]
    feats = hparams["compute_features"](torch.from_numpy(speechlike(2.0))[None])
    normalizer(feats, torch.ones(1), epoch=0)  # global statistics
    return export_model_folder(
        tmp / "exported", yaml_file, hparams["model"], normalizer, tokenizer
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return export_test_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("audio")
    files = {}
    for name, seconds, seed in (("a", 2.0, 1), ("b", 1.3, 2), ("c", 2.6, 3)):
        files[name] = tmp / f"{name}.wav"
        soundfile.write(files[name], speechlike(seconds, seed=seed), SR)
    # The same signal as a.wav at 44.1 kHz in stereo, as WAV and OGG.
    wav = torch.from_numpy(speechlike(2.0, seed=1))
    stereo = AF.resample(wav, SR, 44100).numpy()
    stereo = np.stack([stereo, stereo], axis=1)
    files["a44_stereo"] = tmp / "a44_stereo.wav"
    soundfile.write(files["a44_stereo"], stereo, 44100, subtype="FLOAT")
    files["a44_ogg"] = tmp / "a44.ogg"
    soundfile.write(files["a44_ogg"], stereo, 44100)
    files["b_mp3"] = tmp / "b.mp3"
    soundfile.write(files["b_mp3"], speechlike(1.3, seed=2), SR)
    files["c_flac"] = tmp / "c.flac"
    soundfile.write(files["c_flac"], speechlike(2.6, seed=3), SR)
    # Bad inputs.
    files["missing"] = tmp / "missing.wav"
    files["not_audio"] = tmp / "notes.wav"
    files["not_audio"].write_text("these are not samples\n" * 50)
    files["empty"] = tmp / "empty.wav"
    files["empty"].write_bytes(b"")
    files["too_short"] = tmp / "short.wav"
    soundfile.write(files["too_short"], speechlike(0.05), SR)
    return files


@pytest.fixture(scope="module")
def asr(model_dir) -> Transcriber:
    return Transcriber.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def ctc_asr(model_dir) -> Transcriber:
    return Transcriber.from_pretrained(model_dir, ctc_only=True)


# ---------------------------------------------------------------- Python API


def test_transcribe_file_and_batch(asr, ctc_asr, audio):
    text = asr.transcribe_file(audio["a"])
    assert isinstance(text, str) and text.strip()
    # A padded batch decodes each row about as it decodes alone: the encoder
    # is padding-exact, but the fbank and CNN front-end see zeros instead of
    # their edge padding in the last frames, which can flip near-tied tokens
    # of a random model.
    wavs = [load_audio(audio[k]) for k in ("a", "b", "c")]
    width = max(w.numel() for w in wavs)
    batch = torch.stack(
        [torch.nn.functional.pad(w, (0, width - w.numel())) for w in wavs]
    )
    lens = torch.tensor([w.numel() / width for w in wavs])
    alone = [ctc_asr.transcribe_file(audio[k]) for k in ("a", "b", "c")]
    together = ctc_asr.transcribe_batch(batch, lens)
    for mine, reference in zip(together, alone, strict=True):
        assert difflib.SequenceMatcher(None, mine, reference).ratio() > 0.8
    assert ctc_asr.transcribe_batch(batch[2:], lens[2:] / lens[2]) == alone[2:]
    texts = asr.transcribe_batch(batch[:2, : wavs[0].numel()], lens[:2] / lens[0])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_same_transcript_as_speechbrain_encoder_decoder_asr(
    asr, model_dir, audio, tmp_path
):
    from speechbrain.inference.ASR import EncoderDecoderASR

    stock = EncoderDecoderASR.from_hparams(source=str(model_dir), savedir=str(tmp_path))
    assert stock.transcribe_file(str(audio["c"])) == asr.transcribe_file(audio["c"])


def test_decoding_options(audio, asr):
    # Transcribers sharing the loaded modules, with other decoding settings.
    short = audio["b"]
    prefix = Transcriber(asr.hparams, ctc_only=True, beam_size=4)
    assert isinstance(prefix.transcribe_file(short), str)

    no_ctc = Transcriber(asr.hparams, beam_size=2, ctc_weight=0.0)
    assert no_ctc.decoder.beam_size == 2 and no_ctc.decoder.ctc_weight == 0.0
    assert isinstance(no_ctc.transcribe_file(short), str)
    ctc_heavy = Transcriber(asr.hparams, ctc_weight=0.9)
    assert ctc_heavy.decoder.ctc_weight == 0.9
    assert ctc_heavy.decoder.beam_size == asr.decoder.beam_size  # the folder's
    with pytest.raises(ValueError):
        Transcriber(asr.hparams, ctc_weight=1.5)

    # CTC scoring: the folder's (full) by default, or SpeechBrain's partial
    # scoring of pre-selected candidates.
    assert asr.decoder is asr.hparams["decoder"]
    assert isinstance(asr.decoder, JointBeamSearcher)
    assert "ctc" in asr.decoder.scorer.full_scorers
    fast = Transcriber(asr.hparams, ctc_scoring="partial")
    assert "ctc" in fast.decoder.scorer.partial_scorers
    assert fast.decoder.scorer.weights["ctc"] == asr.decoder.scorer.weights["ctc"]
    assert isinstance(fast.transcribe_file(short), str)
    with pytest.raises(ValueError):
        Transcriber(asr.hparams, ctc_scoring="sometimes")


def test_resampling_and_downmixing(ctc_asr, audio):
    original = load_audio(audio["a"])
    for key in ("a44_stereo", "a44_ogg"):
        wav = load_audio(audio[key])
        assert wav.dtype == torch.float32 and wav.dim() == 1
        assert abs(wav.numel() - original.numel()) <= 1
    # Stored losslessly at 44.1 kHz: back at 16 kHz up to resampling error
    # (larger at the edges, where the resampling filters see zeros).
    wav = load_audio(audio["a44_stereo"])[: original.numel()]
    inner = slice(SR // 10, wav.numel() - SR // 10)
    assert (wav[inner] - original[inner]).abs().max() < 5e-3
    # A random model's near-tied tokens flip under resampling error, so the
    # transcripts are only checked to exist.
    for key in ("a44_stereo", "a44_ogg"):
        assert ctc_asr.transcribe_file(audio[key]).strip()


def test_channels_are_averaged(tmp_path):
    left = speechlike(0.5, seed=7)
    path = tmp_path / "left_only.wav"
    soundfile.write(path, np.stack([left, np.zeros_like(left)], axis=1), SR, "FLOAT")
    assert torch.allclose(load_audio(path), torch.from_numpy(left) / 2)


# ---------------------------------------------------------------- command line


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_output_formats(capsys, model_dir, audio):
    files = [audio["a"], audio["b_mp3"], audio["c_flac"]]
    base = ["--model", model_dir, "--ctc-only", "--no-progress", "--batch-size", 2]

    code, out, err = run_cli(capsys, *base, audio["a"])
    assert code == 0 and err == ""
    single = out.strip()
    assert "\t" not in single and single

    code, out, _ = run_cli(capsys, *base, *files)
    lines = out.strip().split("\n")
    assert code == 0 and [line.split("\t")[0] for line in lines] == list(
        map(str, files)
    )
    assert lines[0].split("\t")[1] == single

    code, out, _ = run_cli(capsys, *base, "--output", "json", *files)
    rows = json.loads(out)
    assert code == 0 and [r["file"] for r in rows] == list(map(str, files))
    assert rows[0]["transcript"] == single
    for row in rows:
        assert set(row) == {
            *("file", "transcript", "duration", "decoding_time", "error", "words")
        }
        assert row["error"] is None and row["decoding_time"] > 0
        assert [w["word"] for w in row["words"]] == row["transcript"].split()
        starts = [w["start"] for w in row["words"]]
        assert starts == sorted(starts) and all(
            0 <= w["start"] < w["end"] <= row["duration"] + 0.1 for w in row["words"]
        )
    assert [r["duration"] for r in rows] == pytest.approx([2.0, 1.3, 2.6], abs=0.01)

    code, out, _ = run_cli(capsys, *base, "--output", "csv", *files)
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["file"] for r in table] == list(map(str, files))
    assert table[0]["transcript"] == single and table[2]["error"] == ""


def test_cli_subtitles(capsys, model_dir, audio, tmp_path):
    import re

    base = ["--model", model_dir, "--ctc-only", "--no-progress"]
    _, transcript, _ = run_cli(capsys, *base, audio["c"])
    code, out, _ = run_cli(capsys, *base, "--output", "srt", audio["c"])
    assert code == 0
    clock = r"\d\d:\d\d:\d\d[,.]\d\d\d"
    blocks = out.strip().split("\n\n")
    for number, block in enumerate(blocks, start=1):
        index, times, text = block.split("\n")
        assert index == str(number) and text
        assert re.fullmatch(f"{clock} --> {clock}", times) and "," in times
    texts = [block.split("\n")[2] for block in blocks]
    assert " ".join(texts) == transcript.strip()

    code, out, _ = run_cli(capsys, *base, "--output", "vtt", audio["c"])
    assert code == 0 and out.startswith("WEBVTT\n\n")
    cues = out.split("\n\n")[1:]
    assert all(re.fullmatch(f"{clock} --> {clock}", c.split("\n")[0]) for c in cues)
    assert " ".join(c.split("\n")[1] for c in cues).strip() == transcript.strip()

    code, _, err = run_cli(capsys, *base, "--output", "vtt", audio["a"], audio["c"])
    assert code == 2 and "--output-dir" in err
    subs = tmp_path / "subs"
    code, out, _ = run_cli(
        capsys, *base, "--output", "srt", "--output-dir", subs, audio["a"], audio["c"]
    )
    assert code == 0 and out == ""
    assert sorted(p.name for p in subs.iterdir()) == ["a.srt", "c.srt"]


def test_cli_folder_input_and_attention_decoding(
    capsys, model_dir, audio, asr, tmp_path
):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(audio["b"], folder / "x.wav")
    shutil.copy(audio["b_mp3"], folder / "sub" / "y.mp3")
    (folder / "notes.txt").write_text("not picked up")
    # One file per batch: beam search on a padded batch may break ties
    # differently from the single-file call it is compared with.
    code, out, err = run_cli(capsys, "--model", model_dir, "--batch-size", 1, folder)
    assert code == 0, err
    rows = dict(line.split("\t") for line in out.strip().split("\n"))
    assert set(rows) == {str(folder / "x.wav"), str(folder / "sub" / "y.mp3")}
    assert rows[str(folder / "x.wav")] == asr.transcribe_file(audio["b"])


def test_cli_bad_inputs_are_reported_and_skipped(capsys, model_dir, audio):
    bad = ["missing", "not_audio", "empty", "too_short"]
    inputs = [audio["a"], *(audio[k] for k in bad), audio["c"]]
    code, out, err = run_cli(
        capsys, "--model", model_dir, "--ctc-only", "--output", "json", *inputs
    )
    assert code == 1
    assert "Traceback" not in err
    errors = err.strip().split("\n")
    assert len(errors) == len(bad)
    for key, line in zip(bad, errors, strict=True):
        assert line.startswith(f"error: {audio[key]}: ")
    assert "no such file" in errors[0]
    assert "not a readable audio file" in errors[1]
    assert "empty" in errors[2]
    assert "too short" in errors[3]
    rows = json.loads(out)
    assert [r["file"] for r in rows] == list(map(str, inputs))
    assert rows[0]["transcript"] and rows[-1]["transcript"]
    assert all(rows[i]["error"] and rows[i]["transcript"] is None for i in (1, 2, 3, 4))


@pytest.mark.parametrize(
    "part", ["hyperparams.yaml", "model.ckpt", "tokenizer.ckpt", "normalizer.ckpt"]
)
def test_cli_model_folder_with_missing_part(capsys, model_dir, audio, tmp_path, part):
    broken = shutil.copytree(model_dir, tmp_path / "model")
    (broken / part).unlink()
    code, out, err = run_cli(capsys, "--model", broken, audio["a"])
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: ") and str(broken / part) in err


def test_cli_missing_model_folder_and_no_cuda(capsys, audio, model_dir, tmp_path):
    code, _, err = run_cli(capsys, "--model", tmp_path / "nothing", audio["a"])
    assert code == 1 and "model folder not found" in err and err.count("\n") == 1
    if not torch.cuda.is_available():
        code, _, err = run_cli(
            capsys, "--model", model_dir, "--device", "cuda", audio["a"]
        )
        assert code == 1 and "CUDA is not available" in err


def test_cli_subprocess_exit_status_and_no_traceback(model_dir, audio):
    proc = subprocess.run(
        [sys.executable, "-m", "hyperconformer.transcribe", "--model", str(model_dir)]
        + ["--ctc-only", str(audio["a"]), str(audio["not_audio"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().split("\n") == [
        line for line in proc.stderr.strip().split("\n") if line.startswith("error: ")
    ], proc.stderr
    assert str(audio["a"]) in proc.stdout and str(audio["not_audio"]) in proc.stderr


# ---------------------------------------------------------------- long recordings


def test_window_starts_cover_the_input():
    for n, window, overlap in ((100, 30, 5), (61, 30, 5), (1000, 300, 50)):
        starts = window_starts(n, window, overlap)
        assert starts[0] == 0 and starts[-1] + window == n
        assert all(
            b - a <= window - overlap
            for a, b in zip(starts[:-1], starts[1:], strict=True)
        )
    assert window_starts(20, 30, 5) == [0]


def test_ctc_align_finds_the_spikes():
    tokens = [3, 3, 5, 4]
    spikes = [(2, 4), (6, 7), (7, 9), (12, 13)]  # repeated 3 needs a blank between
    lp = torch.full((15, 6), -12.0)
    lp[:, 0] = 0.0
    for token, (a, b) in zip(tokens, spikes, strict=True):
        lp[a:b, token], lp[a:b, 0] = 0.0, -12.0
    assert ctc_align(lp.log_softmax(-1), tokens) == spikes
    assert ctc_align(lp.log_softmax(-1), []) == []
    assert ctc_align(lp[:4].log_softmax(-1), tokens) is None  # cannot fit


def test_stitching_recovers_a_known_timeline(model_dir, monkeypatch):
    """Windows see the true words, garbled where a window edge cuts them and
    with jittered times; the stitched transcript is the true one."""
    asr = Transcriber.from_pretrained(
        model_dir,
        ctc_only=True,
        chunk_seconds=10.0,
        overlap_seconds=2.0,
        batch_size=3,
        long_form="windows",
    )
    truth = [Word(f"w{i}", 0.5 * i + 0.1, 0.5 * i + 0.4) for i in range(190)]
    rng = np.random.default_rng(0)

    def fake_decode(wavs, wav_lens, timed=False):
        from hyperconformer.inference import _Hyp

        hyps = []
        for row in wavs:
            start = float(row[0]) * 1000.0  # the signal is its own clock
            end = start + row.numel() / SR
            words = []
            for w in truth:
                if w.end <= start or w.start >= end:
                    continue
                cut = w.start < start or w.end > end
                jitter = rng.uniform(-0.04, 0.04)
                words.append(
                    Word(
                        ("?" if cut else "") + w.text,
                        max(w.start, start) - start + jitter,
                        min(w.end, end) - start + jitter,
                    )
                )
            hyps.append(_Hyp(" ".join(x.text for x in words), words))
        return hyps

    monkeypatch.setattr(asr, "_decode", fake_decode)
    clock = torch.arange(95 * SR, dtype=torch.float64) / SR / 1000.0
    text = asr.transcribe_batch(clock.float())[0]
    assert text == " ".join(w.text for w in truth)
    # Word times are absolute, across every window boundary.
    words = asr.transcribe_words(clock.float())[0]
    assert [w.text for w in words] == [w.text for w in truth]
    assert max(abs(a.start - b.start) for a, b in zip(words, truth, strict=True)) < 0.05


def test_stitch_prefers_pauses():
    w = lambda text, a, b: Word(text, a, b)  # noqa: E731
    # The two windows place "long" on either side of the overlap's middle
    # (10 s); cutting at the pause before it (9.05 s) keeps it once.
    first = (0.0, 12.0, [w("a", 7.0, 8.7), w("long", 9.4, 10.4), w("?c", 11.8, 12.0)])
    second = (8.0, 20.0, [w("?a", 8.0, 8.7), w("long", 9.5, 10.7), w("c", 11.8, 12.3)])
    assert [x.text for x in stitch_windows([first, second])] == ["a", "long", "c"]


def test_long_attention_decoding_runs(model_dir):
    asr = Transcriber.from_pretrained(
        model_dir, beam_size=2, chunk_seconds=3.0, overlap_seconds=1.0
    )
    wav = torch.from_numpy(speechlike(6.5, seed=5))
    text = asr.transcribe_batch(wav)[0]
    assert isinstance(text, str) and text.strip()


MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys, time
    import torch
    from hyperconformer import Transcriber
    model, warm, long = sys.argv[1:4]
    torch.set_num_threads(2)
    # Two windows per batch: the warm-up file already fills a batch.
    asr = Transcriber.from_pretrained(model, ctc_only=True, batch_size=2)
    asr.transcribe_file(warm)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    text = asr.transcribe_file(long)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(base_kb=base, peak_kb=peak, seconds=seconds,
                          words=len(text.split()))))
    """
)


def test_long_recording_in_bounded_memory(model_dir, tiny_corpus, tmp_path):
    """Six minutes of speech (the tiny corpus's utterances, concatenated)."""
    utterances = sorted(tiny_corpus.rglob("*.flac"))
    pieces, total, gap = [], 0, np.zeros(SR // 4, dtype=np.float32)
    while total < 6 * 60 * SR:
        for path in utterances:
            wav, rate = soundfile.read(path, dtype="float32")
            assert rate == SR
            pieces += [wav, gap]
            total += wav.size + gap.size
            if total >= 6 * 60 * SR:
                break
    long_file, warm_file = tmp_path / "long.flac", tmp_path / "warm.flac"
    signal = np.concatenate(pieces)
    soundfile.write(long_file, signal, SR)
    soundfile.write(warm_file, signal[: 45 * SR], SR)  # two windows
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(model_dir), str(warm_file)]
        + [str(long_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    grown_mb = (stats["peak_kb"] - stats["base_kb"]) / 1024
    # Windows keep the working set at the 45 s warm-up file's: what grows is
    # the signal (6 min: 23 MB at 16 kHz float32, a few copies while loading).
    # One pass over the 6 minutes peaks about 530 MB higher (measured).
    assert grown_mb < 120, stats
    assert stats["peak_kb"] / 1024 < 2500, stats
    assert stats["words"] > 0

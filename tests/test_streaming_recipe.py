"""The streaming recipe: dynamic chunk training in train.py, and the exported
model streamed chunk by chunk as one chunked pass encodes it."""

from pathlib import Path

import pytest
import streaming_wer
import torch
from measurement import load_hparams
from speechbrain.core import Stage
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig
from test_recipe import (  # noqa: F401 (data_folder is a fixture)
    HPARAMS,
    data_folder,
    wer_line,
)
from test_recipe_faults import audio_batch, demo_brain

from hyperconformer import StreamingEncoder
from hyperconformer.audio import load_audio
from hyperconformer.folder import ModelFolderError, load_model_folder

YAML = "hyperconformer_8M_streaming.yaml"


def test_sampler_mixes_chunked_and_offline_batches():
    hp = load_hparams(HPARAMS / YAML, {"output_neurons": 48})
    sampler = hp["dynchunktrain_config_sampler"]
    torch.manual_seed(0)
    configs = [sampler(Stage.TRAIN) for _ in range(200)]
    chunked = [c for c in configs if c is not None]
    assert 0.45 < len(chunked) / len(configs) < 0.75  # chunkwise_prob 0.6
    assert {c.chunk_size for c in chunked} == set(range(8, 33))
    assert all(c.is_infinite_left_context() for c in chunked)
    assert sampler(Stage.VALID) is None
    assert sampler(Stage.TEST) == DynChunkTrainConfig(16)


def streaming_demo_brain(tmp_path):
    """The tiny streaming demo Brain, every training batch from the start
    epoch on chunked, with fixed global statistics (none are gathered)."""
    brain = demo_brain(tmp_path, None, yaml="hyperconformer_demo_streaming.yaml")
    brain.hparams.dynchunktrain_config_sampler.chunkwise_prob = 1.0
    norm, n_mels = brain.modules.normalize.eval(), brain.hparams.n_mels
    norm.glob_mean, norm.glob_std = torch.zeros(n_mels), torch.ones(n_mels)
    return brain


def test_chunked_batches_start_at_dynchunktrain_start_epoch(tiny_corpus, tmp_path):
    brain = streaming_demo_brain(tmp_path)
    brain.hparams.dynchunktrain_start_epoch = 3
    brain.hparams.dynchunktrain_offline_too = False  # one pass per batch
    seen = []
    brain.modules.Transformer.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["dynchunktrain_config"]),
        with_kwargs=True,
    )
    batch = audio_batch(Path(tiny_corpus) / "LibriSpeech")
    with torch.no_grad():
        for epoch in (1, 2, 3, 4):
            brain.hparams.epoch_counter.current = epoch
            brain.compute_forward(batch, Stage.TRAIN)
        brain.compute_forward(batch, Stage.VALID)
    assert seen[:2] == [None, None]  # epochs 1-2: offline
    assert all(c is not None and c.chunk_size >= 4 for c in seen[2:4])
    assert seen[4] is None  # dev decoding is offline whatever the epoch


def test_offline_too_trains_a_chunked_batch_in_both_modes(tiny_corpus, tmp_path):
    brain = streaming_demo_brain(tmp_path)
    brain.modules.eval()  # no dropout: the passes are compared below
    batch = audio_batch(Path(tiny_corpus) / "LibriSpeech")

    def loss(epoch, offline_too):
        brain.hparams.epoch_counter.current = epoch
        brain.hparams.dynchunktrain_offline_too = offline_too
        torch.manual_seed(0)  # the same sampled chunk size every time
        with torch.no_grad():
            predictions = brain.compute_forward(batch, Stage.TRAIN)
            return predictions[0].size(0), brain.compute_objectives(
                predictions, batch, Stage.TRAIN
            )

    start = brain.hparams.dynchunktrain_start_epoch
    rows_offline, offline = loss(start - 1, True)  # before the start: offline
    rows_chunked, chunked = loss(start, False)
    rows_both, both = loss(start, True)
    assert rows_offline == rows_chunked == 2 and rows_both == 4
    assert not torch.isclose(chunked, offline, atol=1e-3)
    # batchmean over the stacked rows: the mean of the two passes' losses
    torch.testing.assert_close(both, (chunked + offline) / 2, atol=1e-5, rtol=1e-5)


def test_train_export_and_stream_the_exported_model(streaming_run, data_folder):  # noqa: F811
    out = streaming_run  # trained by tests/conftest.py
    wer_line(out / "wer_test-clean.txt")
    exported = (out / "model" / "hyperparams.yaml").read_text()
    assert "hyperconformer.CausalFbank" in exported
    assert "hyperconformer.CausalNormalization" in exported
    assert "mixing_summary: mean" in exported
    assert "mixing_summary_frames: 256" in exported

    assert "streaming_chunk_size: 16" in exported

    hp = load_model_folder(out / "model")
    features, normalizer, cnn = (
        hp[k] for k in ("compute_features", "normalizer", "CNN")
    )
    wav = load_audio(sorted(Path(data_folder, "test-clean").rglob("*.flac"))[0])[None]
    stream = StreamingEncoder.from_model_folder(out / "model")
    with torch.no_grad():
        feats = normalizer.eval()(features(wav), torch.ones(1))
        model = hp["Transformer"].eval()
        whole = model.encode(cnn.eval()(feats), None, 0, DynChunkTrainConfig(16))
        pieces = [
            stream.push(wav[:, i : i + 4000]) for i in range(0, wav.size(1), 4000)
        ]
        streamed = torch.cat(pieces + [stream.finish()], 1)
    assert (streamed - whole).abs().max() <= 1e-4

    # WER offline and chunked from the same weights; one chunk longer than
    # any utterance is the offline encoder.
    split = str(Path(data_folder, "test-clean"))
    for decoding in ([], ["--ctc-only"]):
        results = streaming_wer.main(
            [
                "--model",
                str(out / "model"),
                "--split",
                split,
                "--chunks",
                "16",
                "100000",
            ]
            + decoding
        )
        assert list(results) == [
            "offline",
            "chunks of 16 (640 ms)",
            "chunks of 100000 (4000000 ms)",
        ]
        offline, _, whole = (r["hyps"] for r in results.values())
        assert whole == offline
        assert all(0 <= r["wer"] for r in results.values())


def test_an_offline_model_folder_needs_a_chunk_size(offline_model):
    assert load_model_folder(offline_model)["streaming_chunk_size"] is None
    with pytest.raises(ModelFolderError, match="not trained for streaming"):
        StreamingEncoder.from_model_folder(offline_model)


def test_an_hour_long_stream_tool_runs(streaming_run, data_folder):  # noqa: F811
    """tools/streaming_hour.py on a short stream: it repeats the test split,
    streams it live and scores its first and last minutes."""
    import streaming_hour

    report = streaming_hour.main(
        [
            "--model",
            str(streaming_run / "model"),
            "--split",
            str(Path(data_folder, "test-clean")),
            "--minutes",
            "2.5",
            "--window",
            "0.5",
            "--piece",
            "0.5",
        ]
    )
    assert report["minutes"] >= 2.5
    assert report["utterances"] > 16  # the 16 test utterances, repeated
    assert report["rtf_cpu"] > 0 and report["rss_mib_after_1_min"] > 0
    for part in ("first", "last"):
        assert report[part]["words"] > 0 and report[part]["wer"] >= 0

"""tools/benchmark.py on a tiny configuration: the table is produced and a failing
cell is reported in it, not fatal."""

import json

import measurement  # tools/ is on sys.path (conftest.py)
import pytest
import torch


@pytest.fixture(scope="module")
def bench():
    import benchmark  # tools/ is on sys.path (conftest.py)

    return benchmark


class Exploding(torch.nn.Module):
    """Fails like SpeechBrain's hypermixing past its 3000 positional encodings."""

    def forward(self, feats, wav_lens):
        raise RuntimeError(
            "The size of tensor a (3025) must match the size of tensor b (3000) "
            "at non-singleton dimension 1"
        )


def test_inputs_are_padded_batches(bench):
    feats, wav_lens = measurement.make_inputs(2, 3)
    assert feats.shape == (3, 200, 80)
    assert wav_lens.tolist() == [0.5, 0.75, 1.0]
    assert feats[0, 100:].abs().sum() == 0 and feats[0, :100].abs().sum() > 0
    assert measurement.make_inputs(1, 1)[1].tolist() == [1.0]


def test_tiny_run_reports_failures(bench, monkeypatch):
    real_build = bench.build_model

    def build(name, device="cpu", overrides=None):
        if name == "sb_hypermixing":
            return Exploding()
        return real_build(name, device, overrides)

    monkeypatch.setattr(bench, "build_model", build)
    results = bench.run_benchmark(
        models=["ours", "sb_hypermixing"],
        lengths=[0.5],
        batches=[1, 2],
        repeats=1,
        threads=1,
        in_process=True,
        log=None,
    )
    assert [(r.model, r.batch, r.status) for r in results] == [
        ("ours", 1, "ok"),
        ("ours", 2, "ok"),
        ("sb_hypermixing", 1, "fails: >3000 frames"),
        ("sb_hypermixing", 2, "fails: >3000 frames"),
    ]
    ours = results[0]
    assert ours.time_s > 0 and ours.encoder_frames == 13  # 50 frames -> 13
    table = bench.format_table(results)
    lines = table.splitlines()
    assert lines[0].startswith("| audio | batch | time ours | time sb_hypermixing")
    assert "sb_hypermixing / ours" in lines[0]
    assert len([ln for ln in lines if ln.startswith("| 0.5 s |")]) == 2
    assert "fails: >3000 frames" in table


def test_cli_in_process_writes_json(bench, tmp_path, capsys):
    out = tmp_path / "results.json"
    argv = ["--lengths", "0.3", "--batch", "1", "--repeats", "1", "--threads", "1"]
    argv += ["--models", "ours", "--in-process", "--json", str(out)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| 0.3 s | 1 |" in printed
    payload = json.loads(out.read_text())
    assert payload["threads"] == 1
    assert payload["results"][0]["status"] == "ok"


def test_subprocess_cell_measures_memory(bench):
    r = bench.run_cell_subprocess("ours", 0.5, 1, threads=1, repeats=1)
    assert r.status == "ok", r.status
    assert r.base_mem_mb > 0 and r.peak_abs_mb >= r.base_mem_mb
    assert r.peak_mem_mb == pytest.approx(r.peak_abs_mb - r.base_mem_mb)


def test_budget_skips_cells_predicted_too_slow(bench):
    done = [bench.CellResult("conformer_small", 10, 1, time_s=2.0)]
    assert bench._predicted_time(done, "conformer_small", 20, 1) == pytest.approx(8)
    assert bench._predicted_time(done, "conformer_small", 20, 8) is None
    results = bench.run_benchmark(
        models=["ours"],
        lengths=[0.3, 600],
        batches=[1],
        repeats=1,
        threads=1,
        in_process=True,
        budget_s=1e-4,
        log=None,
    )
    assert results[1].status.startswith("skipped")
    assert "skipped" in bench.format_table(results)


def test_status_messages(bench):
    assert measurement.status_for(MemoryError()) == "OOM"
    oom = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried")
    assert measurement.status_for(oom) == "OOM"
    assert measurement.status_for(ValueError("bad\nthing")) == "fails: ValueError: bad"


def test_models_are_built_from_the_recipe_yamls(bench):
    from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
    from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR

    from hyperconformer import ConvFrontEnd, HyperConformerASR

    small = {"num_encoder_layers": 1, "num_decoder_layers": 1}
    built = {n: measurement.build_model(n, overrides=small) for n in bench.MODELS}
    ours, sb = built["ours"], built["sb_hypermixing"]
    assert isinstance(ours.asr, HyperConformerASR) and isinstance(
        ours.frontend, ConvFrontEnd
    )
    assert isinstance(sb.asr, TransformerASR) and sb.asr.attention_type == "hypermixing"
    assert isinstance(sb.frontend, ConvolutionFrontEnd)

    def count(m):
        return sum(p.numel() for p in m.parameters())

    # Same yaml, same sizes: SpeechBrain's hypermixing holds the same weights.
    assert count(ours) == count(sb)
    conformer, convfe = built["conformer_small"], built["conformer_small_convfe"]
    assert isinstance(conformer.frontend, ConvolutionFrontEnd)
    assert isinstance(convfe.frontend, ConvFrontEnd)
    assert convfe.frontend.state_dict().keys() == conformer.frontend.state_dict().keys()
    assert count(convfe.asr) == count(conformer.asr)

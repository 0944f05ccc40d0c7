"""tools/compare.py: ``--quick`` writes the report and plots from tiny models and
fake result folders; failing cells are reported in the tables, not fatal."""

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HPARAMS = ROOT / "hparams" / "LibriSpeech"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def compare():
    import compare  # tools/ is on sys.path (conftest.py)

    return compare


def write_wer(folder: Path, split: str, hyps: list[str], refs: list[str]) -> None:
    """A wer_<split>.txt written by SpeechBrain itself, as the recipe does."""
    from speechbrain.utils.metric_stats import ErrorRateStats

    stats = ErrorRateStats()
    ids = [f"utt{i}" for i in range(len(refs))]
    stats.append(ids, [h.split() for h in hyps], [r.split() for r in refs])
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"wer_{split}.txt", "w") as out:
        stats.write_stats(out)


class Exploding(torch.nn.Module):
    """Fails like SpeechBrain's hypermixing past its 3000 positional encodings."""

    def forward(self, feats, wav_lens):
        raise RuntimeError(
            "The size of tensor a (3025) must match the size of tensor b (3000) "
            "at non-singleton dimension 1"
        )


@pytest.fixture(scope="module")
def quick_run(compare, tmp_path_factory):
    """One ``--quick`` run: fake trained folders, two failing cells, and CUDA
    asked for on a machine treated as having none."""
    tmp = tmp_path_factory.mktemp("compare")
    refs = ["the cat sat on the mat", "a dog ran", "hello world again"]
    hc = tmp / "results" / "hyperconformer_demo" / "7775"
    write_wer(
        hc, "test-clean", ["the cat sat on a mat", "a dog ran", "hello world"], refs
    )
    (hc / "hyperparams.yaml").write_text("T: !new:hyperconformer.HyperConformerASR\n")
    (hc / "summary.json").write_text('{"parameters": 2800000}')
    base = tmp / "results" / "conformer_demo" / "7775"
    write_wer(base, "test-clean", ["the cat sat on the hat", "dog ran", "x"], refs)
    (base / "hyperparams.yaml").write_text(
        "# the same as hyperconformer_demo.yaml, but attention_type: hypermixing\n"
        "    attention_type: RelPosMHAXL\n"
    )

    real_measure = compare.measure

    def measure(model, name, seconds, batch, **kwargs):
        if name == "conformer_demo" and seconds == 4:
            model = Exploding()
        if name == "conformer_small" and seconds == 4 and batch == 2:
            raise MemoryError("no memory left")  # escapes measure's handler
        return real_measure(model, name, seconds, batch, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(compare, "measure", measure)
    mp.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp / "out"
    argv = ["--quick", "--out", str(out), "--device", "cpu", "cuda"]
    argv += ["--results", str(hc.parent), str(base), str(tmp / "missing")]
    try:
        code = compare.main(argv)
    finally:
        mp.undo()
    return code, out


def test_quick_writes_report_and_plots(quick_run):
    code, out = quick_run
    assert code == 0
    report = (out / "report.md").read_text()
    for heading in (
        "## Parameters",
        "## Test WER",
        "## Inference: encoder with front-end",
        "### Time, cpu",
        "### Peak memory, cpu",
        "### Time, cuda",
        "## Training step",
    ):
        assert heading in report
    assert "quick mode" in report and "Models shrunk with overrides" in report
    assert "torch " + torch.__version__ in report and "speechbrain 1.1.2" in report
    assert "| threads | 1 (torch) |" in report
    # Both pairs get ratio columns, in parameters and speed tables.
    assert "*hyperconformer_8M / conformer_small*" in report
    assert "| hyperconformer_demo / conformer_demo |" in report
    for what in ("time", "memory"):
        png = out / f"report_{what}_cpu.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f"]({png.name})" in report
    assert not list(out.glob("*cuda.png"))  # nothing measured there


def test_quick_tables_hold_numbers(quick_run):
    _, out = quick_run
    report = (out / "report.md").read_text()
    time_table = report.split("### Time, cpu")[1].split("###")[0]
    rows = [ln for ln in time_table.splitlines() if ln.startswith("| 2 s | 1 |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert all(c.endswith("ms") or c.endswith(" s") for c in cells[2:6])
    assert all(float(c) > 0 for c in cells[6:8])  # the two ratios


def test_failing_cells_are_reported_not_fatal(quick_run):
    _, out = quick_run
    report = (out / "report.md").read_text()
    time_table = report.split("### Time, cpu")[1].split("###")[0]
    (row,) = [ln for ln in time_table.splitlines() if ln.startswith("| 4 s | 2 |")]
    assert "fails: >3000 frames" in row  # conformer_demo
    assert "| OOM |" in row  # conformer_small
    # No ratio where one side failed.
    assert row.rstrip(" |").endswith("| - | -")
    cuda = report.split("### Time, cuda")[1].split("###")[0]
    assert cuda.count("no CUDA") == 4 * 4  # 4 models x (2 lengths x 2 batches)
    assert "No CUDA measurement in this run" in report


def test_quick_reads_wer_folders(quick_run):
    _, out = quick_run
    report = (out / "report.md").read_text()
    wer = report.split("## Test WER")[1].split("## ")[0]
    # Of 12 reference words: 1 sub + 1 del, and 2 sub + 3 del.
    assert "| hyperconformer_demo/7775 | 2.80 M | 16.67 (2 / 12) |" in wer
    assert "| conformer_demo/7775 | - | 41.67 (5 / 12) |" in wer
    assert "| missing | - | not found |" in wer
    assert "| *hyperconformer_demo/7775 / conformer_demo/7775* |  | 0.40 |" in wer


def test_parse_wer_file(compare, tmp_path):
    good = tmp_path / "wer_test-other.txt"
    good.write_text(
        "%WER 3.14 [ 123 / 3917, 10 ins, 50 del, 63 sub ] [PARTIAL]\n"
        "%SER 30.00 [ 3 / 10 ]\n"
    )
    res = compare.parse_wer_file(good, "run")
    assert (res.split, res.wer, res.edits, res.words) == ("test-other", 3.14, 123, 3917)
    assert res.partial and res.error is None
    bad = tmp_path / "wer_dev.txt"
    bad.write_text("utt1, %WER 50.00 [ 1 / 2, 0 ins, 0 del, 1 sub ]\n")
    assert compare.parse_wer_file(bad, "run").error == "no %WER line"


def test_pairing(compare):
    pair = compare.pair_up
    items = [
        ("hyperconformer_8M", True),
        ("conformer_small", False),
        ("hyperconformer_demo", True),
        ("conformer_demo", False),
    ]
    expected = [
        ("hyperconformer_8M", "conformer_small"),
        ("hyperconformer_demo", "conformer_demo"),
    ]
    assert pair(items) == expected
    # Same-name twins win over order; a lone HyperConformer has no ratio.
    assert pair(items[::-1]) == [
        ("hyperconformer_demo", "conformer_demo"),
        ("hyperconformer_8M", "conformer_small"),
    ]
    assert pair([("hyperconformer_22M", True)]) == []


def test_skips_predicted_over_budget_and_after_oom(compare):
    cell = compare.CellResult
    conformer = compare.ModelInfo("conformer_small", "x.yaml", kind="Conformer")
    hyper = compare.ModelInfo("hyperconformer_8M", "y.yaml", kind="HyperConformer")
    done = [cell("conformer_small", 10, 1, time_s=1.0)]
    # One point: attention assumed quadratic, HyperConformer linear.
    assert compare.predicted_time(done, conformer, 40, 1) == pytest.approx(16.0)
    done_h = [cell("hyperconformer_8M", 10, 1, time_s=1.0)]
    assert compare.predicted_time(done_h, hyper, 40, 1) == pytest.approx(4.0)
    # Two points: the measured exponent (here 1.5).
    done.append(cell("conformer_small", 40, 1, time_s=8.0))
    assert compare.predicted_time(done, conformer, 160, 1) == pytest.approx(64.0)
    assert compare.skip_reason(done, conformer, 160, 1, 60.0) == "skipped (~64 s)"
    assert compare.skip_reason(done, conformer, 160, 1, 100.0) is None
    assert compare.skip_reason(done, conformer, 160, 8, 60.0) is None  # other batch
    oom = [cell("conformer_small", 10, 8, status="OOM (killed)")]
    assert compare.skip_reason(oom, conformer, 20, 8, None) == "skipped (OOM before)"


def test_series_in_fresh_process(compare):
    """The default CPU path: one process per series, memory measured, cells
    over the budget skipped, a broken hparams file reported."""
    settings = compare.Settings(
        threads=1, repeats=1, budget_s=2.0, overrides=compare.QUICK.overrides
    )
    model = compare.describe_model(HPARAMS / "hyperconformer_demo.yaml", {})
    assert model.error is None and model.is_hyper
    assert model.params["total"] == sum(
        model.params[k] for k in ("front_end", "encoder", "decoder", "output")
    )
    results = compare.run_series_subprocess(
        "inference", model, 1, [0.5, 1.0, 5000.0], settings
    )
    assert [r.status for r in results[:2]] == ["ok", "ok"]
    assert results[1].peak_mem_mb is not None and results[1].time_s > 0
    assert results[2].status.startswith("skipped (~")

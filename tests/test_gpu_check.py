"""tools/gpu_check.py in its tiny CPU form: every section runs and reports."""

import gpu_check  # tools/ is on sys.path (conftest.py)


def test_tiny_gpu_check_writes_every_section(tmp_path):
    out = tmp_path / "benchmarks-gpu.md"
    assert gpu_check.main(["--tiny", "--out", str(out)]) == 0
    report = out.read_text()
    for heading in (
        "## Training (bf16 autocast",
        "## Encoder inference",
        "## Joint CTC/attention beam search",
        "## Beside the paper's claims",
    ):
        assert heading in report
    sections = {part.split("\n")[0]: part for part in report.split("\n## ")}

    def rows(section):
        lines = sections[section].splitlines()
        return {ln.split(" | ")[0][2:]: ln.strip("| ").split(" | ") for ln in lines}

    training = rows("Training (bf16 autocast, Adam, dynamic batches)")
    for model in gpu_check.TRAINING:
        # measured: a parameter count and a positive step rate
        assert training[model][1].endswith(" M") and float(training[model][3]) > 0
    decoding = rows("Joint CTC/attention beam search (fp32)")
    for model in gpu_check.DECODING:
        assert float(decoding[model][-1]) >= 0
    # Every encoder, also Conformer behind our front-end, and no failed cell.
    assert "time conformer_small_convfe" in report
    assert "fails" not in report and "OOM" not in report
    assert "paper: 38-56% faster" in report

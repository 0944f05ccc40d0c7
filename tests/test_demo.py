"""tools/demo.py: the training precision it picks and the table it prints."""

import demo
import torch


def test_precision_follows_the_command_line_else_the_cpu():
    assert demo.training_precision(["--precision=fp32", "--x=1"]) == "fp32"
    assert demo.training_precision(["--precision=bf16"]) == "bf16"
    assert demo.training_precision(["--precision", "fp16", "--x=1"]) == "fp16"
    fast = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert demo.training_precision(["--number_of_epochs=2"]) == (
        "bf16" if fast else "fp32"
    )


def test_results_table_names_the_precision():
    test = {"wer": 30.0, "ctc_wer": 40.0, "rtf": 0.01, "utterances": 2,
            "audio_seconds": 60.0}  # fmt: skip
    summary = {"test": {"test-clean": test}, "parameters": 3.8e6, "epochs": 8,
               "train_seconds": 90.0, "train_cpu_seconds": 80.0,
               "peak_rss_mb": 2048.0}  # fmt: skip
    table = demo.results_table({"HyperConformer": summary}, "test-clean", 1, "bf16")
    row = next(line for line in table.splitlines() if "training precision" in line)
    assert row.split("|")[2].strip() == "bf16"
    assert "30.00 %" in table and "40.00 %" in table

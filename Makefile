# Two commands do all the set-up: `make sweep` (the main job) and `make test` (the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU-only machines get the CPU build of torch (small); a GPU machine gets PyPI's CUDA build.
# A CPU wheel some machines keep on disk (pip's find-links) is used when present, else PyTorch's CPU index.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_LOCAL ?= 2.13.0
# The versions the tests last passed with (pip constraints, locked on Python 3.11): a fresh machine installs those,
# not whatever PyPI released since. Another Python installs from the pyproject.toml ranges. `make test-latest` tests
# the newest releases those ranges allow, in .venv-latest.
CONSTRAINTS ?= $(shell $(PYTHON) -c "import sys; print('constraints.txt' if sys.version_info[:2] == (3, 11) else '/dev/null')")

.PHONY: install sweep test test-latest lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install "torch>=2.1"; \
	elif $(PY) -m pip install -q --dry-run --no-index --no-deps torch==$(TORCH_LOCAL) >/dev/null 2>&1; then \
	  $(PY) -m pip install torch==$(TORCH_LOCAL); \
	else $(PY) -m pip install torch --index-url $(TORCH_CPU_INDEX) --extra-index-url https://pypi.org/simple; fi
	$(PY) -m pip install -c $(CONSTRAINTS) -e '.[dev]'
	@touch $@

sweep: install
	$(VENV)/bin/fer-sweep run sweeps/quickstart.yaml --wandb offline
	$(VENV)/bin/fer-sweep best --study quickstart

# Test processes (pytest-xdist; worksteal shares a slow file's tests out). Each runs torch on one OpenMP thread
# (tests/conftest.py), so 2 processes use 2 cores without contention: 13:38 against 24:31 in one on a quiet 2-core
# CPU. More cores: `make test TEST_JOBS=8`; 0 runs the suite in this one process.
TEST_JOBS ?= 2

# Real-data tests read FER2013_CSV; unset, it defaults to the shared dev copy where that file exists.
FER2013_DEV ?= ../shared/data/fer2013-dev.csv.gz

# The linter (ruff: lint + import order) and the type checker (mypy, on fer_sweep/) run before the tests: a new
# warning fails `make test`, and so CI.
lint: install
	$(VENV)/bin/ruff check fer_sweep tests benchmarks
	$(VENV)/bin/mypy

test: install lint
	@if [ -z "$$FER2013_CSV" ] && [ -f "$(FER2013_DEV)" ]; then export FER2013_CSV="$(abspath $(FER2013_DEV))"; \
	  echo "FER2013_CSV=$$FER2013_CSV (real-data tests run)"; fi; \
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist worksteal

# The newest releases pyproject.toml allows (no constraints), in their own venv: how a dependency's release is
# caught before it turns a fresh install red. Green -> refresh constraints.txt (see its header).
test-latest:
	$(MAKE) test VENV=.venv-latest CONSTRAINTS=/dev/null

bench: install
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_trainer.py
	$(PY) benchmarks/bench_pruning.py
	$(PY) benchmarks/bench_workers.py
	$(PY) benchmarks/bench_precision.py
	$(PY) benchmarks/bench_launches.py
# The real-data accuracy runs take hours on a CPU; run them one at a time:
#   $(PY) benchmarks/bench_accuracy.py sweeps/residual.yaml --seeds 1
#   $(PY) benchmarks/bench_accuracy.py sweeps/strong.yaml

clean:
	rm -rf $(VENV) .venv-latest results/*/ .pytest_cache

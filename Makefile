# One-command set-up: `make test` and `make demo` create .venv on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP  := $(VENV)/.installed

.PHONY: venv test test-fast demo toolchains clean

# A bare `torch` requirement on a machine with no torch pulls the CUDA build (gigabytes); install
# the pinned CPU build first when torch is missing, while pyproject keeps a normal range.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP) toolchains
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP) toolchains
	$(VENV)/bin/multipl-moe demo

toolchains:
	@PYTHONPATH=src $(PYTHON) -m multipl_moe.toolchains_setup || [ "$$(id -u)" != 0 ]

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

# One-command set-up: `make test` and `make demo` create .venv on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP  := $(VENV)/.installed
# The versions the suite last passed with (pip freeze of .venv without the project; `make constraints`).
CONSTRAINTS := constraints/tested.txt
# What the newest and the oldest allowed dependencies must pass: model, generation, training, remote code.
COMPAT_TESTS ?= tests/test_model_upcycle.py tests/test_generation_cache.py tests/test_training.py tests/test_eval_generate.py
NEWEST := .venv-newest
OLDEST := .venv-oldest
# The floor of `transformers>=X,<6` in pyproject.toml: the oldest release the range claims.
TRANSFORMERS_OLDEST := $(shell sed -n 's/^ *"transformers>=\([0-9.]*\),.*/\1/p' pyproject.toml)

.PHONY: venv test test-fast test-newest test-oldest test-compat constraints demo toolchains clean

# A bare `torch` requirement on a machine with no torch pulls the CUDA build (gigabytes); install
# the pinned CPU build first when torch is missing, while pyproject keeps a normal range.
# (pip's own cache is left on: CI re-runs reuse the downloaded wheels.)
define torch_first
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -c "import torch" 2>/dev/null || $(1)/bin/python -m pip install -q torch==$(TORCH_VERSION)
endef

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(call torch_first,$(VENV))
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP) toolchains
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The newest releases pyproject.toml allows (eager upgrade, no recorded versions; torch stays pinned,
# as above), then the compatibility tests on them.
test-newest:
	$(call torch_first,$(NEWEST))
	echo "torch==$(TORCH_VERSION)" > $(NEWEST)/torch.txt
	$(NEWEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -c $(NEWEST)/torch.txt -e ".[dev]"
	$(NEWEST)/bin/python -m pip list 2>/dev/null | grep -iE "^(torch|transformers|accelerate|peft|tokenizers|huggingface.hub) "
	$(NEWEST)/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_TESTS)

# The oldest transformers the range claims; the rest as recorded, except the packages whose
# versions transformers itself pins (hub, tokenizers), which pip picks for that release.
test-oldest:
	$(call torch_first,$(OLDEST))
	grep -viE "^(transformers|tokenizers|huggingface[-_]hub)==" $(CONSTRAINTS) > $(OLDEST)/constraints.txt
	$(OLDEST)/bin/python -m pip install -q -c $(OLDEST)/constraints.txt -e ".[dev]" "transformers==$(TRANSFORMERS_OLDEST)"
	$(OLDEST)/bin/python -c "import transformers; assert transformers.__version__ == '$(TRANSFORMERS_OLDEST)', transformers.__version__"
	$(OLDEST)/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_TESTS)

test-compat: test-newest test-oldest

# Record the versions of .venv after the suite passed in it.
constraints: $(STAMP)
	{ sed -n '1,/^[^#]/{/^#/p}' $(CONSTRAINTS); \
	  $(PY) -m pip freeze --exclude-editable | grep -viE "^multipl[-_]moe" | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/'; \
	} > $(CONSTRAINTS).new && mv $(CONSTRAINTS).new $(CONSTRAINTS)

demo: $(STAMP) toolchains
	$(VENV)/bin/multipl-moe demo

toolchains:
	@PYTHONPATH=src $(PYTHON) -m multipl_moe.evaluation.toolchains_setup || [ "$$(id -u)" != 0 ]

clean:
	rm -rf $(VENV) $(NEWEST) $(OLDEST) build *.egg-info src/*.egg-info

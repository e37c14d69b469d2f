# Two commands do all set-up on a fresh machine:
#   make demo   - runs the main job on the bundled default (sample flight + shipped model)
#   make test   - runs ruff, mypy and the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check rams tests scripts
	$(VENV)/bin/mypy rams

test: lint
	$(VENV)/bin/pytest -q

demo: $(STAMP)
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) demo-out

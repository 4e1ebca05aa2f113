# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv

.PHONY: serve test train-env clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

serve: $(VENV)/.installed  ## start the server on $$PORT (default 8000) with the embedded defaults
	$(VENV)/bin/gunicorn -c gunicorn.conf.py main:app

test: $(VENV)/.installed  ## run the whole test suite
	$(VENV)/bin/python -m pytest

.venv-train/.installed: requirements-train.txt requirements.txt
	$(PYTHON) -m venv .venv-train
	.venv-train/bin/pip install --quiet --upgrade pip
	.venv-train/bin/pip install --quiet -r requirements-train.txt
	touch $@

train-env: .venv-train/.installed  ## training environment (TensorFlow etc.)

clean:
	rm -rf $(VENV) .venv-train .pytest_cache

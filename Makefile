# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv

.PHONY: serve test train-env browser clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

serve: $(VENV)/.installed  ## start the server on $$PORT (default 8000) with the embedded defaults
	$(VENV)/bin/gunicorn -c gunicorn.conf.py main:app

test: $(VENV)/.installed browser  ## run the whole test suite
	$(VENV)/bin/python -m pytest

# The browser tests drive Debian's Chromium; install it when it is missing (needs root or sudo).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && \
	    $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

.venv-train/.installed: requirements-train.txt requirements.txt
	$(PYTHON) -m venv .venv-train
	.venv-train/bin/pip install --quiet --upgrade pip
	.venv-train/bin/pip install --quiet -r requirements-train.txt
	touch $@

train-env: .venv-train/.installed  ## training environment (TensorFlow etc.)

clean:
	rm -rf $(VENV) .venv-train .pytest_cache

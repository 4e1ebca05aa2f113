# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv

.PHONY: serve test test-fast train-env flink-env malaria-cv bench-env compare system-deps gcp-bundle clean

# Each environment gets the `modelserve` command (an editable install of this checkout: the pins
# come from the requirements files, the code and saved_models/ stay here).
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-batch.txt requirements-beam.txt requirements-store.txt requirements-monitor.txt pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

.venv-serve/.installed: requirements.txt pyproject.toml setup.py
	$(PYTHON) -m venv .venv-serve
	.venv-serve/bin/pip install --quiet --upgrade pip
	.venv-serve/bin/pip install --quiet -r requirements.txt
	.venv-serve/bin/pip install --quiet --no-deps -e .
	touch $@

serve: .venv-serve/.installed  ## the server on 127.0.0.1:$$PORT (default 8000; HOST=0.0.0.0 to listen on every interface), serving requirements only
	HOST=$${HOST:-127.0.0.1} .venv-serve/bin/gunicorn -c gunicorn.conf.py main:app

# pytest-xdist worker processes, handed tests one by one (worksteal: schemathesis' operations share one test id,
# which the by-file schedulers would run once).
TEST_WORKERS ?= 2
test: $(VENV)/.installed .venv-serve/.installed .venv-flink/.installed system-deps  ## run the whole test suite
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist worksteal

test-fast: $(VENV)/.installed  ## the inner loop: no live servers, browser, PostgreSQL, Spark, training or benchmarks
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not live and not browser and not postgres and not slow"

# The browser tests drive Debian's Chromium, the benchmark smoke tests drive wrk, the
# slow-client test runs the shipped nginx configuration and the batch tests run Spark (Java 17);
# install them when missing (needs root or sudo).
NGINX := $(shell command -v nginx || echo /usr/sbin/nginx)
system-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v wrk >/dev/null && \
	  test -x $(NGINX) && command -v java >/dev/null || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && \
	    $$SUDO apt-get install -y -qq chromium chromium-driver wrk nginx openjdk-17-jre-headless >/dev/null; }

.venv-train/.installed: requirements-train.txt requirements.txt
	$(PYTHON) -m venv .venv-train
	.venv-train/bin/pip install --quiet --upgrade pip
	.venv-train/bin/pip install --quiet -r requirements-train.txt
	touch $@

train-env: .venv-train/.installed  ## training environment (TensorFlow etc.)

# apache-flink pins numpy, pandas and pyarrow below the server's: the Flink job has an environment of its own.
.venv-flink/.installed: requirements-flink.txt
	$(PYTHON) -m venv .venv-flink
	.venv-flink/bin/pip install --quiet --upgrade pip
	.venv-flink/bin/pip install --quiet -r requirements-flink.txt
	touch $@

flink-env: .venv-flink/.installed  ## environment of the Flink streaming job (app/batch/flink_score.py)

# Patient-level 5-fold cross-validation of one malaria CNN variant, resumable: folds whose
# result file exists are skipped (evaluation/malaria_cv/VARIANT/fold-N.json, committed), then
# the folds written so far are pooled. `make malaria-cv VARIANT=vgg64 FOLDS="0 1"` for a few.
VARIANT ?= vgg64
FOLDS ?= 0 1 2 3 4
DATA ?= ../shared/data
malaria-cv: train-env  ## cross-validate VARIANT by patient, one fold per training run, skipping folds already done
	@for fold in $(FOLDS); do \
	  test -f evaluation/malaria_cv/$(VARIANT)/fold-$$fold.json && { echo "fold $$fold of $(VARIANT) done"; continue; }; \
	  .venv-train/bin/flask --app app train malaria-fold --variant $(VARIANT) --fold $$fold --data $(DATA) || exit 1; \
	done
	.venv-train/bin/flask --app app train malaria-cv-report --variant $(VARIANT)

.venv-bench/.installed: requirements-bench.txt requirements.txt
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install --quiet --upgrade pip
	.venv-bench/bin/pip install --quiet -r requirements-bench.txt
	touch $@

bench-env: .venv-bench/.installed  ## environment with BentoML and MLServer for the comparison

compare: bench-env .venv-serve/.installed system-deps  ## this server against BentoML, MLServer, LitServe and bare Flask (about 20 minutes); summary into benchmarks/README.md
	.venv-bench/bin/python benchmarks/compare.py --out benchmarks/results/compare.md --readme benchmarks/README.md

# gcloud (App Engine, Cloud Functions) installs the requirements.txt of the folder it deploys; this
# folder's holds the store libraries too, for models served from a bucket (MODELSERVE_MODEL_STORE=gs://...).
gcp-bundle:  ## build/gcp: the code, app.yaml and a requirements.txt with the store libraries, for `gcloud ... --source build/gcp`
	rm -rf build/gcp && mkdir -p build/gcp
	cp -r app main.py gunicorn.conf.py app.yaml build/gcp/
	find build/gcp -name __pycache__ -prune -exec rm -rf {} +
	{ cat requirements.txt; grep -v '^-r' requirements-store.txt; } > build/gcp/requirements.txt

clean:
	rm -rf $(VENV) .venv-serve .venv-train .venv-bench .venv-flink .pytest_cache build

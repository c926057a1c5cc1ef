# XMed platform. `make run` and `make test` each do all of their own set-up.
SHELL := /bin/bash
ROOT := $(abspath .)
VENV := $(ROOT)/.venv
DVC_VENV := $(ROOT)/.venv-dvc
PY := $(VENV)/bin/python
PROFILE ?= demo

export DAGSTER_HOME := $(ROOT)/.dagster
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1
export PATH := $(VENV)/bin:$(PATH)

.PHONY: setup run train evaluate learning-table test test-all ui mlflow-ui bench clean-data

setup: $(VENV)/.stamp $(DVC_VENV)/.stamp $(DAGSTER_HOME)/dagster.yaml .sysdeps.stamp

.sysdeps.stamp:
	@command -v espeak-ng >/dev/null || { apt-get update && apt-get install -y --no-install-recommends espeak-ng; }
	@touch $@

$(VENV)/.stamp: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[dev]"
	@touch $@

$(DVC_VENV)/.stamp:
	python3 -m venv $(DVC_VENV)
	$(DVC_VENV)/bin/pip install -q "dvc>=3.50,<4"
	@touch $@

$(DAGSTER_HOME)/dagster.yaml: orchestration/dagster.yaml
	mkdir -p $(DAGSTER_HOME) .dvcstore
	cp orchestration/dagster.yaml $@

## run: materialise the data assets and their quality gates on the $(PROFILE) profile
run: setup
	XMED_PROFILE=$(PROFILE) $(VENV)/bin/dagster asset materialize -m orchestration.definitions --select 'group:data'
	@XMED_PROFILE=$(PROFILE) $(PY) -m orchestration.where

## train: the training pipeline (base model -> sft -> reasoning sft -> dpo -> audio) on $(PROFILE)
train: setup
	XMED_PROFILE=$(PROFILE) $(VENV)/bin/dagster job execute -m orchestration.definitions -j training_pipeline

## evaluate: benchmarks, reliability index and prognostic studies of the trained assistant
evaluate: setup
	XMED_PROFILE=$(PROFILE) $(VENV)/bin/dagster job execute -m orchestration.definitions -j benchmark_pipeline
	XMED_PROFILE=$(PROFILE) $(VENV)/bin/dagster job execute -m orchestration.definitions -j uncertainty_pipeline
	for s in ncctg lung_tki nsclc gbm; do \
	  XMED_PROFILE=$(PROFILE) $(VENV)/bin/dagster asset materialize -m orchestration.definitions \
	    --select prognosis_studies --partition $$s || exit 1; done

## learning-table: held-out score per task family: majority answer, base model and every stage
learning-table: setup
	$(PY) -m validation.learning_report --shards data/$(PROFILE)/curated/shards --data-root data/$(PROFILE) \
	  --manifest data/$(PROFILE)/manifest --out runs/$(PROFILE)/evaluation/learning \
	  --per-family 400 --reasoning-prompts 1000 $(foreach s,base_model sft reasoning_sft dpo audio,--checkpoint $(s)=runs/$(PROFILE)/$(s)/model)

## test: the default test tier (unit + integration on the ci profile)
test: setup
	$(VENV)/bin/pytest -m "not slow and not gpu" -q

## test-all: every tier that runs on CPU, slow ones included
test-all: setup
	$(VENV)/bin/pytest -m "not gpu" -q

## ui: the Dagster UI on the project's Definitions (asset graph, lineage, checks)
ui: setup
	XMED_PROFILE=$(PROFILE) $(VENV)/bin/dagster dev -m orchestration.definitions -h 127.0.0.1 -p 3000

## mlflow-ui: the MLflow UI on the embedded SQLite store
mlflow-ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(ROOT)/.mlflow/mlflow.db --host 127.0.0.1 --port 5000

## bench: data-plane benchmarks (curation throughput and memory, GX validation time)
bench: setup
	$(PY) benchmarks/curation_bench.py
	$(PY) benchmarks/gx_bench.py
	$(PY) benchmarks/survival_bench.py --root data/demo
	$(PY) benchmarks/training_bench.py

clean-data:
	rm -rf data .dvcstore .mlflow .dagster gx/uncommitted

# bioselect: `make demo` runs the pipeline on the default model and data, `make test` runs lint + tests.
# Both create .venv, install torch first (TORCH, default the local CPU wheel torch==2.13.0: a bare `torch`
# requirement would pull a multi-GB CUDA build), install the project, and fetch the small real models when
# ../shared/models/fetch-models is there.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
FETCH := ../shared/models/fetch-models
DATA := ../shared/data
DEMO := runs/demo

.PHONY: venv models test test-fast lint demo clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

models: venv
	@if [ -x $(FETCH) ]; then $(FETCH) --python $(BIN)/python smollm2-135m minilm-l6; \
	else echo "($(FETCH) not found: tests that need real weights will be skipped)"; fi

lint: venv
	$(BIN)/ruff check .

test: venv models lint
	$(BIN)/python -m pytest -q

test-fast: venv
	$(BIN)/python -m pytest -q -m "not real"

demo: venv models
	mkdir -p $(DEMO)
	$(BIN)/bioselect data stats $(DATA)/ner/NCBI-disease/train.tsv $(DATA)/ner/NCBI-disease/test.tsv \
		--json $(DEMO)/stats.json
	$(BIN)/bioselect data convert $(DATA)/ner/NCBI-disease/train.tsv --task ner --output $(DEMO)/ncbi_train.jsonl
	$(BIN)/bioselect data convert $(DATA)/ner/NCBI-disease/test.tsv --task ner --output $(DEMO)/ncbi_test.jsonl
	$(BIN)/bioselect data sample $(DEMO)/ncbi_train.jsonl --seed 0 --output $(DEMO)/ladder
	$(BIN)/bioselect evaluate --gold $(DATA)/ner/NCBI-disease/test.tsv --pred $(DEMO)/ncbi_test.jsonl \
		--output $(DEMO)/eval_gold_vs_gold.json

clean:
	rm -rf $(VENV) runs/demo

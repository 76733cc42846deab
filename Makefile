# bioselect: `make demo` runs the whole pipeline (convert -> IFD curation -> LoRA -> constrained generation ->
# comparison table) on real NCBI-disease with the real SmolLM2-135M, `make test` runs lint + tests.
# Both create .venv, install torch first (TORCH, default the local CPU wheel torch==2.13.0: a bare `torch`
# requirement would pull a multi-GB CUDA build), install the project with the versions it was tested with
# (constraints.txt), and fetch the small real models when ../shared/models/fetch-models is there.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
FETCH := ../shared/models/fetch-models
DATA := ../shared/data
DEMO := runs/demo

.PHONY: venv models test test-fast lint demo clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt "$(TORCH)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

models: venv
	@if [ -x $(FETCH) ]; then $(FETCH) --python $(BIN)/python smollm2-135m minilm-l6; \
	else echo "($(FETCH) not found: tests that need real weights will be skipped)"; fi

lint: venv
	$(BIN)/ruff check .

test: venv models lint
	$(BIN)/python -m pytest -q --durations=25
	OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 $(BIN)/python -m pytest -q tests/curation/test_ifd.py -k "two_process or kill_9"  # byte-identity across processes, whatever the shell exports

test-fast: venv
	$(BIN)/python -m pytest -q -m "not real"

demo: venv models
	mkdir -p $(DEMO)
	$(BIN)/bioselect data stats $(DATA)/ner/NCBI-disease/train.tsv $(DATA)/ner/NCBI-disease/test.tsv \
		--json $(DEMO)/stats.json
	$(BIN)/bioselect tune experiment --config configs/demo_ncbi.yaml --output_dir $(DEMO)

clean:
	rm -rf $(VENV) runs/demo

# make demo   create .venv, install wfkit and the sample workflows, build a demo database and browse it
# make test   create .venv, install wfkit, the samples and the test dependencies, run the whole suite
# make bench  the benchmarks (see bench/README.md)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_DB_URL := sqlite:///$(CURDIR)/.demo/wfkit.db

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml plugins/wfkit-samples/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]" -e ./plugins/wfkit-samples
	touch $@

demo: $(VENV)/.installed
	rm -rf .demo
	@export WFKIT_DATABASE_URL=$(DEMO_DB_URL); set -e; \
	echo "== wfkit list-workflows: the sample workflows, found through their plugin's entry point"; \
	$(BIN)/wfkit list-workflows; \
	echo; echo "== wfkit graph review-loop: a loop with a named predicate, as mermaid"; \
	$(BIN)/wfkit graph review-loop; \
	echo; echo "== wfkit db upgrade: create the database (a SQLite file) and its tables"; \
	$(BIN)/wfkit db upgrade; \
	echo; echo "== wfkit run: each sample, printing stages and decisions as they happen"; \
	$(BIN)/wfkit run text-pipeline -p "text=the cat saw the other cat"; echo; \
	$(BIN)/wfkit run branching -p priority=express; echo; \
	$(BIN)/wfkit run review-loop -p threshold=0.75 --json > .demo/review-loop.json; \
	id=$$($(BIN)/python -c 'import json; print(json.load(open(".demo/review-loop.json"))["id"])'); \
	echo; echo "== wfkit runs list: the history"; \
	$(BIN)/wfkit runs list; \
	echo; echo "== wfkit runs stages / decisions: what the review loop did"; \
	$(BIN)/wfkit runs stages $$id; echo; \
	$(BIN)/wfkit runs decisions $$id
	@echo
	@echo "The demo database is .demo/wfkit.db; browse it with: export WFKIT_DATABASE_URL=$(DEMO_DB_URL)"

test: $(VENV)/.installed
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python bench/bench_repository.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .hypothesis

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
	@echo "== wfkit list-workflows: the sample workflows, found through their plugin's entry point"
	$(BIN)/wfkit list-workflows
	@echo "== wfkit graph review-loop: a loop with a named predicate, as mermaid"
	$(BIN)/wfkit graph review-loop
	@echo "== wfkit db upgrade: create the database (a SQLite file) and its tables"
	WFKIT_DATABASE_URL=$(DEMO_DB_URL) $(BIN)/wfkit db upgrade
	@echo "== load example run history"
	WFKIT_DATABASE_URL=$(DEMO_DB_URL) $(BIN)/python -m wfkit.seed --runs 133
	@echo "== wfkit runs list --page-size 5"
	WFKIT_DATABASE_URL=$(DEMO_DB_URL) $(BIN)/wfkit runs list --page-size 5
	@echo "== wfkit runs list --status failed --workflow text-pipeline"
	WFKIT_DATABASE_URL=$(DEMO_DB_URL) $(BIN)/wfkit runs list --status failed --workflow text-pipeline
	@echo "== wfkit runs show / stages / decisions, for the newest run that has stages"
	@export WFKIT_DATABASE_URL=$(DEMO_DB_URL); \
	  id=$$($(BIN)/python examples/newest_run_with_stages.py) && \
	  $(BIN)/wfkit runs show $$id && echo && \
	  $(BIN)/wfkit runs stages $$id && echo && \
	  $(BIN)/wfkit runs decisions $$id
	@echo
	@echo "The demo database is .demo/wfkit.db; browse it with: export WFKIT_DATABASE_URL=$(DEMO_DB_URL)"

test: $(VENV)/.installed
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python bench/bench_repository.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .hypothesis

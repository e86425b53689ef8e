# make demo   create .venv, install wfkit and the sample workflows, build a demo database and browse it
# make test   create .venv, install wfkit, the samples and the test dependencies, run the whole suite
# make bench  the benchmarks (see bench/README.md; the HTTP API's, at 1M runs, takes about 20 minutes)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml plugins/wfkit-samples/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]" -e ./plugins/wfkit-samples
	touch $@

demo: $(VENV)/.installed
	@bash examples/demo.sh $(BIN) .demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -n 3 --dist loadgroup

bench: $(VENV)/.installed
	$(BIN)/python bench/bench_cli.py
	$(BIN)/python bench/bench_executor.py
	$(BIN)/python bench/bench_repository.py
	$(BIN)/python bench/crash_recovery.py --kills 20
	$(BIN)/python bench/bench_api.py --runs 1000000 --reuse
	$(BIN)/python bench/bench_workers.py
	$(BIN)/python bench/bench_viewer.py --runs 1000000 --reuse
	$(BIN)/python bench/bench_history.py
	$(BIN)/python bench/bench_paging.py --runs 1000000 --reuse
	$(BIN)/python bench/bench_prune.py --runs 1000000 --reuse

clean:
	rm -rf $(VENV) .demo .pytest_cache .hypothesis

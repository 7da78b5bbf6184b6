# `make test` is all CI runs; it builds .venv itself on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROTOS := $(wildcard proto/nbferry/v1/*.proto)

.PHONY: demo test lint proto proto-check bench bench-agent bench-planner bench-planning bench-migrate bench-hub clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The README's main command: a round trip through the default local store.
demo: $(VENV)/.installed
	$(VENV)/bin/nbferry demo

test: $(VENV)/.installed lint proto-check
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd proto && ../$(VENV)/bin/buf lint

# Regenerate the Python bindings for proto/ (commit the result).
proto: $(VENV)/.installed
	cd proto && ../$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS:proto/%=%)

# Fails when the committed generated code differs from what `make proto` makes.
proto-check: $(VENV)/.installed
	rm -rf build/proto-check && mkdir -p build/proto-check
	cd proto && ../$(PY) -m grpc_tools.protoc -I. --python_out=../build/proto-check --pyi_out=../build/proto-check --grpc_python_out=../build/proto-check $(PROTOS:proto/%=%)
	diff -r -x '*.proto' -x '__init__.py' -x '__pycache__' proto/nbferry build/proto-check/nbferry \
	  || (echo "generated code in proto/ is stale: run 'make proto' and commit" >&2; exit 1)

# Benchmarks (not part of `make test`): the store, then the agent in real kernels.
bench: $(VENV)/.installed
	$(PY) bench/bench_store.py

bench-agent: $(VENV)/.installed
	$(PY) bench/bench_agent.py

bench-planner: $(VENV)/.installed
	$(PY) bench/bench_planner.py

bench-planning: $(VENV)/.installed
	$(PY) bench/bench_planning.py

bench-migrate: $(VENV)/.installed
	$(PY) bench/bench_migrate.py

bench-hub: $(VENV)/.installed
	$(PY) bench/bench_hub.py

clean:
	rm -rf build $(VENV) .pytest_cache .ruff_cache

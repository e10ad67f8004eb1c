# nanoscope-daq: `make demo` and `make test` work from a fresh clone with only python3.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install redis demo test test-fast lint bench docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The instrument server's queue needs Debian's redis-server (not a Python package). As root (CI)
# it is installed with apt-get; otherwise the command to run is printed.
redis:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server; \
	  else echo "redis-server is missing: run 'sudo apt-get install redis-server'"; exit 1; fi; }

install: $(STAMP) redis

demo: install
	$(VENV)/bin/nanoscope demo

# ruff ([tool.ruff]) and the import contracts ([tool.importlinter]) in pyproject.toml: a style
# or layer violation fails in seconds, before the tests.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# pytest exits 5 when it collects no test: say so rather than fail obscurely.
test: lint
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test-fast: lint
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_sim_ioc.py

docs: $(STAMP)
	$(PY) -m nanoscope_daq.sim.pv_reference > docs/pv-reference.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

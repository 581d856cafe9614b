# Every verb installs what it needs first, so a fresh clone works with `make run` / `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.deps-stamp
NPM_STAMP := node_modules/.deps-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test build bench bench-web bench-control lint clean debs deps distclean fuzz

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "setuptools==75.8.0" wheel "Cython==3.3.1"
	$(PIP) install -q -e '.[test,bench]' --no-build-isolation
	touch $(STAMP)

# The web front's npm packages, exactly as package-lock.json pins them: its tools (typescript
# for tsc --noEmit, axe-core for the browser tests) and one runtime library, uPlot (the
# dashboard's charts). node_modules itself is never served: uPlot's ES module, its stylesheet
# and its licence are copied to static/vendor/uplot/ (gitignored), served from our own origin.
UPLOT := control/web/static/vendor/uplot
UPLOT_JS := $(UPLOT)/uPlot.esm.js

$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends nodejs npm; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

$(UPLOT_JS): $(NPM_STAMP)
	mkdir -p $(UPLOT)
	cp node_modules/uplot/LICENSE node_modules/uplot/dist/uPlot.min.css $(UPLOT)/
	cp node_modules/uplot/dist/uPlot.esm.js $(UPLOT_JS)

deps: $(STAMP) $(NPM_STAMP) $(UPLOT_JS)

# ext/_stream.pyx links OpenSSL: its headers are all the build needs beyond Python's
SSL_H := /usr/include/openssl/ssl.h

$(SSL_H):
	$(SUDO) apt-get update -q && \
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends libssl-dev

build: $(STAMP) $(SSL_H)
	$(PY) setup.py -q build_ext --inplace

# Debian packages the build and tests need (libssl-dev: ext/_stream.pyx links OpenSSL for the
# TLS listeners; coturn for turnutils_* and the benchmark's comparison;
# postgresql for the storage tests, which start their own throwaway server: tests/pgserver.py;
# prometheus for promtool and the scrape test, which starts its own server on a free loopback
# port with its own config and data directory: tests/test_prometheus.py; chromium and its
# chromedriver for the browser tests: tests/web/; iproute2 for the test hosts in network
# namespaces, tests/netns.py; openssl for the test certificates).
debs:
	@missing=""; \
	[ -e $(SSL_H) ] || missing="$$missing libssl-dev"; \
	command -v turnutils_uclient >/dev/null 2>&1 || missing="$$missing coturn"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

run: build $(UPLOT_JS)
	$(VENV)/bin/clickacall up

# The suite in two pytest runs: TEST_WORKERS processes at once (pytest-xdist; each test file
# whole in one of them, see tests/conftest.py) for all but the tests marked serial, then those
# alone: they measure speed, CPU ratios or timing and need the machine to themselves.
TEST_WORKERS ?= 2

test: lint debs
	node --test $(JS_TESTS)
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not serial" tests
	$(PY) -m pytest -q -m serial tests
	$(PY) -m bench.gate

bench: build debs
	$(PY) -m bench

# the web front's speed in headless Chromium: click to ringing, loader size, call page transfer
bench-web: build debs
	$(PY) -m bench.web

# the control plane: clicks per second on SQLite and PostgreSQL, click to ringing on a console
bench-control: build debs
	$(PY) -m bench control

# coverage-guided fuzzing (atheris) of the STUN codec, the fast path's datagram
# classification and the stream framer, each for FUZZ_SECONDS from its committed corpus
# (tests/fuzz/corpus/); `make test` runs the same targets briefly (tests/test_fuzz.py).
# New inputs and crash files go to build/fuzz/<target>/.
FUZZ_SECONDS ?= 300
FUZZ_TARGETS := stun classify stream

fuzz: build
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/$$t && \
	  echo "fuzz_$$t: $(FUZZ_SECONDS) s" && \
	  $(PY) tests/fuzz_$$t.py -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=build/fuzz/$$t/ \
	    -print_final_stats=1 build/fuzz/$$t tests/fuzz/corpus/$$t || exit 1; \
	done

LINTED := clickacall relay control bench tests ext setup.py
JS_TESTS := $(wildcard control/web/static/*.test.js control/web/static/*/*.test.js)

lint: build $(NPM_STAMP) $(UPLOT_JS)
	node_modules/.bin/tsc --noEmit -p control/web/static/jsconfig.json
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/cython-lint ext/*.pyx ext/*.pxd ext/*.pxi

clean:
	rm -rf build ext/*.c ext/*.so ext/*.html bench/out .pytest_cache .mypy_cache .ruff_cache

distclean: clean
	rm -rf $(VENV) *.egg-info node_modules $(UPLOT)/LICENSE $(UPLOT)/uPlot.min.css $(UPLOT_JS)

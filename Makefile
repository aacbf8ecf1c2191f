# Quick start: `make demo` and `make test`. Both create .venv on first use and install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-all test-comfyui demo bench bench-comfyui clean

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

bench: $(STAMP)
	$(PY) benchmarks/bench_sampler.py

clean:
	rm -rf $(VENV) outputs

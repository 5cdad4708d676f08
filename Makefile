# cxrbench — every command a person or CI needs. `make install` then `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TWIN_DIR ?= .cache/twin

.PHONY: install test test-fast smoke bench-smoke bench-all gallery perf perf-twin perf-loader perf-capacity gpu-checklist clean

install:  ## create .venv with torch, the design-card stack, pyradiomics (reference) and cxrbench (editable)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch first, as a range: on our capped CPU machines this resolves to the local 2.14.1 build.
	$(PIP) install "torch>=2.4,<3" "torchvision>=0.19"
	# pyradiomics 3.0.1 only builds from source, without build isolation, and needs these first.
	$(PIP) install versioneer numpy wheel setuptools
	$(PIP) install --no-build-isolation "pyradiomics==3.0.1"
	$(PIP) install -e ".[dev]"

test:  ## the whole CPU test suite
	$(PY) -m pytest -n 2 -q

test-fast:  ## the suite without the tests that train for real or drive whole sweeps (an inner loop, ~1-2 min)
	$(PY) -m pytest -n 2 -q -m "not slow"

smoke: bench-smoke

bench-smoke:  ## the main job on the embedded default: every method on twins at smoke scale (CPU), then the leaderboards
	$(VENV)/bin/cxrbench bench benchmarks/smoke.yaml --leaderboard results

bench-all:  ## the full suite on the real releases under $$CXR_DATA (GPU node)
	@test -n "$$CXR_DATA" || { echo "bench-all: set CXR_DATA to the folder holding nih/, chexpert/, covidx/, siim/, lungs/ (the releases' layouts)"; exit 2; }
	$(VENV)/bin/cxrbench bench benchmarks/all.yaml --estimate   # names what is missing, then device-hours per cell from measured steps (1 GPU per cell, as the sweep runs them)
	$(VENV)/bin/cxrbench bench benchmarks/all.yaml --parallel auto --leaderboard results   # one cell per GPU of the node, every GPU busy

gallery:  ## results/twin_gallery.png: one twin image per finding with its box or mask
	$(PY) -m benchmarks.gallery --out results/twin_gallery.png

perf:  ## every speed figure of the README in one table (ours, reference, ratio)
	$(PY) -m benchmarks.perf

gpu-checklist:  ## on a GPU machine: every item of shared/gpu-checklist.md into results/gpu/ (then commit it)
	$(PY) benchmarks/gpu_checklist.py all

perf-twin:  ## images/s per core of the twin generator
	$(PY) benchmarks/perf/twin.py

perf-loader:  ## PNG vs memmap-cache loader throughput
	$(PY) benchmarks/perf/loader.py

perf-capacity:  ## cores each GPU needs to feed each paper config (loader img/s per core vs an H100 at 40% MFU)
	$(PY) benchmarks/perf/loader_capacity.py

clean:
	rm -rf .cache build *.egg-info

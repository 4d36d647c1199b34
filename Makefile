# Two entry points: `make demo` (the main job on the built-in local device) and `make test`.
# Each sets itself up: a .venv with torch 2.13.0 (CPU build) first, then edgeprune and its pins.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgeprune-installed
DEV_STAMP := $(VENV)/.edgeprune-dev-installed
APT_PACKAGES := openssh-server dataset-fashion-mnist g++-aarch64-linux-gnu chromium
# The emulated aarch64 board: qemu-user through binfmt_misc, and what builds its Debian root filesystem.
ARM_APT_PACKAGES := qemu-user-static binfmt-support
ARM_APT_NO_RECOMMENDS := mmdebstrap arch-test
PYTEST_ARGS ?=
# Where pip finds the CPU build of torch: empty uses pip's own configuration (here a local wheel folder);
# elsewhere pass TORCH_INDEX=https://download.pytorch.org/whl/cpu (PyPI's Linux wheel is the CUDA build).
TORCH_INDEX ?=

.PHONY: demo test test-fast test-arm arm-board lint system-packages clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first and exactly 2.13.0: a looser request would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e .
	touch $@

# The cuda extra (nvcc, ~300 MB) lets the tests cross-compile a Jetson GPU artifact here, without a GPU.
$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,cuda]'
	touch $@

# System packages the tests use: sshd for deploy tests, Fashion-MNIST, the aarch64 cross compiler, headless
# Chromium for the report's screenshot test.
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "note: not root, skipping apt install of:$$missing (tests needing them skip)"; fi; \
	fi

demo: $(STAMP)
	$(BIN)/edgeprune demo

# The emulated Raspberry Pi: qemu-user, binfmt_misc and its root filesystem (built once into ~/.cache/edgeprune,
# 5-6 minutes and 350 MB on 2 busy cores; `edgeprune board emulate build` does nothing when it is there). Root only.
arm-board: $(STAMP) system-packages
	@if [ "$$(id -u)" != 0 ]; then echo "note: not root: no emulated aarch64 board (its tests skip)"; exit 0; fi; \
	missing=""; for p in $(ARM_APT_PACKAGES) $(ARM_APT_NO_RECOMMENDS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(ARM_APT_PACKAGES) && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(ARM_APT_NO_RECOMMENDS); \
	fi; \
	$(BIN)/edgeprune board emulate build

test: $(DEV_STAMP) system-packages arm-board
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast tier: logic on the fake device and other tests without an RPC farm, sshd or TVM tuning (under a minute).
test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest -m fast $(PYTEST_ARGS)

# Only the tests that execute aarch64 code on the emulated board (they are part of `make test` too).
test-arm: $(DEV_STAMP) system-packages arm-board
	$(BIN)/python -m pytest -m arm $(PYTEST_ARGS)

# ruff, then the layers in pyproject.toml's [tool.importlinter] (no cache: the check takes under a second).
lint: $(DEV_STAMP)
	$(BIN)/ruff check edgeprune tests tools examples
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) build *.egg-info

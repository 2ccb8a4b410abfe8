# harmonizer-deploy — `make` runs the main job on the bundled model; `make test` runs the tests.
# `make target=X` picks a target from targets/ (default cpu); `make help` lists everything.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HD     := $(BIN)/harmonizer-deploy
BUILD  ?= build
target ?= cpu
TARGETS := $(basename $(notdir $(wildcard targets/*.toml)))

ifeq ($(filter $(target),$(TARGETS)),)
$(error unknown target '$(target)'; valid targets: $(TARGETS))
endif

.DEFAULT_GOAL := all
.PHONY: all help setup web-setup serve convert compile verify bench test test-slow lint doctor clean

all: bench ## convert → compile → verify → bench for $(target) on the bundled model

help: ## list the make goals and variables
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14
	@echo "variables: target=<$(TARGETS)> (default cpu), VENV=$(VENV), BUILD=$(BUILD)"

setup: $(VENV)/.installed ## create the virtualenv and install the pinned dependencies
$(VENV)/.installed: pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) scripts/install.sh $(VENV)
	@touch $@

web-setup: setup ## Debian emscripten + chromium, TVM's JS runtime (npm) and web runtime objects (webgpu/wasm)
	scripts/install-web-deps.sh $(VENV)

serve: setup ## the harmonizer page on http://127.0.0.1:8000 (needs make target=webgpu or target=wasm first)
	$(HD) serve --build $(BUILD)

convert: setup ## bundled Keras model → $(BUILD)/model.onnx, checked against TensorFlow
	$(HD) convert -o $(BUILD)/model.onnx

compile: convert ## compile $(BUILD)/model.onnx for $(target) into $(BUILD)/$(target)
	$(HD) compile $(BUILD)/model.onnx --target $(target)

verify: compile ## compare the $(target) artifact with onnxruntime
	$(HD) verify --target $(target)

bench: verify ## latency table of every built backend → bench/results/
	$(HD) bench --batch 1 --batch 8 --repeats 5 --build-dir $(BUILD)

doctor: setup ## what is installed, what each target needs
	$(HD) doctor

test: setup ## the test suite (slow tests excluded)
	$(BIN)/python -m pytest -q

test-slow: setup ## only the slow tests
	$(BIN)/python -m pytest -q -m slow

lint: setup ## ruff
	$(BIN)/ruff check src tests

clean: ## remove build outputs (keeps the virtualenv)
	rm -rf $(BUILD)

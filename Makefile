# harmonizer-deploy — `make` runs the main job on the bundled model; `make test` runs the tests.
# `make target=X` picks a target from targets/ (default cpu); `make help` lists everything.
# `runner=docker` runs the goals inside docker/$(target).Dockerfile's image, `runner=host` here; the default is
# docker when a docker daemon answers, else host. `make image CA_BUNDLE=file.pem` builds behind a TLS-intercepting
# proxy; BASE_IMAGE=... picks the FROM image (docs/containers.md). `arch=sm_90` picks the CUDA architecture (default: detected).
# `rpc=HOST:PORT key=KEY` runs verify and bench on a remote device from a TVM RPC tracker (README "Many machines").

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HD     := $(BIN)/harmonizer-deploy
BUILD  ?= build
target ?= cpu
arch   ?=
# The page downloads the small form, like the Bach Doodle did: uint8 weights (per-tensor scale + min) for the web
# targets; `web_weights=float32` ships them as computed (then the page draws exactly the CLI's chorale).
web_weights ?= $(if $(filter wasm wasm-mt webgpu,$(target)),uint8)
WEB_WEIGHTS_FLAG := $(if $(filter-out float32,$(web_weights)),$(if $(web_weights),--web-weights $(web_weights)))
rpc    ?=
key    ?=
RPC_FLAGS := $(if $(rpc),--rpc $(rpc) --rpc-key $(key))
TARGETS := $(basename $(notdir $(wildcard targets/*.toml)))
DOCKER ?= docker
runner ?= $(shell $(DOCKER) info >/dev/null 2>&1 && echo docker || echo host)
IMAGE  := harmonizer-deploy:$(target)
# extra CA certificates for apt/pip/npm inside image builds (a BuildKit secret, never in a layer); the FROM image
# (default: the public python:3.11-slim-bookworm, or harmonizer-deploy/base:bookworm when that can't be pulled)
CA_BUNDLE  ?=
BASE_IMAGE ?=
# GPUs into the container: all NVIDIA GPUs for cuda, the DRI render nodes (if any) for vulkan
GPU_FLAGS_cuda   := --gpus all
GPU_FLAGS_vulkan := $(if $(wildcard /dev/dri),--device /dev/dri)

ifneq ($(rpc),)
ifeq ($(key),)
$(error rpc=$(rpc) needs key=KEY: the key the device servers registered under)
endif
endif

ifeq ($(filter $(target),$(TARGETS)),)
$(error unknown target '$(target)'; valid targets: $(TARGETS))
endif

.DEFAULT_GOAL := all
.PHONY: all help setup web-setup serve convert compile verify bench harmonize test test-slow fuzz lint doctor clean \
	image test-containers coverage-check

all: ## convert → compile → verify → bench for $(target), then harmonize the sample melody

help: ## list the make goals and variables
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14
	@echo "variables: target=<$(TARGETS)> (default cpu), runner=docker|host (now: $(runner)), arch=sm_80|sm_89|sm_90"
	@echo "           (cuda; default detected), VENV=$(VENV), BUILD=$(BUILD), rpc=HOST:PORT key=KEY (verify/bench"
	@echo "           on a remote device from a TVM RPC tracker)"
	@echo "           web_weights=uint8|float16|float32 (wasm/wasm-mt/webgpu; default uint8: the page's small download)"
	@echo "exit: a GPU target's verify on a machine without that GPU stops make with 'Error 4' (see docs/gpu.md)"

image: ## build docker/$(target).Dockerfile as harmonizer-deploy:$(target) (BuildKit; CA_BUNDLE=, BASE_IMAGE=)
	DOCKER="$(DOCKER)" CA_BUNDLE="$(CA_BUNDLE)" BASE_IMAGE="$(BASE_IMAGE)" docker/build.sh $(target) $(IMAGE)

test-containers: ## needs a running docker daemon: build the cpu, wasm and cuda images and run them (not in `make test`)
	DOCKER="$(DOCKER)" CA_BUNDLE="$(CA_BUNDLE)" BASE_IMAGE="$(BASE_IMAGE)" docker/test-containers.sh

ifeq ($(runner),docker)
# The same goals, run by make inside the target's image (`all` in one container); build/ is shared with the host.
all convert compile verify bench harmonize: image
	mkdir -p $(BUILD)
	$(DOCKER) run --rm $(GPU_FLAGS_$(target)) -v "$(abspath $(BUILD)):/app/build" $(IMAGE) \
	  make $@ target=$(target) arch=$(arch) rpc=$(rpc) key=$(key) runner=host VENV=/opt/venv BUILD=build
else
all: bench harmonize

setup: $(VENV)/.installed ## create the virtualenv; install every extra at the tested versions (constraints.txt)
$(VENV)/.installed: pyproject.toml constraints.txt scripts/install.sh
	PYTHON=$(PYTHON) scripts/install.sh $(VENV)
	@touch $@

web-setup: setup ## Debian emscripten + chromium, TVM's JS runtime (npm) and web runtime objects (webgpu/wasm)
	scripts/install-web-deps.sh $(VENV)

serve: setup ## the harmonizer page on http://127.0.0.1:8000 (needs make target=webgpu or target=wasm first)
	$(HD) serve --build-dir $(BUILD)

convert: setup ## bundled Keras model (the Bach Doodle's) → $(BUILD)/model.onnx, checked against TensorFlow
	$(HD) convert -o $(BUILD)/model.onnx

compile: convert ## compile $(BUILD)/model.onnx for $(target) into $(BUILD)/$(target) (+ deploy bundle for GPUs)
	$(HD) compile $(BUILD)/model.onnx --target $(target) -o $(BUILD)/$(target) $(if $(arch),--arch $(arch)) \
		$(WEB_WEIGHTS_FLAG)

verify: compile ## compare the $(target) artifact with onnxruntime (exit 4: no such device here; rpc= key=: remote)
	$(HD) verify $(BUILD)/$(target) --target $(target) $(RPC_FLAGS)

# The small model this project trained (16x64, `default`) is benched beside the bundled Bach Doodle model, from
# its own build folder: both rows come from the same make run.
SMALL_BUILD := $(BUILD)/small-model
bench: verify ## latency of every built backend, Bach Doodle model and the small default model → bench/results/
	$(HD) bench --batch 1 --batch 8 --repeats 5 --harmonize-repeats 0 --build-dir $(BUILD) $(RPC_FLAGS)
	$(HD) convert default -o $(SMALL_BUILD)/model.onnx
	$(HD) compile $(SMALL_BUILD)/model.onnx --target $(target) -o $(SMALL_BUILD)/$(target) $(if $(arch),--arch $(arch))
	$(HD) bench --batch 1 --batch 8 --repeats 5 --harmonize-repeats 0 --build-dir $(SMALL_BUILD) --name bench-default \
		--backend onnxruntime --backend openvino --backend tvm-$(target) $(RPC_FLAGS)

SAMPLE := src/harmonizer_deploy/music/samples/ode-to-joy.mid
ifneq ($(filter $(target),wasm wasm-mt webgpu),)
# A web artifact runs in a browser, not in this process: the page harmonizes the sample in headless Chromium.
harmonize: verify ## the page harmonizes the bundled sample melody on $(target) in headless Chromium → $(BUILD)/ode-to-joy-page.png
	$(BIN)/python scripts/page-harmonize.py $(BUILD) $(SAMPLE) $(target) $(BUILD)/ode-to-joy-page.png
else
harmonize: verify ## harmonize the bundled sample melody on tvm-$(target) → $(BUILD)/ode-to-joy-chorale.mid/.png
	$(HD) harmonize $(SAMPLE) -o $(BUILD)/ode-to-joy-chorale.mid --backend tvm-$(target) --build-dir $(BUILD) \
		--seed 0 --png $(BUILD)/ode-to-joy-chorale.png
endif
endif

doctor: setup ## what is installed, what each target needs
	$(HD) doctor

test: setup ## the test suite (slow tests excluded)
	$(BIN)/python -m pytest -q

coverage-check: setup ## CI: ~300 ONNX node cases (every op) vs the committed coverage.json; exit 3 on a regression
	$(HD) coverage-check --baseline coverage.json -j 2 -o $(BUILD)/coverage-ci/coverage.json

test-slow: setup ## only the slow tests
	$(BIN)/python -m pytest -q -m slow

fuzz: setup ## hypothesis fuzz suite (tests/fuzz), long settings: 5-10 min on 2 shared cores (HARMONIZER_FUZZ_SCALE=50)
	HARMONIZER_FUZZ=long $(BIN)/python -m pytest -q tests/fuzz

lint: setup ## ruff, the import layers (lint-imports), and hadolint on docker/*.Dockerfile
	$(BIN)/ruff check src tests lint
	$(BIN)/lint-imports
	$(BIN)/hadolint --config .hadolint.yaml docker/*.Dockerfile

clean: ## remove build outputs (keeps the virtualenv)
	rm -rf $(BUILD)

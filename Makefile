# One entry point for setting up, running, testing and linting the project.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := protos/wsi/scheduler/v1/scheduler.proto protos/wsi/worker/v1/worker.proto
GEN    := wsi_protocol/scheduler wsi_protocol/worker

.PHONY: all venv run test test-fast lint proto proto-check bench clean browser torch train-model web container-tools image gpu-wheels

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Browser libraries the gateway serves itself (Swagger UI for /docs), pinned in
## gateway/web/package-lock.json, from the npm registry; install scripts are not run.
WEB := gateway/web
$(WEB)/node_modules/.package-lock.json: $(WEB)/package.json $(WEB)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm missing: /docs will answer 503"; exit 0; }; \
		cd $(WEB) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
web: $(WEB)/node_modules/.package-lock.json

## Start worker and scheduler on loopback with the default settings; Ctrl-C stops both.
run: $(STAMP) web
	$(BIN)/python -m wsi_runtime.launch

## Everything CI checks: generated code fresh, lint, the whole test suite.
## Three pytest processes, each taking whole files (module fixtures stay
## shared): an integration test waits on its services much of the time, and
## with two processes the 2 cores still sat idle 62 s of a 357 s run; with
## three, 17 s of 325 s (the same hour, the same code, 2026-12-07). One
## process alone took 674 s (a smaller suite, 2026-12-06, 1b22289).
## As root where podman is (CI), the image is built first, so that its tests
## (the image, the Kubernetes manifests) find it built; elsewhere they are
## skipped; the tests are told the image's id, so that they do not build it
## again. The 15 slowest steps are listed at the end, for planning.
PYTEST_WORKERS ?= 3
test: $(STAMP) web browser torch container-tools proto-check lint
	@built=""; if [ "$$(id -u)" = 0 ] && command -v podman >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory image || exit 1; \
		built=$$(podman image inspect --format '{{.Id}}' $(IMAGE)); fi; \
	WSI_TEST_IMAGE_ID="$$built" $(BIN)/python -m pytest -q -rs -n $(PYTEST_WORKERS) \
		--dist loadfile --durations=15

## Debian's Chromium for the browser tests (Playwright drives it; nothing is downloaded
## by Playwright itself). Needs root, as on CI; without it the browser tests are skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "chromium missing and not root: browser tests will be skipped"; fi; }

## Podman with runc and mmdebstrap, for the container image and its test. Needs
## root, as on CI; without them the image's and the manifests' tests are skipped.
container-tools:
	@command -v podman >/dev/null 2>&1 && command -v mmdebstrap >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc mmdebstrap >/dev/null; \
		else echo "podman missing and not root: the image's test will be skipped"; fi; }

## The services' image (Containerfile), here from a Debian base made locally
## (no image registry is reachable): mmdebstrap's minbase with Python, imported
## once. Elsewhere `podman build -t wsi .` takes the public base. pip reaches
## the package registries through the host's network and certificates.
IMAGE      ?= localhost/wsi:dev
# gpu: the GPU variant (PyTorch's CUDA build), e.g. IMAGE=localhost/wsi-gpu:dev EXTRAS=gpu
EXTRAS     ?=
LOCAL_BASE ?= localhost/wsi-base:bookworm
export CONTAINERS_CONF ?= $(CURDIR)/deploy/containers.conf
image: container-tools web
	@podman image exists $(LOCAL_BASE) || \
		mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
			bookworm - | podman import - $(LOCAL_BASE) >/dev/null
	podman build --quiet --network host -v /etc/ssl/certs:/etc/ssl/certs:ro \
		--build-arg CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
		--build-arg BASE=$(LOCAL_BASE) --build-arg EXTRAS=$(EXTRAS) -t $(IMAGE) .

## PyTorch's CPU build, for the tests of the InstanSeg backend (batched inference on a
## scripted model), when a local wheel of it is at hand: this workplace keeps one where
## PIP_FIND_LINKS points. Elsewhere those tests are skipped; `pip install '.[instanseg]'`
## installs PyTorch for real use.
TORCH_CPU := 2.13.0+cpu
torch: $(STAMP)
	@$(BIN)/python -c "import torch" 2>/dev/null || { \
		if ls $${PIP_FIND_LINKS:-/nonexistent}/torch-$(TORCH_CPU)-*.whl >/dev/null 2>&1; then \
			$(BIN)/python -m pip install --quiet "torch==$(TORCH_CPU)"; \
		else echo "no local CPU wheel of torch $(TORCH_CPU): InstanSeg model tests will be skipped"; fi; }

## Train the learned backend's model from the annotated nuclei (see
## worker_service/weights/MODEL_CARD.md), then quantise it to 8 bits for CPUs:
## replaces the weights in worker_service/weights/ and says how the new ones
## compare with the replaced.
train-model: $(STAMP) torch
	@test -n "$(DATA)" || { echo "make train-model DATA='<folders of the annotated" \
		"nuclei: NAME.jpg images with NAME.png instance labels, e.g. nuclei-train/monuseg-2018-train" \
		"nuclei-train/monuseg-2018-train-extra>'"; exit 2; }
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet 'torch>=2.1'
	$(BIN)/python -m pip install --quiet 'onnx>=1.16'
	$(BIN)/python -m wsi_training.train --data $(DATA)
	$(BIN)/python -m wsi_training.quantise --data $(DATA)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Regenerate the protobuf and gRPC stubs (with .pyi) under wsi_protocol/.
proto: $(STAMP)
	rm -rf $(GEN) .proto-build && mkdir .proto-build
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -I protos \
		--python_out=.proto-build --grpc_python_out=.proto-build \
		--mypy_out=.proto-build --mypy_grpc_out=.proto-build $(PROTOS)
	# protoc writes the proto packages as `wsi.…`; they live in wsi_protocol.
	mv .proto-build/wsi/scheduler .proto-build/wsi/worker wsi_protocol/ && rm -rf .proto-build
	find $(GEN) -name '*.py*' -exec sed -i 's/^from wsi\./from wsi_protocol./' {} +
	for d in $(GEN) wsi_protocol/scheduler/v1 wsi_protocol/worker/v1; do \
		echo '"""Generated by `make proto`; do not edit."""' > $$d/__init__.py; done

## Fails when the committed stubs differ from what `make proto` builds.
proto-check: $(STAMP)
	@tmp=$$(mktemp -d); mkdir $$tmp/before; cp -r $(GEN) $$tmp/before/; \
	$(MAKE) --no-print-directory proto >/dev/null; \
	mkdir $$tmp/after; cp -r $(GEN) $$tmp/after/; \
	if diff -r $$tmp/before $$tmp/after >/dev/null; then echo "proto stubs up to date"; rm -rf $$tmp; \
	else echo "proto stubs are stale: run 'make proto' and commit"; diff -r $$tmp/before $$tmp/after | head -20; rm -rf $$tmp; exit 1; fi

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

## The wheels a GPU machine lent through the device tool lacks, for
## bench/gpu_check.sh (its python3, GPU_PYTHON, already holds PyTorch with CUDA,
## ONNX Runtime, OpenCV and scikit-image; nothing can be fetched there).
GPU_PYTHON ?= 3.12
gpu-wheels: $(STAMP)
	$(BIN)/python -m pip download --quiet --only-binary=:all: --no-deps --implementation cp \
		--python-version $(GPU_PYTHON) --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .wheelhouse \
		grpcio==$$($(BIN)/python -c 'import grpc; print(grpc.__version__)') \
		grpcio-health-checking==$$($(BIN)/python -m pip show grpcio-health-checking | sed -n 's/^Version: //p') \
		grpcio-reflection==$$($(BIN)/python -m pip show grpcio-reflection | sed -n 's/^Version: //p') \
		protobuf==$$($(BIN)/python -c 'import google.protobuf as p; print(p.__version__)') \
		openslide-python openslide-bin shapely orjson imagecodecs

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache

# Build, train and deploy BERT review-sentiment classifiers on Kubeflow Pipelines v2.
# `make run` and `make test` bootstrap .venv by themselves.

PYTHON   ?= python3.11
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
DATA     ?=
OUTPUT   ?=
PROFILE  ?= onprem
TARGET   ?= kfp
PYTEST_ARGS ?=
ARGS     ?=
RUNNER   ?= subprocess
# Container images (`make images`): podman or docker, whichever is installed (podman first).
CONTAINER_TOOL ?= $(firstword $(foreach t,podman docker,$(if $(shell command -v $(t) 2>/dev/null),$(t))))
IMAGES   ?= components train serve
# The base image (default: images/Dockerfile's pinned public python image); `make container-runtime` prints a local one.
BASE_IMAGE ?=
# Builder-specific build flags (a CA bundle, an index: build arguments only, never in an image). With podman,
# the CA bundle this machine's pip uses ($PIP_CERT, e.g. behind a TLS-intercepting proxy) is lent to the build.
IMAGE_BUILD_FLAGS ?= $(if $(and $(PIP_CERT),$(filter podman,$(CONTAINER_TOOL))),-v $(PIP_CERT):/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt)
# Flags for `make push`, e.g. PUSH_FLAGS=--tls-verify=false (podman) for a registry without TLS.
PUSH_FLAGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test test-all compile golden lint bench clean k8s-apiserver images container-runtime

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

# The virtualenv is rebuilt when pyproject.toml is newer than the last install.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev tools

run: $(STAMP) ## Run the whole pipeline locally (DATA=file.csv, OUTPUT=dir, ARGS='--epochs 1', RUNNER=container)
	$(BIN)/python -m pipelines run --runner $(RUNNER) $(if $(DATA),--data $(DATA)) $(if $(OUTPUT),--output $(OUTPUT)) $(ARGS)

test: $(STAMP) ## Run the default test suite (fast; skips `slow`)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: $(STAMP) ## Run every test, the slow ones too
	$(BIN)/python -m pytest -m '' $(PYTEST_ARGS)

compile: $(STAMP) ## Compile the pipeline YAML under build/ (PROFILE=onprem|eks|cpu; TARGET=sagemaker PROFILE=aws)
	$(BIN)/python -m pipelines compile --target $(TARGET) --profile $(PROFILE) --output build/pipeline-$(TARGET)-$(PROFILE).yaml

.PHONY: submit
submit: $(STAMP) ## Compile for PROFILE and start a run on Kubeflow Pipelines (DATA=s3://..., ARGS=; KFP_HOST, KFP_TOKEN: docs/cluster.md)
	$(BIN)/python -m pipelines submit --profile $(PROFILE) $(if $(DATA),--data $(DATA)) $(ARGS)

golden: $(STAMP) ## Rewrite tests/pipelines/golden/ (the compiled YAML of each profile) after a change meant to alter it
	$(BIN)/python -m tests.pipelines.golden_compile

lint: $(STAMP) ## Lint, check formatting and the layering contract (steps import only common; no cycles)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

.PHONY: serve
serve: $(STAMP) ## Serve a model on 127.0.0.1:8080 (MODEL_DIR=dir, else the MLflow champion; PORT=, ARGS=)
	$(BIN)/python -m serving $(if $(MODEL_DIR),--model-dir $(MODEL_DIR),--champion) --port $(or $(PORT),8080) $(ARGS)

bench: $(STAMP) ## Run the benchmarks (NAME=bias to run one)
	$(BIN)/python -m bench $(or $(NAME),all)

k8s-apiserver: ## Build kube-apiserver + etcd for tests/k8s into K8S_TEST_CACHE (default ~/.cache/bert-kfp-k8s)
	bash hack/k8s/build-apiserver.sh

images: $(STAMP) ## Build the images (IMAGES=, BASE_IMAGE=, IMAGE_BUILD_FLAGS=) tagged as the compiled pipeline names them; pushed too when BERT_KFP_REGISTRY is set
	@test -n "$(CONTAINER_TOOL)" || { echo "make images: neither podman nor docker found; make container-runtime installs podman" >&2; exit 2; }
	@refs="$$($(BIN)/python -m components.common.image)" && for name in $(IMAGES); do \
	  ref=$$(printf '%s\n' "$$refs" | sed -n "s/^$$name=//p"); \
	  test -n "$$ref" || { echo "make images: unknown image $$name" >&2; exit 2; }; \
	  echo "$(CONTAINER_TOOL) build --target $$name -t $$ref"; \
	  $(CONTAINER_TOOL) build --network host -f images/Dockerfile --target $$name \
	    $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) $(IMAGE_BUILD_FLAGS) -t $$ref . || exit 1; \
	done
	@if [ -n "$(strip $(BERT_KFP_REGISTRY))" ]; then $(MAKE) --no-print-directory push; \
	else echo "make images: local names (localhost/bert-kfp/...), which no cluster can pull; set BERT_KFP_REGISTRY to push them"; fi

.PHONY: push
push: $(STAMP) ## Push the images (IMAGES=, PUSH_FLAGS=) to BERT_KFP_REGISTRY under the names the compiled pipeline uses
	@test -n "$(CONTAINER_TOOL)" || { echo "make push: neither podman nor docker found; make container-runtime installs podman" >&2; exit 2; }
	@test -n "$(strip $(BERT_KFP_REGISTRY))" || { echo "make push: BERT_KFP_REGISTRY is not set: set it to the registry the cluster pulls from (e.g. registry.example.com/ml) and run make images" >&2; exit 2; }
	@refs="$$($(BIN)/python -m components.common.image)" && for name in $(IMAGES); do \
	  ref=$$(printf '%s\n' "$$refs" | sed -n "s/^$$name=//p"); \
	  test -n "$$ref" || { echo "make push: unknown image $$name" >&2; exit 2; }; \
	  echo "$(CONTAINER_TOOL) push $$ref"; \
	  $(CONTAINER_TOOL) push $(PUSH_FLAGS) $$ref || exit 1; \
	done

container-runtime: ## Install podman + runc, build a local Debian base, start podman's Docker API; prints DOCKER_HOST, BASE_IMAGE
	@bash hack/containers/runtime.sh

clean: ## Remove build outputs and local runs (keeps .venv)
	rm -rf build runs .pytest_cache

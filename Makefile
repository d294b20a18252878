# Every target that needs Python runs it from .venv, which `make venv` creates from scratch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
IMG ?= quay.io/openshift-sre/ebs-metrics-exporter:latest
CONTAINER_ENGINE ?= docker
KUBECTL ?= kubectl
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv build test test-kernel lint demo run bench wheels deploy undeploy docker-build docker-push clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml setup.py csrc/nvme_ebs.c csrc/nvme_ebs.h csrc/build_ffi.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,lint]'
	touch $@

venv: $(VENV)/.installed ## create .venv with the project (editable) and its test tools

build: venv ## compile the C module in place (it is rebuilt when csrc/ changes)

test: venv ## run the whole test suite (QEMU tests included when QEMU is present)
	$(PY) -m pytest $(PYTEST_ARGS)

test-kernel: venv ## only the tests against a real Linux NVMe driver under QEMU
	$(PY) -m pytest -m kernel tests/test_kernel.py $(PYTEST_ARGS)

lint: venv ## ruff, mypy --strict and the C compiler's warnings
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	cc -std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -fsyntax-only csrc/nvme_ebs.c

demo: venv ## serve 3 simulated volumes on :8090 (no EBS needed)
	$(VENV)/bin/ebs-exporter --simulate 3

run: venv ## run against this EC2 node's real volumes (needs root)
	$(VENV)/bin/ebs-exporter

deploy: ## apply deploy/ to the current cluster with image IMG
	for f in deploy/*.yaml; do sed 's#REPLACE_IMAGE#$(IMG)#' "$$f"; echo '---'; done | $(KUBECTL) apply -f -

undeploy: ## delete what deploy/ created
	$(KUBECTL) delete --ignore-not-found -f deploy/

clean: ## remove build outputs and the virtualenv
	rm -rf $(VENV) build dist wheelhouse *.egg-info nvme_ebs/*.so .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Every target that needs Python runs it from .venv, which `make venv` creates from scratch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
IMG ?= quay.io/openshift-sre/ebs-metrics-exporter:latest
CONTAINER_ENGINE ?= docker
KUBECTL ?= kubectl
PYTEST_ARGS ?=
BENCH_ARGS ?=

.DEFAULT_GOAL := help
CHECKOV_VENV ?= .venv-checkov
# Debian packages: the compiler and kernel headers for the C module and the fake controller,
# prometheus (promtool and a real server for the scrape tests), QEMU and friends for the kernel
# tests, strace and wrk for the reliability tests, clang/llvm for fuzzing the C decoders, tmux for
# `nvme-ebs top` on a terminal.
APT_PACKAGES := gcc libc6-dev linux-libc-dev make prometheus qemu-system-x86 busybox-static cpio kmod strace wrk \
	clang-14 libclang-rt-14-dev llvm-14 tmux
NEEDED_COMMANDS := cc promtool prometheus qemu-system-x86_64 busybox cpio depmod strace wrk clang-14 llvm-cov-14 tmux

.PHONY: help deps deps-build apt-install venv build test test-kernel update-golden lint demo run bench soak wheels check-wheel image-steps deploy undeploy docker-build docker-push clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml setup.py csrc/nvme_ebs.c csrc/render.c csrc/nvme_ebs.h csrc/build_ffi.py
	@$(MAKE) -s deps-build
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,lint]'
	touch $@

venv: $(VENV)/.installed ## create .venv with the project (editable) and its test tools

deps: ## install the Debian packages the tests need (as root; otherwise prints the command)
	@$(MAKE) -s apt-install PACKAGES="$(APT_PACKAGES)" COMMANDS="$(NEEDED_COMMANDS)"

# Python's headers and venv module: Debian's interpreter ships them apart (python3-dev, python3-venv).
PYTHON_READY := $(PYTHON) -c 'import ensurepip, os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'

deps-build: # what compiling the C module needs: a compiler, the kernel's NVMe header, Python's headers
	@$(MAKE) -s apt-install PACKAGES="gcc libc6-dev linux-libc-dev" COMMANDS="cc"
	@$(PYTHON_READY) 2>/dev/null || $(MAKE) -s apt-install PACKAGES="python3-dev python3-venv" MISSING="Python.h or venv"

apt-install: # installs PACKAGES when a command in COMMANDS or the NVMe header is missing
	@missing="$(MISSING)"; for c in $(COMMANDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	  [ -f /usr/include/linux/nvme_ioctl.h ] || missing="$$missing linux/nvme_ioctl.h"; \
	  if [ -n "$$missing" ]; then \
	    echo "missing:$$missing"; \
	    if [ "$$(id -u)" = 0 ]; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(PACKAGES) >/dev/null; \
	    else echo "run: sudo apt-get install $(PACKAGES)"; exit 1; fi; \
	  fi

# checkov pins old versions of common packages, so it gets a virtualenv of its own.
$(CHECKOV_VENV)/bin/checkov:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q checkov

build: venv ## compile the C module in place (it is rebuilt when csrc/ changes)

test: deps venv $(CHECKOV_VENV)/bin/checkov ## run the whole test suite (installs what it needs first)
	CHECKOV=$(abspath $(CHECKOV_VENV)/bin/checkov) $(PY) -m pytest $(PYTEST_ARGS)

test-kernel: deps venv ## only the tests against a real Linux NVMe driver under QEMU
	$(PY) -m pytest -m kernel tests/test_kernel.py tests/test_kernel_emulated.py $(PYTEST_ARGS)

update-golden: venv ## rewrite tests/fixtures/host and tests/golden/ (the metrics contract) on purpose; review the diff
	$(PY) tests/fixture_host.py
	$(PY) -m pytest -q tests/test_golden.py --update-golden $(PYTEST_ARGS)

lint: venv ## ruff, mypy --strict and the C compiler's warnings
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	cc -std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -fsyntax-only csrc/nvme_ebs.c csrc/render.c

demo: venv ## serve 3 simulated volumes on :8090 (no EBS needed)
	$(VENV)/bin/ebs-exporter --simulate 3

run: venv ## run against this EC2 node's real volumes (needs root)
	$(VENV)/bin/ebs-exporter

soak: venv ## the churn soak, long (SOAK_SCRAPES=100000 unless set): fds, threads and memory come back
	SOAK_SCRAPES=$${SOAK_SCRAPES:-100000} $(PY) -m pytest -q -s tests/test_soak.py $(PYTEST_ARGS)

bench: venv ## benchmarks side by side, printed as tables (BENCH_ARGS=--quick: a short run)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# The image's labels; docker-build passes them as build arguments.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

wheels: ## sdist + abi3 wheel, auditwheel-repaired into wheelhouse/ (tools pinned in scripts/)
	@$(MAKE) -s deps-build
	PYTHON=$(PYTHON) scripts/build-wheels.sh

check-wheel: ## wheelhouse/'s wheel in a clean venv outside the tree: its tests, then its entrypoint
	@$(MAKE) -s apt-install PACKAGES="gcc libc6-dev linux-libc-dev prometheus" COMMANDS="cc promtool"
	PYTHON=$(PYTHON) scripts/check-wheel.sh

image-steps: ## the Dockerfile's steps without an engine: wheel, clean venv, run and scrape the entrypoint
	@$(MAKE) -s apt-install PACKAGES="gcc libc6-dev linux-libc-dev prometheus" COMMANDS="cc promtool"
	PYTHON=$(PYTHON) scripts/image-steps.sh all

docker-build: ## build the image IMG with CONTAINER_ENGINE (docker with BuildKit, or podman)
	$(CONTAINER_ENGINE) build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(IMG) .

docker-push: ## push the image IMG
	$(CONTAINER_ENGINE) push $(IMG)

deploy: ## apply deploy/ to the current cluster with image IMG
	sed 's#REPLACE_IMAGE#$(IMG)#' deploy/*.yaml | $(KUBECTL) apply -f -

undeploy: ## delete what deploy/ created
	$(KUBECTL) delete --ignore-not-found -f deploy/

clean: ## remove build outputs and the virtualenvs
	rm -rf $(VENV) $(CHECKOV_VENV) build dist wheelhouse *.egg-info nvme_ebs/*.so .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Fuzzing the C decoders with libFuzzer + ASan/UBSan: fuzz-build, fuzz-ci, fuzz, fuzz-coverage, fuzz-corpus.
include fuzz/fuzz.mk
fuzz-corpus: venv

# The container image, built and run by a real engine. image-local and the pod tests build on a
# Debian 12 base made here with debootstrap (cached in build/image-base/), for machines that
# cannot pull UBI, with podman and runc as the repository's containers.conf sets them up
# (scripts/image-local.sh and tests/image_pod.py point CONTAINERS_CONF at it unless it is set;
# /etc is left alone). `make image` uses the engine as the machine configures it.
APT_PACKAGES += podman runc catatonit debootstrap qemu-user-static
NEEDED_COMMANDS += podman runc debootstrap qemu-aarch64-static
IMAGE_ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
.PHONY: image image-local image-local-arm64 test-image test-image-arm64

image: ## build the image IMG from the Dockerfile (UBI 9 bases) with podman, or docker without it
	$(IMAGE_ENGINE) build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(IMG) .

image-local: deps ## the same Dockerfile on a local Debian 12 base: localhost/ebs-metrics-exporter:local
	scripts/image-local.sh amd64

image-local-arm64: deps ## the same for linux/arm64 under qemu-user-static: ...:local-arm64
	scripts/image-local.sh arm64

test-image: image-local venv ## the DaemonSet's pod under podman kube play against a fake host
	$(PY) -m pytest tests/test_image.py $(PYTEST_ARGS)

test-image-arm64: image-local-arm64 venv ## the arm64 image's smoke, emulated (slow: a CI step of its own)
	$(PY) -m pytest -m arm64 tests/test_image_arm64.py $(PYTEST_ARGS)

# syntax=docker/dockerfile:1
#
# ebs-exporter on Red Hat UBI 9: the base image family OpenShift clusters pull
# from a registry they already trust, freely redistributable, with Red Hat's
# security errata, and the same RHEL userland as the RHCOS nodes it runs on.
#
#   make image IMG=quay.io/ORG/ebs-metrics-exporter:TAG   (podman, or docker)
#   make image-local        the same file on a Debian 12 base made with debootstrap
#
# Both stages run scripts/image-steps.sh, which CI also runs without an engine;
# CI also builds this file with podman and runs the DaemonSet's pod from it.

# The base images and the interpreter are build arguments: the defaults are the
# production images; `make image-local` builds the same file on a Debian 12 base made
# with debootstrap (python3.11). scripts/image-steps.sh `packages` installs each
# stage's packages with microdnf, dnf or apt-get, whichever the base has.
ARG BUILDER_IMAGE=registry.access.redhat.com/ubi9/ubi:9.6
ARG RUNTIME_IMAGE=registry.access.redhat.com/ubi9/ubi-minimal:9.6
ARG PYTHON=python3.12

# Builder: compiler, kernel headers (linux/nvme_ioctl.h) and Python headers;
# it builds the wheel and fetches the dependencies' binary wheels.
# hadolint cannot see the ARG defaults: tests/test_packaging.py checks their registry.
# hadolint ignore=DL3026
FROM ${BUILDER_IMAGE} AS builder
ARG PYTHON
WORKDIR /src
COPY scripts/image-steps.sh scripts/requirements-build.txt scripts/
RUN PYTHON=${PYTHON} bash scripts/image-steps.sh packages builder
COPY pyproject.toml setup.py README.md ./
COPY csrc/ csrc/
COPY nvme_ebs/ nvme_ebs/
COPY ebs_exporter/ ebs_exporter/
# Podman 4 (buildah) keys a cached RUN by its text, not by what it mounts, and cannot mount
# a stage it took whole from its cache: make image-local passes a digest of the build's
# inputs here and to the runtime's install step, so both rerun, or neither, when they change.
ARG SOURCE_DIGEST=
# The commit, for ebs_exporter_build_info (setup.py writes it into the wheel: no .git here).
ARG REVISION=unknown
# pip-ca: an optional CA bundle for pip behind a TLS-inspecting proxy (never in a layer).
RUN --mount=type=secret,id=pip-ca REVISION=${REVISION} PYTHON=${PYTHON} bash scripts/image-steps.sh wheel /wheels

# Runtime: UBI minimal with the distribution's Python 3.12 and a venv holding
# only the wheels from the builder. No compiler, no headers, no pip.
# hadolint ignore=DL3026
FROM ${RUNTIME_IMAGE}
ARG RUNTIME_IMAGE
ARG PYTHON
# The wheels and the script are mounted for these steps only: neither stays in a layer.
RUN --mount=type=bind,source=scripts/image-steps.sh,target=/usr/local/libexec/image-steps.sh \
    PYTHON=${PYTHON} bash /usr/local/libexec/image-steps.sh packages runtime
# The digest of the builder stage: see there.
ARG SOURCE_DIGEST=
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,source=scripts/image-steps.sh,target=/usr/local/libexec/image-steps.sh \
    PYTHON=${PYTHON} bash /usr/local/libexec/image-steps.sh install /wheels /opt/ebs-exporter
# After the steps that install, so that a new revision rebuilds only this layer.
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ebs-metrics-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the Amazon EBS and EC2 instance-store NVMe statistics log page" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}" \
      name="ebs-metrics-exporter" \
      version="${VERSION}" \
      release="${REVISION}" \
      summary="Prometheus exporter for EBS NVMe volume statistics" \
      description="Reads the EBS statistics log page (0xD0) of every EBS NVMe volume on the node and serves it on :8090/metrics." \
      com.redhat.component="ebs-metrics-exporter-container" \
      io.k8s.display-name="EBS NVMe metrics exporter" \
      io.k8s.description="Reads the EBS statistics log page (0xD0) of every EBS NVMe volume on the node and serves it on :8090/metrics." \
      io.openshift.tags="ebs,nvme,prometheus,exporter,monitoring" \
      io.openshift.expose-services="8090:metrics"
# readOnlyRootFilesystem in the DaemonSet: Python must not try to write .pyc
# files (pip compiled them at install time).
# The exporter sets its own malloc parameters at start (README, How it works: Memory).
ENV PATH=/opt/ebs-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Root on purpose (the device nodes are root-owned and the ioctl needs
# CAP_SYS_ADMIN): SECURITY.md. The DaemonSet sets runAsUser: 0 itself; this
# says the same to anyone running the image elsewhere.
# hadolint ignore=DL3002
USER 0
EXPOSE 8090
# No HEALTHCHECK: Kubernetes ignores it; the DaemonSet probes /healthz instead.
ENTRYPOINT ["ebs-exporter"]

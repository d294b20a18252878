# syntax=docker/dockerfile:1
#
# ebs-exporter on Red Hat UBI 9: the base image family OpenShift clusters pull
# from a registry they already trust, freely redistributable, with Red Hat's
# security errata, and the same RHEL userland as the RHCOS nodes it runs on.
#
#   make docker-build IMG=quay.io/ORG/ebs-metrics-exporter:TAG   (or podman / buildah)
#
# Both stages run scripts/image-steps.sh, which CI also runs without an engine,
# so the commands below are tested even where no image can be built.

# Builder: compiler, kernel headers (linux/nvme_ioctl.h) and Python headers;
# it builds the wheel and fetches the dependencies' binary wheels.
FROM registry.access.redhat.com/ubi9/ubi:9.6 AS builder
# Not version-pinned: the ubi9 tag above fixes the release, and the UBI
# repositories move with its errata, so an exact RPM version would stop
# resolving at the next security update.
# hadolint ignore=DL3041
RUN dnf install -y --nodocs --setopt=install_weak_deps=0 \
        gcc kernel-headers python3.12 python3.12-devel \
    && dnf clean all
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY csrc/ csrc/
COPY nvme_ebs/ nvme_ebs/
COPY ebs_exporter/ ebs_exporter/
COPY scripts/image-steps.sh scripts/requirements-build.txt scripts/
RUN PYTHON=python3.12 bash scripts/image-steps.sh wheel /wheels

# Runtime: UBI minimal with the distribution's Python 3.12 and a venv holding
# only the wheels from the builder. No compiler, no headers, no pip.
FROM registry.access.redhat.com/ubi9/ubi-minimal:9.6
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ebs-metrics-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the Amazon EBS and EC2 instance-store NVMe statistics log page" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="registry.access.redhat.com/ubi9/ubi-minimal:9.6" \
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
# Not version-pinned, for the reason given in the builder stage.
# hadolint ignore=DL3041
RUN microdnf install -y --nodocs --setopt=install_weak_deps=0 python3.12 \
    && microdnf clean all
# The wheels and the script are mounted for this step only: neither stays in a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,source=scripts/image-steps.sh,target=/usr/local/libexec/image-steps.sh \
    PYTHON=python3.12 bash /usr/local/libexec/image-steps.sh install /wheels /opt/ebs-exporter
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

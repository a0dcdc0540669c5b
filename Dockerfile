# transfer-gateway: multi-stage build on a slim Python base; runs as a non-root, numeric user.
#
# The base image is named by tag, not digest: no image registry is reachable from where this
# file is written and checked (CI lints it with hadolint; no image is built there), and a digest
# that nobody could verify would be worse than none. Pin it where you build, e.g.
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> .
# with the digest from `docker buildx imagetools inspect python:3.11-slim-bookworm`, and let a
# dependency bot move it. The tag names the Debian release, so a rebuild cannot change it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY gateway ./gateway
# Runtime dependencies only (no [dev] extras), pinned by constraints.txt, into a venv to copy.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt .

FROM ${PYTHON_IMAGE}
# A numeric user and group: Kubernetes' runAsNonRoot can only check a numeric USER.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home gateway
COPY --from=build /opt/venv /opt/venv
# For reference only: the CMD names no config file. Mount yours and point
# TRANSFER_GATEWAY_CONFIG at it (compose.yaml does); the HEALTHCHECK reads the same one.
COPY gateway.example.toml /usr/share/transfer-gateway/gateway.example.toml
ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1
USER 10001:10001
# gRPC and HTTP faces (their defaults; set http_port / grpc_port in the config or environment).
EXPOSE 50051 8080
# `transfer-gateway healthcheck` asks /healthz (open, no token) on the HTTP port and with the
# TLS that the settings give (TRANSFER_GATEWAY_CONFIG and TRANSFER_GATEWAY_*), as serve reads
# them: change the port or turn on TLS there, not with serve's flags, and the check follows.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["transfer-gateway", "healthcheck"]
ENTRYPOINT ["transfer-gateway"]
# All interfaces: the settings must name auth.callers, or the gateway refuses to start (and
# says so in one line).
CMD ["serve", "--grpc-host", "0.0.0.0", "--http-host", "0.0.0.0"]

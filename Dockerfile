# transfer-gateway: multi-stage build on a slim Python base; runs as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY gateway ./gateway
# Runtime dependencies only (no [dev] extras), pinned by constraints.txt, into a venv to copy.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home gateway
COPY --from=build /opt/venv /opt/venv
COPY gateway.example.toml /etc/transfer-gateway/gateway.example.toml
ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1
USER gateway
# gRPC and HTTP faces.
EXPOSE 50051 8080
# /healthz is open (no token needed); python is all the image has to ask it with.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["transfer-gateway"]
# All interfaces; the config must configure auth.callers, or the gateway refuses to start.
CMD ["serve", "--config", "/etc/transfer-gateway/gateway.toml", "--grpc-host", "0.0.0.0", "--http-host", "0.0.0.0"]

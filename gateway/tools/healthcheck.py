"""`transfer-gateway healthcheck`: ask this machine's gateway for /healthz, on the port and with
the TLS its settings give (the container's HEALTHCHECK)."""

from __future__ import annotations

import http.client
import socket
import ssl

from gateway.config import Settings

#: A probe that takes longer than this counts as a failure (Docker's own timeout is longer).
TIMEOUT_SECONDS = 2.0
#: What "listen on every interface" binds; the probe asks loopback instead.
_ANY = ("0.0.0.0", "::", "")


def probe(settings: Settings) -> str | None:
    """None when the gateway answers /healthz with 200, else what went wrong (one line)."""
    host = settings.http_host
    if host in _ANY:
        host = "::1" if host == "::" else "127.0.0.1"
    port = settings.http_port
    scheme = "https" if settings.tls.enabled else "http"
    where = f"{scheme}://{host}:{port}/healthz"
    context = None
    if settings.tls.enabled:
        # A liveness probe over loopback: it checks that the gateway answers, not who it is,
        # so the certificate is not verified (it names the service, not 127.0.0.1).
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        if settings.tls.client_ca_file and context is not None:
            _handshake(host, port, context)
            return None
        connection = (
            http.client.HTTPSConnection(host, port, timeout=TIMEOUT_SECONDS, context=context)
            if context is not None
            else http.client.HTTPConnection(host, port, timeout=TIMEOUT_SECONDS)
        )
        try:
            connection.request("GET", "/healthz")
            status = connection.getresponse().status
        finally:
            connection.close()
    except ssl.SSLError as exc:
        return f"{where}: TLS failed: {exc}"
    except OSError as exc:
        return f"{where}: {exc.strerror or exc}"
    return None if status == 200 else f"{where}: answered {status}"


def _handshake(host: str, port: int, context: ssl.SSLContext) -> None:
    """Mutual TLS: the gateway refuses any request from a client without a certificate, and
    the probe has none. What it can see is the TLS 1.3 handshake, which the gateway's event
    loop completes (its Finished message) before it looks for the client's certificate: a
    completed handshake says the loop answers."""
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with (
        socket.create_connection((host, port), timeout=TIMEOUT_SECONDS) as raw,
        context.wrap_socket(raw, server_hostname=host),  # the handshake happens here
    ):
        pass


__all__ = ["probe"]

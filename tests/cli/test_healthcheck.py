"""`transfer-gateway healthcheck` (the image's HEALTHCHECK) follows the settings' port and TLS."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest
import trustme

from gateway.config import AuthSettings, CallerSettings, TlsSettings
from gateway.faces.auth import hash_token
from tests.support.gateways import GatewayFactory

CLI = str(Path(sys.executable).with_name("transfer-gateway"))
#: With TLS on, the gateway wants callers (TLS alone is no reason to open it, but the tests'
#: gateways listen on loopback anyway: one caller keeps the settings those of a real setup).
AUTH = AuthSettings(
    callers=(
        CallerSettings(
            "ops",
            hash_token("healthcheck-token-7"),
        ),
    )
)


async def _healthcheck(**env: str) -> tuple[int, str]:
    """Run the command with TRANSFER_GATEWAY_* `env` only; exit code and stderr."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFER_GATEWAY_")}
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "healthcheck",
        env={**clean, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    """A server certificate for 127.0.0.1 and its CA, as PEM files."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = {
        "ca": ca.cert_pem,
        "cert": server.cert_chain_pems[0],
        "key": server.private_key_pem,
    }
    out = {}
    for name, blob in files.items():
        path = tmp_path / f"{name}.pem"
        blob.write_to_path(str(path))
        out[name] = str(path)
    return out


class TestHealthcheck:
    async def test_it_asks_the_port_the_environment_gives(
        self, gateway_factory: GatewayFactory
    ) -> None:
        """TRANSFER_GATEWAY_HTTP_PORT names the port: exit 0 there, and exit 1 with one line
        naming the URL when nothing listens on the port it names."""
        app = await gateway_factory()
        code, err = await _healthcheck(TRANSFER_GATEWAY_HTTP_PORT=str(app.http_port))
        assert (code, err) == (0, "")

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        code, err = await _healthcheck(TRANSFER_GATEWAY_HTTP_PORT=str(closed))
        assert code == 1
        (line,) = err.strip().splitlines()
        assert f"http://127.0.0.1:{closed}/healthz" in line

    async def test_it_reads_the_config_file_serve_reads(
        self, gateway_factory: GatewayFactory, tmp_path: Path
    ) -> None:
        """TRANSFER_GATEWAY_CONFIG's http_port is the port asked, as it is the one served."""
        app = await gateway_factory()
        config = tmp_path / "gateway.toml"
        config.write_text(f"http_port = {app.http_port}\n")
        code, err = await _healthcheck(TRANSFER_GATEWAY_CONFIG=str(config))
        assert (code, err) == (0, "")

    async def test_it_speaks_tls_when_the_gateway_does(
        self, gateway_factory: GatewayFactory, tls_files: dict[str, str]
    ) -> None:
        """With tls.cert_file set the probe is https (a plain-http probe of the same port
        fails: the check would have reported a healthy TLS gateway dead)."""
        tls = TlsSettings(cert_file=tls_files["cert"], key_file=tls_files["key"])
        app = await gateway_factory(tls=tls, auth=AUTH)
        port = str(app.http_port)
        code, err = await _healthcheck(
            TRANSFER_GATEWAY_HTTP_PORT=port,
            TRANSFER_GATEWAY_TLS__CERT_FILE=tls_files["cert"],
            TRANSFER_GATEWAY_TLS__KEY_FILE=tls_files["key"],
        )
        assert (code, err) == (0, "")
        code, _ = await _healthcheck(TRANSFER_GATEWAY_HTTP_PORT=port)
        assert code == 1

    async def test_mutual_tls_refusing_the_probe_still_says_alive(
        self, gateway_factory: GatewayFactory, tls_files: dict[str, str]
    ) -> None:
        """With mutual TLS the gateway refuses a probe that has no client certificate; that
        refusal (made by the gateway's event loop) counts as alive: exit 0."""
        tls = TlsSettings(
            cert_file=tls_files["cert"], key_file=tls_files["key"], client_ca_file=tls_files["ca"]
        )
        app = await gateway_factory(tls=tls, auth=AUTH)
        code, err = await _healthcheck(
            TRANSFER_GATEWAY_HTTP_PORT=str(app.http_port),
            TRANSFER_GATEWAY_TLS__CERT_FILE=tls_files["cert"],
            TRANSFER_GATEWAY_TLS__KEY_FILE=tls_files["key"],
            TRANSFER_GATEWAY_TLS__CLIENT_CA_FILE=tls_files["ca"],
        )
        assert (code, err) == (0, "")

    async def test_bad_settings_are_unhealthy_not_docker_reserved(self) -> None:
        """Settings that do not load: exit 1 (unhealthy) naming the key; Docker reserves 2."""
        code, err = await _healthcheck(TRANSFER_GATEWAY_HTTP_PORT="eighty")
        assert code == 1
        assert "TRANSFER_GATEWAY_HTTP_PORT" in err

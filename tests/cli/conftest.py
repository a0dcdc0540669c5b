"""Command-line fixtures: real gateways on loopback ports for the `stop` command to call."""

from __future__ import annotations

from tests.e2e.conftest import gateway, gateway_factory

__all__ = ["gateway", "gateway_factory"]

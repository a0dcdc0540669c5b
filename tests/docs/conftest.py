"""Docs fixtures: real gateways on loopback ports for the README's command lines to reach."""

from __future__ import annotations

from tests.e2e.conftest import gateway_factory

__all__ = ["gateway_factory"]

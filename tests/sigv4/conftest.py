"""Fixtures: the end-to-end gateway factory (a real gateway over its embedded emulator)."""

from tests.e2e.conftest import gateway_factory

__all__ = ["gateway_factory"]

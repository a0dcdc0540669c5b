"""The embedded AWS Transfer Family emulator, the gateway's default upstream (docs/emulator.md)."""

from gateway.emulator.server import Emulator, run_emulator

__all__ = ["Emulator", "run_emulator"]

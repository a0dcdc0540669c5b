"""Leak counters for tests: the sockets and asyncio tasks this process holds now."""

from __future__ import annotations

import asyncio
import os


def open_sockets() -> int:
    """Sockets this process holds open now (Linux: /proc/self/fd)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue  # the fd closed while we looked
    return count


def live_tasks() -> int:
    """Tasks of the running loop (the caller's included)."""
    return len(asyncio.all_tasks())

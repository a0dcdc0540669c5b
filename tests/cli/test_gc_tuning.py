"""A serving process tunes its garbage collector once started (gateway/process.py): checked in a
fresh interpreter, so the test process keeps CPython's own settings."""

from __future__ import annotations

import json
import subprocess
import sys

from gateway.process import YOUNG_THRESHOLD

PROBE = """
import gc, json
from gateway.process import tune_gc
before = gc.get_threshold()
import botocore.session
botocore.session.get_session().get_service_model("transfer")  # start-up's long-lived objects
tune_gc()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_start_up_is_frozen_and_young_collections_are_rarer() -> None:
    """What start-up made is out of later collections, young collections wait for 10,000 net
    allocations instead of 700, and the older generations keep CPython's thresholds."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(out.stdout)
    assert seen["before"][0] == 700
    assert seen["after"] == [YOUNG_THRESHOLD, *seen["before"][1:]]
    assert seen["frozen"] > 10_000

"""Upstream budgets: the Limiter the core depends on, and the buckets behind it."""

from gateway.limiting.base import Bucket, BucketStatus, Limiter, Penalty, Priority, RateFor
from gateway.limiting.fallback import FallbackBuckets, FallbackMode, StoreState
from gateway.limiting.local import LocalBuckets
from gateway.limiting.queue import QueuedLimiter
from gateway.limiting.redis import OUTAGE_ERRORS, RedisBuckets

__all__ = [
    "OUTAGE_ERRORS",
    "Bucket",
    "BucketStatus",
    "FallbackBuckets",
    "FallbackMode",
    "Limiter",
    "LocalBuckets",
    "Penalty",
    "Priority",
    "QueuedLimiter",
    "RateFor",
    "RedisBuckets",
    "StoreState",
]

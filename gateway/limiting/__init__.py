"""Upstream budgets: the Limiter the core depends on, and the buckets behind it."""

from gateway.limiting.base import Bucket, BucketStatus, Limiter, Priority, RateFor
from gateway.limiting.local import LocalBuckets
from gateway.limiting.queue import QueuedLimiter

__all__ = [
    "Bucket",
    "BucketStatus",
    "Limiter",
    "LocalBuckets",
    "Priority",
    "QueuedLimiter",
    "RateFor",
]

"""Tests of the budget buckets: local, Redis, and the fallback between them."""

"""The replica settings: flags of `serve`, and values refused at start naming the setting."""

from __future__ import annotations

import pytest

from gateway.cli import build_parser
from gateway.config import Settings, SettingsError


class TestServeFlags:
    """`serve` takes the replica flags (they map to the settings of the same names)."""

    def test_redis_flags(self) -> None:
        """--limiter, --redis-*, --expected-replicas and --upstream-endpoint are read."""
        args = build_parser().parse_args(
            [
                *("serve", "--limiter", "redis", "--redis-url", "redis://10.0.0.1:6380/2"),
                *("--redis-prefix", "prod", "--redis-outage", "degrade"),
                *("--expected-replicas", "3", "--upstream-endpoint", "http://127.0.0.1:4566"),
            ]
        )
        assert args.limiter == "redis"
        assert args.redis_url == "redis://10.0.0.1:6380/2"
        assert args.redis_prefix == "prod"
        assert args.redis_outage == "degrade"
        assert args.expected_replicas == 3
        assert args.upstream_endpoint == "http://127.0.0.1:4566"

    def test_defaults_are_one_local_replica(self) -> None:
        """Without flags: local buckets, fail-closed if Redis is ever chosen, one replica."""
        args = build_parser().parse_args(["serve"])
        assert (args.limiter, args.redis_outage, args.expected_replicas) == (
            "local",
            "fail_closed",
            1,
        )
        assert Settings().limiter == "local"

    def test_bad_choice_is_refused(self) -> None:
        """An unknown outage mode is refused by the parser (exit status 2)."""
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["serve", "--redis-outage", "fail-open"])
        assert exited.value.code == 2


class TestValidation:
    """Settings that cannot work are refused when built, naming the key."""

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("limiter", "memcached"),
            ("redis_url", "http://127.0.0.1:6379"),
            ("redis_prefix", "a{b}"),
            ("redis_outage", "fail-open"),
            ("expected_replicas", 0),
            ("redis_probe_seconds", 0.0),
            ("stop_lease_seconds", -1.0),
            ("watch_lease_seconds", 0.0),
        ],
    )
    def test_refused(self, key: str, value: object) -> None:
        """Each bad value raises SettingsError with the key in the message."""
        with pytest.raises(SettingsError, match=key):
            Settings(**{key: value})  # type: ignore[arg-type]

"""Settings loading: TOML file, TRANSFER_GATEWAY_* overrides, flags on top, errors naming keys."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway import cli
from gateway.config import Settings, SettingsError
from gateway.config_file import load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "gateway.example.toml"


def _keys(cls: type[Any], prefix: str = "") -> list[str]:
    """Every settings key as a dotted path (tables recursed, lists of tables by their fields)."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(default):
            out += _keys(type(default), path + ".")
        else:
            out.append(path)
    return out


class TestExampleFile:
    def test_the_example_file_loads(self) -> None:
        """gateway.example.toml is valid: it loads into Settings with its accounts and callers
        (given the secret its AWS key names in the environment)."""
        secret = "example-secret-0123456789"
        settings = load_settings(EXAMPLE, {"OPS_AWS_SECRET_ACCESS_KEY": secret})
        assert settings.auth.callers[0].aws_keys[0].secret == secret
        assert [a.account_id for a in settings.accounts] == ["000000000000", "111111111111"]
        assert [c.name for c in settings.auth.callers] == ["ops", "billing"]

    def test_the_example_and_the_docs_name_every_key(self) -> None:
        """Every settings key appears in the example (set or commented) and in
        docs/configuration.md, so a new key cannot go undocumented."""
        example = EXAMPLE.read_text()
        docs = (ROOT / "docs" / "configuration.md").read_text()
        missing_example = [k for k in _keys(Settings) if k.rsplit(".", 1)[-1] not in example]
        missing_docs = [k for k in _keys(Settings) if f"`{k}`" not in docs]
        assert missing_example == []
        assert missing_docs == []


class TestLayers:
    def test_environment_beats_the_file_and_flags_beat_both(self, tmp_path: Path) -> None:
        """File sets rate 3 and burst 4; the environment sets rate 5; a flag sets burst 6."""
        path = tmp_path / "g.toml"
        path.write_text("[core.budget]\nrate = 3.0\nburst = 4\n")
        settings = load_settings(
            path, {"TRANSFER_GATEWAY_CORE__BUDGET__RATE": "5"}, {"core.budget.burst": 6}
        )
        assert (settings.core.budget.rate, settings.core.budget.burst) == (5.0, 6)

    def test_lists_of_tables_come_from_json_in_the_environment(self) -> None:
        """TRANSFER_GATEWAY_ACCOUNTS holds JSON; booleans read true/false words."""
        settings = load_settings(
            None,
            {
                "TRANSFER_GATEWAY_ACCOUNTS": '[{"account_id": "111111111111", "rate": 2}]',
                "TRANSFER_GATEWAY_AUTH__METRICS_REQUIRE_AUTH": "true",
            },
        )
        assert settings.accounts[0].rate == 2.0
        assert settings.auth.metrics_require_auth is True

    def test_serve_flags_override_the_file_only_when_given(self, tmp_path: Path) -> None:
        """`serve --config F --burst 7`: burst from the flag, rate from the file (the --rate
        flag's default does not override it)."""
        path = tmp_path / "g.toml"
        path.write_text("[core.budget]\nrate = 3.0\n")
        argv = ["serve", "--config", str(path), "--burst", "7"]
        parser = cli.build_parser()
        args = parser.parse_args(argv)
        given = cli.given_flags(cli._subparser(parser, "serve"), argv)
        settings = cli.load_serve_settings(args, given, {})
        assert (settings.core.budget.rate, settings.core.budget.burst) == (3.0, 7)

    def test_every_serve_flag_maps_to_a_setting(self) -> None:
        """A new `serve` flag must say which setting it overrides (cli.SERVE_FLAG_KEYS), and
        that setting must exist."""
        serve = cli._subparser(cli.build_parser(), "serve")
        dests = {a.dest for a in serve._actions} - cli._SERVE_NOT_SETTINGS
        assert sorted(dests - set(cli.SERVE_FLAG_KEYS)) == []
        keys = set(_keys(Settings))
        assert sorted(set(cli.SERVE_FLAG_KEYS.values()) - keys) == []


class TestErrors:
    @pytest.mark.parametrize(
        ("toml", "named"),
        [
            ('[core.budget]\nrate = "fast"\n', "core.budget.rate"),
            ("[core.budget]\nrate = -1\n", "core.budget.rate"),
            ("grpc_prot = 1\n", "grpc_prot"),
            (
                '[[accounts]]\naccount_id = "111111111111"\n[[accounts]]\naccount_id = "12"\n',
                "accounts[1].account_id",
            ),
            (
                '[[accounts]]\naccount_id = "111111111111"\nrole_arn = "nope"\n',
                "accounts[0].role_arn",
            ),
            (
                '[[auth.callers]]\nname = "x"\ntoken_sha256 = "plain-token"\n',
                "auth.callers[0].token_sha256",
            ),
            ('[tls]\ncert_file = "/no/such.pem"\nkey_file = "/no/such.pem"\n', "tls.cert_file"),
            ('upstream = "cloud"\n', "upstream"),
        ],
    )
    def test_a_bad_value_names_its_key(self, tmp_path: Path, toml: str, named: str) -> None:
        """Wrong types, out-of-range values, unknown keys and bad list items are refused at
        start-up with the full key path."""
        path = tmp_path / "g.toml"
        path.write_text(toml)
        with pytest.raises(SettingsError, match=named.replace("[", r"\[").replace("]", r"\]")):
            load_settings(path, {})

    def test_a_bad_environment_value_names_the_variable(self) -> None:
        """The operator must fix an environment variable: the error names it."""
        with pytest.raises(SettingsError, match="TRANSFER_GATEWAY_GRPC_PORT"):
            load_settings(None, {"TRANSFER_GATEWAY_GRPC_PORT": "http"})

    def test_broken_toml_names_the_file(self, tmp_path: Path) -> None:
        """A syntax error names the file and the line."""
        path = tmp_path / "broken.toml"
        path.write_text("rate = = 3\n")
        with pytest.raises(SettingsError, match=r"broken\.toml.*line 1"):
            load_settings(path, {})
        with pytest.raises(SettingsError, match="no such file"):
            load_settings(tmp_path / "absent.toml", {})

    def test_no_auth_refuses_a_non_loopback_address(self) -> None:
        """With no callers configured, 0.0.0.0 is refused naming the key, unless
        auth.allow_unauthenticated says so; with callers it is fine."""
        with pytest.raises(SettingsError, match="grpc_host"):
            load_settings(None, {}, {"grpc_host": "0.0.0.0"})
        allowed = load_settings(
            None, {}, {"http_host": "0.0.0.0", "auth.allow_unauthenticated": True}
        )
        assert allowed.http_host == "0.0.0.0"
        authed = load_settings(
            None,
            {
                "TRANSFER_GATEWAY_AUTH__CALLERS": '[{"name": "ops", "token_sha256": "'
                + "a" * 64
                + '"}]'
            },
            {"grpc_host": "0.0.0.0", "http_host": "0.0.0.0"},
        )
        assert authed.auth.enabled

    def test_the_example_is_plain_toml(self) -> None:
        """The example parses with tomllib alone (no templating in it)."""
        assert isinstance(tomllib.loads(EXAMPLE.read_text()), dict)

"""Callers' AWS keys in the settings: the secret comes from a variable or a file, never inline,
and every mistake is named by its key without showing the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Settings, SettingsError
from gateway.config_file import load_settings

SECRET = "loaded-secret-0123456789abcdef"

_CALLER = """
[[auth.callers]]
name = "ops"
accounts = ["111111111111"]

[[auth.callers.aws_keys]]
access_key_id = "AKIAGATEWAYOPS000001"
account = "111111111111"
"""


def _load(tmp_path: Path, key_lines: str, environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "g.toml"
    path.write_text(_CALLER + key_lines)
    return load_settings(path, environ or {})


class TestSecretSources:
    def test_the_secret_comes_from_the_named_variable(self, tmp_path: Path) -> None:
        """secret_env names a variable of the environment the settings are loaded from."""
        settings = _load(tmp_path, 'secret_env = "OPS_AWS_SECRET"\n', {"OPS_AWS_SECRET": SECRET})
        (key,) = settings.auth.callers[0].aws_keys
        assert (key.account, key.secret) == ("111111111111", SECRET)

    def test_the_secret_comes_from_a_file(self, tmp_path: Path) -> None:
        """secret_file is read once at start, surrounding whitespace (a final newline) ignored."""
        secret_file = tmp_path / "secret"
        secret_file.write_text(SECRET + "\n")
        settings = _load(tmp_path, f'secret_file = "{secret_file}"\n')
        assert settings.auth.callers[0].aws_keys[0].secret == SECRET

    def test_an_inline_secret_is_refused(self, tmp_path: Path) -> None:
        """`secret = ...` in the file is refused, naming the key and what to use instead."""
        with pytest.raises(SettingsError) as caught:
            _load(tmp_path, f'secret = "{SECRET}"\n')
        message = str(caught.value)
        assert "auth.callers[0].aws_keys[0].secret" in message
        assert "secret_env or secret_file" in message
        assert SECRET not in message

    @pytest.mark.parametrize(
        ("lines", "environ", "names"),
        [
            ('secret_env = "OPS_AWS_SECRET"\n', {}, "aws_keys[0].secret_env='OPS_AWS_SECRET'"),
            ('secret_file = "/nonexistent/secret"\n', {}, "aws_keys[0].secret_file="),
            ("", {}, "needs its secret"),
            ('secret_env = "OPS_AWS_SECRET"\n', {"OPS_AWS_SECRET": "short"}, "16 characters"),
        ],
        ids=["unset-variable", "missing-file", "no-source", "too-short"],
    )
    def test_a_missing_or_weak_secret_stops_the_start(
        self, tmp_path: Path, lines: str, environ: dict[str, str], names: str
    ) -> None:
        """An unset variable, an unreadable file, no source or a short secret: SettingsError
        naming the key (and the variable or file), never the value."""
        with pytest.raises(SettingsError) as caught:
            _load(tmp_path, lines, environ)
        assert names in str(caught.value)
        assert "short" not in str(caught.value).replace("16 characters", "")

    def test_a_key_for_an_account_the_caller_may_not_use_is_refused(self, tmp_path: Path) -> None:
        """A key is bound to one of its caller's accounts; another account is refused at start."""
        path = tmp_path / "g.toml"
        path.write_text(
            _CALLER.replace('account = "111111111111"', 'account = "222222222222"')
            + 'secret_env = "S"\n'
        )
        with pytest.raises(SettingsError, match=r"auth\.callers\[0\]\.aws_keys"):
            load_settings(path, {"S": SECRET})

    def test_access_key_ids_are_unique_across_callers(self, tmp_path: Path) -> None:
        """Two callers cannot share an access key id (it names the caller)."""
        second = _CALLER.replace('name = "ops"', 'name = "other"')
        path = tmp_path / "g.toml"
        path.write_text(_CALLER + 'secret_env = "S"\n' + second + 'secret_env = "S"\n')
        with pytest.raises(SettingsError, match="access key ids must be unique"):
            load_settings(path, {"S": SECRET})

"""Loads Settings once: TOML file, then TRANSFER_GATEWAY_* environment, then flags on top."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from gateway.config import Settings, SettingsError

ENV_PREFIX = "TRANSFER_GATEWAY_"
#: `serve --config` may also come from here (handy in containers).
CONFIG_ENV = ENV_PREFIX + "CONFIG"
#: Environment names join nested keys with a double underscore: TRANSFER_GATEWAY_CORE__BUDGET__RATE.
ENV_NESTING = "__"
#: Environment variables with this prefix that are not settings (read by the client).
_NOT_SETTINGS = frozenset({CONFIG_ENV, ENV_PREFIX + "TOKEN"})

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def load_settings(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """The one place settings are read. `overrides` are dotted keys (`core.budget.rate`) from
    flags. Any problem raises SettingsError naming the key (or file, or variable)."""
    merged: dict[str, Any] = {}
    if path is not None:
        _merge(merged, read_toml(Path(path)))
    for name, raw in sorted((environ or {}).items()):
        if name.startswith(ENV_PREFIX) and name not in _NOT_SETTINGS:
            keys = name.removeprefix(ENV_PREFIX).lower().split(ENV_NESTING)
            _merge(merged, _nest(keys, _EnvValue(raw, name)))
    for dotted, value in (overrides or {}).items():
        _merge(merged, _nest(dotted.split("."), value))
    return with_secrets(build(Settings, merged), environ or {})


def with_secrets(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """`settings` with every caller's AWS key secret read from the variable (in `environ`) or
    the file the key names; errors name the key's full path and the variable or file."""
    callers = []
    for i, caller in enumerate(settings.auth.callers):
        keys = []
        for j, key in enumerate(caller.aws_keys):
            try:
                keys.append(key.with_secret(environ))
            except SettingsError as exc:
                where = f"auth.callers[{i}].aws_keys[{j}].{exc.key}"
                raise SettingsError(
                    f"{where}={exc.value!r}: {exc.problem}",
                    key=where,
                    value=exc.value,
                    problem=exc.problem,
                ) from None
        callers.append(dataclasses.replace(caller, aws_keys=tuple(keys)))
    auth = dataclasses.replace(settings.auth, callers=tuple(callers))
    return dataclasses.replace(settings, auth=auth)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"config file {str(path)!r}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {str(path)!r}: not valid TOML: {exc}") from None


class _EnvValue:
    """A value from the environment: a string to be read as the key's type, and its name for
    errors (which name the variable, since that is what the operator has to fix)."""

    __slots__ = ("name", "raw")

    def __init__(self, raw: str, name: str) -> None:
        self.raw = raw
        self.name = name


def _nest(keys: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for key in reversed(keys):
        out = {key: out}
    return typing.cast(dict[str, Any], out)


def _merge(into: dict[str, Any], more: Mapping[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


_T = typing.TypeVar("_T")


def build(cls: type[_T], values: Mapping[str, Any], path: str = "") -> _T:
    """A settings dataclass from a mapping of plain values, every key checked against its type;
    errors name the full key path (`core.budget.rate`, `accounts[1].role_arn`)."""
    if not isinstance(values, Mapping):
        raise SettingsError(f"{path or 'settings'}: must be a table, got {_shown(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        names = ", ".join(_key(path, u) for u in unknown)
        raise SettingsError(f"unknown setting(s): {names} (see docs/configuration.md)")
    for name in values:
        # Some fields are filled in by the loader only (a secret from its variable or file).
        refused = fields[name].metadata.get("not_inline")
        if refused:
            raise SettingsError(f"{_key(path, name)}: may not be set here: {refused}")
    kwargs = {name: _coerce(value, hints[name], _key(path, name)) for name, value in values.items()}
    missing = [
        _key(path, f.name)
        for f in fields.values()
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SettingsError(f"missing setting(s): {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except SettingsError as exc:
        if not exc.key:
            raise
        where = _key(path, exc.key)
        raise SettingsError(
            f"{where}={exc.value!r}: {exc.problem}", key=where, value=exc.value, problem=exc.problem
        ) from None


def _key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` as type `tp`: TOML values must already have the type; environment strings are
    parsed (numbers, booleans, comma lists, JSON for tables and lists of tables)."""
    env = value if isinstance(value, _EnvValue) else None
    where = f"{key} (from {env.name})" if env else key
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None or (env is not None and env.raw == ""):
            return None
        return _coerce(value, inner[0], key)
    # Tables and lists of tables have no flat spelling: in the environment they are JSON.
    tabular = dataclasses.is_dataclass(tp) or (
        origin is tuple and dataclasses.is_dataclass(args[0])
    )
    if env is not None and (tabular or _is_mapping(origin)):
        value, env = _json(env, where), None
    if dataclasses.is_dataclass(tp):
        return build(typing.cast(type[Any], tp), value, key)
    if origin is tuple:
        if env is not None:
            items: Any = [part.strip() for part in env.raw.split(",") if part.strip()]
        elif isinstance(value, list | tuple):
            items = value
        else:
            raise SettingsError(f"{where}: must be a list, got {_shown(value)}")
        return tuple(_coerce(item, args[0], f"{key}[{i}]") for i, item in enumerate(items))
    if _is_mapping(origin):
        if not isinstance(value, Mapping):
            raise SettingsError(f"{where}: must be a table, got {_shown(value)}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if origin is Literal:
        raw = env.raw if env else value
        if raw not in args:
            choices = ", ".join(repr(a) for a in args)
            raise SettingsError(f"{where}={_shown(raw)}: must be one of {choices}")
        return raw
    return _scalar(value, env, tp, where)


def _is_mapping(origin: Any) -> bool:
    return isinstance(origin, type) and issubclass(origin, Mapping)


def _json(env: _EnvValue, where: str) -> Any:
    try:
        return json.loads(env.raw)
    except ValueError as exc:
        raise SettingsError(f"{where}: must be JSON here: {exc}") from None


def _scalar(value: Any, env: _EnvValue | None, tp: Any, where: str) -> Any:
    if tp is bool:
        if env is not None:
            word = env.raw.strip().lower()
            if word in _TRUE | _FALSE:
                return word in _TRUE
        elif isinstance(value, bool):
            return value
        raise SettingsError(f"{where}={_shown(env.raw if env else value)}: must be true or false")
    if tp is int or tp is float:
        noun = "an integer" if tp is int else "a number"
        if env is not None:
            try:
                return tp(env.raw)
            except ValueError:
                raise SettingsError(f"{where}={_shown(env.raw)}: must be {noun}") from None
        # TOML's booleans are not numbers, and an integer key takes no fraction.
        ok = isinstance(value, int) if tp is int else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            raise SettingsError(f"{where}={_shown(value)}: must be {noun}")
        return tp(value)
    if tp is str:
        if env is not None:
            return env.raw
        if not isinstance(value, str):
            raise SettingsError(f"{where}={_shown(value)}: must be a string")
        return value
    raise TypeError(f"settings type {tp!r} of {where} has no reader: teach config_file")


__all__ = ["CONFIG_ENV", "ENV_PREFIX", "build", "load_settings", "read_toml", "with_secrets"]

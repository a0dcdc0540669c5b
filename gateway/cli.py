"""The `transfer-gateway` command line: emulator, serve, stop, start and bench sub-commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from gateway.config import (
    DEFAULT_EMULATOR_ACCOUNT,
    DEFAULT_REGION,
    BudgetSettings,
    Settings,
    SettingsError,
)
from gateway.emulator.flags import EMULATOR_FLAGS, add_emulator_flags, emulator_settings_from


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations: `--lim redis` is refused, naming the flag it may mean.

    argparse's prefix matching would take `--lim` for `--limiter`, but which flags were given
    is decided from the spelled-out names (given_flags), so an abbreviated flag would be parsed
    and then silently dropped. Sub-commands are made with this class too (add_subparsers uses
    the parent's class), so every one of them refuses abbreviations."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # Kept for error(): the hint names the flags of the sub-command that was asked for.
        self._words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        options = _option_strings(self, getattr(self, "_words", []))
        hints = []
        for word in re.findall(r"(?<![\w-])(--[\w-]+)", message):
            meant = sorted(o for o in options if o.startswith(word) and o != word)
            if meant:
                hints.append(
                    f"{word} is not a flag (abbreviations are refused): did you mean "
                    + " or ".join(meant)
                    + "?"
                )
        super().error("; ".join([message, *hints]))


def _option_strings(parser: argparse.ArgumentParser, words: Sequence[str]) -> set[str]:
    """The option strings of `parser` and of the sub-command named in `words`."""
    options: set[str] = set()
    for action in parser._actions:  # argparse has no public list of a parser's actions
        options.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for name in words:
                if name in action.choices:
                    options |= _option_strings(action.choices[name], words)
                    break
    return options


def _version() -> str:
    """The installed distribution's version (what pip shows), else the package's own."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transfer-gateway")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from gateway import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="transfer-gateway",
        description="A budgeted gRPC/HTTP gateway for the AWS Transfer Family StopServer API.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version"
    )
    sub = parser.add_subparsers(
        dest="command", required=True, help="what to run (`transfer-gateway COMMAND --help`)"
    )

    emu = sub.add_parser("emulator", help="run the embedded AWS Transfer Family emulator alone")
    emu.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    emu.add_argument(
        "--port", type=int, default=4566, help="port to listen on (default: %(default)s)"
    )
    emu.add_argument(
        "--allow-remote",
        action="store_true",
        help="listen beyond loopback (the emulator has no authentication: whoever reaches it"
        " may stop, delete or reset every server)",
    )
    add_emulator_flags(emu)

    serve = sub.add_parser("serve", help="run the gateway (with the embedded emulator by default)")
    serve.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML settings (see gateway.example.toml); environment TRANSFER_GATEWAY_* and"
        " the flags given here override it",
    )
    serve.add_argument(
        "--grpc-host", default="127.0.0.1", help="gRPC address (default: %(default)s)"
    )
    serve.add_argument(
        "--grpc-port", type=int, default=50051, help="gRPC port (default: %(default)s)"
    )
    serve.add_argument(
        "--upstream",
        choices=("emulator", "aws"),
        default="emulator",
        help="emulator: the embedded emulator (default); aws: AWS, default credential chain",
    )
    budget = BudgetSettings()
    serve.add_argument(
        "--rate",
        type=float,
        default=budget.rate,
        help="upstream calls/s per account and region (default: %(default)s)",
    )
    serve.add_argument(
        "--burst", type=int, default=budget.burst, help="budget burst (default: %(default)s)"
    )
    serve.add_argument(
        "--account", default=DEFAULT_EMULATOR_ACCOUNT, help="default account (default: %(default)s)"
    )
    serve.add_argument(
        "--region", default=DEFAULT_REGION, help="default region (default: %(default)s)"
    )
    serve.add_argument(
        "--demo-servers",
        type=int,
        default=3,
        help="emulator servers to create at start (default: %(default)s)",
    )
    serve.add_argument(
        "--emulator-host", default="127.0.0.1", help="emulator address (default: %(default)s)"
    )
    serve.add_argument(
        "--emulator-port",
        type=int,
        default=4566,
        help="emulator port for AWS clients (default: %(default)s)",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        default=Settings.shutdown_grace_seconds,
        help="seconds open streams get to end on their own at SIGTERM (default: %(default)s)",
    )
    serve.add_argument(
        "--http-host", default=Settings.http_host, help="HTTP address (default: %(default)s)"
    )
    serve.add_argument(
        "--http-port", type=int, default=Settings.http_port, help="HTTP port (default: %(default)s)"
    )
    serve.add_argument(
        "--upstream-endpoint",
        default=None,
        metavar="URL",
        help="a Transfer endpoint to call instead of AWS's or the embedded emulator's, e.g. a"
        " standalone `transfer-gateway emulator` (with --upstream emulator: emulator credentials)",
    )
    serve.add_argument(
        "--limiter",
        choices=("local", "redis"),
        default=Settings.limiter,
        help="where budgets live: this process, or Redis shared by replicas (default: %(default)s)",
    )
    serve.add_argument(
        "--redis-url",
        default=Settings.redis_url,
        help="Redis for --limiter redis (default: %(default)s)",
    )
    serve.add_argument(
        "--redis-prefix",
        default=Settings.redis_prefix,
        help="Redis key prefix (default: %(default)s)",
    )
    serve.add_argument(
        "--redis-outage",
        choices=("fail_closed", "degrade"),
        default=Settings.redis_outage,
        help="while Redis is down: refuse upstream calls, or serve at rate / --expected-replicas"
        " (default: %(default)s)",
    )
    serve.add_argument(
        "--expected-replicas",
        type=int,
        default=Settings.expected_replicas,
        help="replicas sharing the budget (a degraded replica's share) (default: %(default)s)",
    )
    serve.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=Settings.log_format,
        help="json: one JSON object per line on stderr, for log pipelines; console: for people"
        " (default: %(default)s)",
    )
    serve.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=Settings.log_level,
        help="least severe log lines written (default: %(default)s)",
    )
    add_emulator_flags(serve, prefix="emulator-")

    for verb in ("stop", "start"):
        _add_change_parser(sub, verb)
    health = sub.add_parser(
        "healthcheck",
        help="exit 0 when this machine's gateway answers /healthz (the container's HEALTHCHECK):"
        " port and TLS from the same settings as serve (--config / TRANSFER_GATEWAY_*)",
    )
    health.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML settings, as for serve (default: $TRANSFER_GATEWAY_CONFIG)",
    )
    from gateway.tools import jobs  # the fleet-job commands live beside their client

    jobs.add_parser(sub, connection_flags)
    from gateway.tools import bench  # its flags live beside the load generator

    bench.add_parser(sub)
    return parser


def _add_change_parser(sub: Any, verb: str) -> None:
    """The `stop` command, or its twin `start`: the same flags, the other RPC."""
    stop = sub.add_parser(
        verb,
        help=f"{verb} servers through a running gateway: one live line per server, then a summary",
    )
    stop.add_argument("server_id", nargs="+", help="one or more server ids (s-...)")
    stop.add_argument("--account", default="", help="12-digit account (default: the gateway's)")
    stop.add_argument("--region", default="", help="region (default: the gateway's)")
    stop.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    connection_flags(stop, json_help="one JSON object per update")


def connection_flags(parser: Any, *, json_help: str = "JSON output, one object a line") -> None:
    """How a client command reaches the gateway: target, token, TLS; and --json."""
    parser.add_argument(
        "--token",
        default=None,
        help="bearer token (default: $TRANSFER_GATEWAY_TOKEN; the variable keeps it out of"
        " shell history and process lists)",
    )
    parser.add_argument("--tls-ca", default=None, metavar="PEM", help="CA of the gateway's cert")
    parser.add_argument("--tls-cert", default=None, metavar="PEM", help="client cert (mutual TLS)")
    parser.add_argument("--tls-key", default=None, metavar="PEM", help="client key (mutual TLS)")
    parser.add_argument(
        "--tls-server-name", default=None, help="name the gateway's certificate carries"
    )
    parser.add_argument(
        "--target", default="127.0.0.1:50051", help="gateway host:port (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help=json_help)


#: `serve` flag (argparse dest) -> the setting it overrides. Flags win over the config file and
#: the environment only when given; every serve flag must be here (a test checks).
SERVE_FLAG_KEYS: dict[str, str] = {
    "grpc_host": "grpc_host",
    "grpc_port": "grpc_port",
    "http_host": "http_host",
    "http_port": "http_port",
    "upstream": "upstream",
    "upstream_endpoint": "endpoint_url",
    "rate": "core.budget.rate",
    "burst": "core.budget.burst",
    "account": "core.default_account",
    "region": "core.default_region",
    "demo_servers": "demo_servers",
    "emulator_host": "emulator.host",
    "emulator_port": "emulator.port",
    "shutdown_grace": "shutdown_grace_seconds",
    "limiter": "limiter",
    "redis_url": "redis_url",
    "redis_prefix": "redis_prefix",
    "redis_outage": "redis_outage",
    "expected_replicas": "expected_replicas",
    "log_format": "log_format",
    "log_level": "log_level",
    **{
        f"emulator_{n.replace('-', '_')}": f"emulator.{n.replace('-', '_')}"
        for n, _, _ in EMULATOR_FLAGS
    },
}
#: Serve options that are not settings.
_SERVE_NOT_SETTINGS = frozenset({"config", "help", "command"})


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The dests of the options written on the command line (not those left at default)."""
    given = set()
    for action in parser._actions:  # argparse has no public list of a parser's actions
        for option in action.option_strings:
            if any(arg == option or arg.startswith(option + "=") for arg in argv):
                given.add(action.dest)
    return given


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]  # type: ignore[no-any-return]
    raise LookupError(name)


def load_serve_settings(
    args: argparse.Namespace, given: set[str], environ: Mapping[str, str]
) -> Settings:
    """`serve`'s settings: the config file (--config or TRANSFER_GATEWAY_CONFIG), then the
    environment, then the flags that were given."""
    from gateway.config_file import CONFIG_ENV, load_settings

    overrides = {SERVE_FLAG_KEYS[d]: getattr(args, d) for d in given if d in SERVE_FLAG_KEYS}
    settings = load_settings(args.config or environ.get(CONFIG_ENV), environ, overrides)
    _refuse_inert_flags(settings, args, given)
    return settings


#: serve flags only the embedded emulator reads, and those only the Redis limiter reads.
_EMULATOR_DESTS = frozenset(
    {"demo_servers", "emulator_host", "emulator_port"}
    | {d for d in SERVE_FLAG_KEYS if d.startswith("emulator_")}
)
_REDIS_DESTS = frozenset({"redis_url", "redis_prefix", "redis_outage", "expected_replicas"})
#: Counts whose 0 asks for nothing, which is what a mode without an emulator does anyway
#: (`--upstream-endpoint URL --demo-servers 0` is how replicas are started, docs/replicas.md).
_NONE_ASKED = frozenset({"demo_servers", "emulator_seed"})


def _asks_for_something(dest: str, value: object) -> bool:
    """Whether the flag's value would change anything: not the default, not a 0 count."""
    default: object = Settings()
    for part in SERVE_FLAG_KEYS[dest].split("."):
        default = getattr(default, part)
    return value != default and not (dest in _NONE_ASKED and value == 0)


def _refuse_inert_flags(settings: Settings, args: argparse.Namespace, given: set[str]) -> None:
    """A flag written on the command line that this mode would ignore is an error, not a
    silent no-op (`--emulator-seed 3` with `--upstream aws` seeded nothing). Only flags, and
    only values that ask for something: a config file may well hold settings for modes that
    an environment variable switches between."""
    emulator_off = None
    if settings.upstream != "emulator":
        emulator_off = f"--upstream {settings.upstream}"
    elif settings.endpoint_url is not None:
        emulator_off = "an upstream endpoint (--upstream-endpoint, endpoint_url)"
    inert = []
    if emulator_off is not None:
        inert += [
            (
                d,
                f"{emulator_off}: only the embedded emulator reads it (--upstream emulator, no"
                " --upstream-endpoint); drop the flag",
            )
            for d in sorted(given & _EMULATOR_DESTS)
        ]
    if settings.limiter != "redis":
        inert += [
            (
                d,
                f"limiter = {settings.limiter}: only the Redis limiter reads it; add --limiter"
                " redis or drop the flag",
            )
            for d in sorted(given & _REDIS_DESTS)
        ]
    for dest, why in inert:
        if _asks_for_something(dest, getattr(args, dest)):
            raise SettingsError(f"--{dest.replace('_', '-')} does nothing with {why}")


async def _serve(settings: Settings) -> int:
    from gateway.app import GatewayApp
    from gateway.observability import configure_logging
    from gateway.process import tune_gc

    configure_logging(settings.log_level, settings.log_format)
    app = GatewayApp(settings)
    await app.start()
    tune_gc()  # after start-up: what it made lives as long as the process
    where = f"{settings.grpc_host}:{app.grpc_port}"
    print(
        f"transfer-gateway listening: grpc={where} http={settings.http_host}:{app.http_port}"
        f" upstream={settings.upstream} limiter={settings.limiter}",
        flush=True,
    )
    if not app.access.enabled:
        # The safe default, said out loud: nobody is asked who they are, so only this machine.
        print(
            "auth: off (no auth.callers configured): anyone who can reach the listening"
            " address may call; non-loopback addresses are refused unless"
            " auth.allow_unauthenticated = true",
            flush=True,
        )
    if app.emulator is not None:
        print(f"embedded emulator for AWS clients: {app.emulator.url}", flush=True)
        for server_id in app.demo_server_ids:
            print(f"demo server: {server_id}", flush=True)
        if app.demo_server_ids:
            print(
                f"try: .venv/bin/transfer-gateway stop {app.demo_server_ids[0]} --target {where}",
                flush=True,
            )
            print(
                f"try: curl -N -X POST http://{settings.http_host}:{app.http_port}"
                f"/v1/servers/{app.demo_server_ids[0]}:stop",
                flush=True,
            )
    await app.run_until_signal()
    return 0


async def _stop(args: argparse.Namespace) -> int:
    from gateway.tools.client import START, STOP, TlsOptions, open_channel, stop_many

    tls = TlsOptions(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    token = args.token or os.environ.get("TRANSFER_GATEWAY_TOKEN") or None
    async with open_channel(args.target, tls) as channel:
        report = await stop_many(
            channel,
            args.server_id,
            account_id=args.account,
            region=args.region,
            timeout=args.timeout,
            token=token,
            as_json=args.json,
            change=START if args.command == "start" else STOP,
        )
    failed = [line for line in report.lines if not line.ok]
    # One server: its last line is the outcome already (a summary would repeat it).
    if len(report.lines) > 1:
        print(report.summary(), file=sys.stderr if failed else sys.stdout, flush=True)
    return 1 if failed else 0


async def _jobs(args: argparse.Namespace) -> int:
    from gateway.tools import jobs
    from gateway.tools.client import TlsOptions, open_channel

    tls = TlsOptions(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    token = args.token or os.environ.get("TRANSFER_GATEWAY_TOKEN") or None
    async with open_channel(args.target, tls) as channel:
        return await jobs.run(args, channel, token)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "emulator":
            from gateway.emulator.server import run_emulator
            from gateway.startup import listening

            settings = emulator_settings_from(
                args, host=args.host, port=args.port, allow_remote=args.allow_remote
            )
            with listening("the emulator", args.host, args.port, flag="--port"):
                return asyncio.run(run_emulator(settings))
        if args.command == "serve":
            serve_parser = _subparser(parser, "serve")
            given = given_flags(serve_parser, list(argv if argv is not None else sys.argv[1:]))
            return asyncio.run(_serve(load_serve_settings(args, given, os.environ)))
        if args.command in ("stop", "start"):
            return asyncio.run(_stop(args))
        if args.command == "healthcheck":
            from gateway.config_file import CONFIG_ENV, load_settings
            from gateway.tools.healthcheck import probe

            try:
                served = load_settings(args.config or os.environ.get(CONFIG_ENV), os.environ)
                problem = probe(served)
            except SettingsError as exc:  # Docker reserves exit code 2: unhealthy is 1
                problem = str(exc)
            if problem is not None:
                print(f"transfer-gateway healthcheck: {problem}", file=sys.stderr)
            return 0 if problem is None else 1
        if args.command == "jobs":
            return asyncio.run(_jobs(args))
        if args.command == "bench":
            from gateway.tools import bench

            return asyncio.run(bench.main(args))
    except SettingsError as exc:
        print(f"transfer-gateway: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`stop ... --json | head -1`): end quietly, as `yes | head`
        # does. stdout goes to /dev/null so the interpreter's last flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by it
    except Exception as exc:
        from gateway.startup import StartupError

        if not isinstance(exc, StartupError):
            raise
        # A cause the operator can fix: one line, not a traceback.
        print(f"transfer-gateway: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2  # pragma: no cover - parser.error exits

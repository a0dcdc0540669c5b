"""Command-line flags: an abbreviated flag is refused (naming it) in every sub-command."""

from __future__ import annotations

import argparse

import pytest

from gateway import cli
from tests.support.commands import RunCli


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _parsers(child)
    return found


class TestAbbreviations:
    async def test_serve_refuses_an_abbreviated_limiter_flag(self, run_cli: RunCli) -> None:
        """`serve --lim redis` used to start with limiter=local (the flag parsed, then dropped):
        it exits 2 without serving, naming --lim and the flag it may mean."""
        code, out, err = await run_cli(
            "serve", "--grpc-port=0", "--http-port=0", "--emulator-port=0", "--lim", "redis"
        )
        assert code == 2
        assert "listening" not in out
        assert "--lim " in err
        assert "abbreviations are refused" in err
        assert "did you mean --limiter?" in err

    @pytest.mark.parametrize(
        ("argv", "meant"),
        [
            (("emulator", "--po", "0"), "--port"),
            (("stop", "s-0123456789abcdef0", "--tok", "x"), "--token"),
            (("bench", "--targ", "127.0.0.1:1"), "--target"),
            (("serve", "--grpc-po=0"), "--grpc-port"),
        ],
    )
    async def test_every_sub_command_refuses_abbreviations(
        self, run_cli: RunCli, argv: tuple[str, ...], meant: str
    ) -> None:
        """Each sub-command exits 2 on an abbreviated flag (with `=` or a separate value) and
        says which flag was probably meant."""
        code, _, err = await run_cli(*argv)
        assert code == 2
        assert f"did you mean {meant}?" in err

    def test_no_parser_in_the_tree_allows_abbreviations(self) -> None:
        """The top-level parser and every sub-command's parser have allow_abbrev off, so a
        sub-command added later cannot bring prefix matching back."""
        parsers = _parsers(cli.build_parser())
        assert len(parsers) >= 5
        assert [p.prog for p in parsers if p.allow_abbrev] == []

    def test_full_spellings_still_count_as_given(self) -> None:
        """`--limiter redis` and `--limiter=redis` are parsed and seen as given."""
        parser = cli.build_parser()
        serve = cli._subparser(parser, "serve")
        for argv in (["serve", "--limiter", "redis"], ["serve", "--limiter=redis"]):
            args = parser.parse_args(argv)
            assert args.limiter == "redis"
            assert "limiter" in cli.given_flags(serve, argv)

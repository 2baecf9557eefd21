"""Every command of `bcbridge`, found by walking the command tree (so commands added later are
covered without a list here): `--help` works, and a mistyped command or option name is a usage
error (exit 2) that says "Did you mean ...?" with the right name, never a traceback.

In-process through `bcbridge.cli.main`, as a user's shell would call it (SystemExit and all).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import typer

from bcbridge.cli import _register, app, main
from bcbridge.errors import (
    EXIT_BC,
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
)

DOCUMENTED = {EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BC, EXIT_BUSY, EXIT_INTERNAL, EXIT_INTERRUPTED}


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]  # () for the root
    options: tuple[str, ...]  # long option names, e.g. --company

    def __str__(self) -> str:
        return " ".join(("bcbridge", *self.path))


def _walk(command: object, path: tuple[str, ...]) -> Iterator[Command]:
    params = getattr(command, "params", [])
    options = sorted(
        {name for param in params for name in getattr(param, "opts", []) if name.startswith("--")}
        | {"--help"}
    )
    yield Command(path, tuple(options))
    for name, child in sorted(getattr(command, "commands", {}).items()):
        if not getattr(child, "hidden", False):
            yield from _walk(child, (*path, name))


def _commands() -> list[Command]:
    _register()
    return list(_walk(typer.main.get_command(app), ()))


COMMANDS = _commands()
SUBCOMMANDS = [command for command in COMMANDS if command.path]
OPTIONS = [(command, option) for command in COMMANDS for option in command.options]


def typo(name: str) -> str:
    """A slip of the finger that stays closest to `name`: one letter typed twice."""
    core = name.lstrip("-")
    middle = len(core) // 2
    return name[: len(name) - len(core)] + core[: middle + 1] + core[middle:]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        main(args)
    code = stop.value.code
    out, err = capsys.readouterr()
    return (code if isinstance(code, int) else EXIT_OK if code is None else -1), out, err


def flat(text: str) -> str:
    """Rich's error box folded into one line: borders dropped, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text)).strip()


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one error per line: nothing to unwrap
    monkeypatch.delenv("BCBRIDGE_DEBUG", raising=False)


def test_the_walk_finds_the_commands_of_the_readme() -> None:
    """The walk reaches groups and their subcommands (a walk finding nothing would pass all)."""
    found = {str(command) for command in COMMANDS}
    assert {"bcbridge", "bcbridge pull", "bcbridge push", "bcbridge tasks retry"} <= found
    assert len(OPTIONS) > 3 * len(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_help(command: Command, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([*command.path, "--help"], capsys)
    assert code == EXIT_OK, err
    assert "Usage:" in out and "Traceback" not in out + err


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=str)
def test_a_mistyped_command_suggests_the_right_one(
    command: Command, capsys: pytest.CaptureFixture[str]
) -> None:
    *group, name = command.path
    code, out, err = run([*group, typo(name), "--help"], capsys)
    assert code == EXIT_USAGE, (code, out, err)
    assert "Traceback" not in out + err
    assert f"No such command '{typo(name)}'. Did you mean " in flat(err)
    assert f"'{name}'" in flat(err).partition("Did you mean")[2]


@pytest.mark.parametrize(("command", "option"), OPTIONS, ids=lambda x: str(x))
def test_a_mistyped_option_suggests_the_right_one(
    command: Command, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run([*command.path, typo(option)], capsys)
    assert code == EXIT_USAGE, (code, out, err)
    assert code in DOCUMENTED and "Traceback" not in out + err
    message = flat(err)
    assert f"No such option: {typo(option)}. Did you mean " in message, message
    assert f"'{option}'" in message.partition("Did you mean")[2]


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        (["retry", "42"], "'tasks retry'"),  # a subcommand without its group
        # beats a close root name ('client')
        (["list"], "'flows list', 'subscriptions list', 'tasks list' or 'workers list'"),
        (["skpi", "42"], "'tasks skip'"),  # a close name of a subcommand
    ],
)
def test_a_subcommand_typed_without_its_group_is_found(
    typed: list[str], meant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(typed, capsys)
    assert code == EXIT_USAGE and "Traceback" not in out + err
    assert f"No such command '{typed[0]}'. Did you mean {meant}?" in flat(err)


def test_a_name_close_to_nothing_gets_no_guess(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["xyzzy"], capsys)
    assert code == EXIT_USAGE and "Traceback" not in out + err
    assert "No such command 'xyzzy'." in flat(err) and "Did you mean" not in err

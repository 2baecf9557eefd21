"""'Did you mean ...?' for mistyped command lines, in one phrasing for commands and options.

Typer already suggests a close command name within a group (`bcbridge pul` -> 'pull') and the
parser finds close option names, which it shows as "(Possible options: --filter)". The root
group here adds what they miss:

- a subcommand typed without its group, or a close name of one: `bcbridge retry 42` ->
  "Did you mean 'tasks retry'?";
- option suggestions phrased as the command ones: "No such option: --filtr. Did you mean
  '--filter'?", for the options of every command (their errors pass through the root group).
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Any

from typer.core import TyperGroup

try:  # recent typer releases carry their own copy of click (0.29 does)
    from typer._click.exceptions import NoSuchOption, UsageError
except ImportError:  # pragma: no cover - older typer, on click itself
    from click.exceptions import (  # type: ignore[assignment]
        NoSuchOption,
        UsageError,
    )

DID_YOU_MEAN = "Did you mean"


class SuggestingGroup(TyperGroup):
    """The root `bcbridge` group (``typer.Typer(cls=SuggestingGroup)``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except NoSuchOption as error:
            _rephrase(error)
            raise

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except UsageError as error:
            if args and not args[0].startswith("-"):
                exact, close = nested_commands(self, args[0])
                # a command of a group beats typer's guess at a close root name
                paths = exact or ([] if DID_YOU_MEAN in error.message else close)
                if paths:
                    error.message = f"No such command '{args[0]}'. {DID_YOU_MEAN} {_either(paths)}?"
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except NoSuchOption as error:  # raised while a subcommand parsed its options
            _rephrase(error)
            raise


def nested_commands(group: Any, name: str) -> tuple[list[str], list[str]]:
    """The 'group command' paths, one level down, whose command is `name`, and those whose
    command is close to it (best first)."""
    paths: dict[str, list[str]] = {}
    for group_name, command in sorted(group.commands.items()):
        for child in sorted(getattr(command, "commands", {})):
            paths.setdefault(child, []).append(f"{group_name} {child}")
    close = [path for match in get_close_matches(name, list(paths)) for path in paths[match]]
    return paths.get(name, []), close


def _rephrase(error: Any) -> None:
    """Turn the parser's "(Possible options: --a)" into "Did you mean '--a'?" (best first)."""
    close = list(getattr(error, "possibilities", None) or [])
    if close and DID_YOU_MEAN not in error.message:
        error.message = f"{error.message.rstrip('.')}. {DID_YOU_MEAN} {_either(close)}?"
        error.possibilities = None


def _either(names: list[str]) -> str:
    quoted = [f"'{name}'" for name in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" or {quoted[-1]}"

"""Shell completion: entity names (from the catalog), flow names (from the project file) and
push actions (the write actions and the entity's bound actions).

Typer calls these with what the user has typed so far (`incomplete`) and the context parsed so
far. A completion must be quick and must never fail: a project file that cannot be read
completes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bcbridge import catalog
from bcbridge.publisher import WRITE_ACTIONS


def _starting_with(names: list[str] | tuple[str, ...], incomplete: str) -> list[str]:
    """`names` that begin with `incomplete`, ignoring case (BC's names are camelCase)."""
    folded = incomplete.casefold()
    return [name for name in names if name.casefold().startswith(folded)]


def entity_names(incomplete: str) -> list[str]:
    """The catalog's entity sets that begin with `incomplete`."""
    return _starting_with(catalog.names(), incomplete)


def flow_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """The flows of the project file (--config, else $BCBRIDGE_CONFIG, else ./bcbridge.yaml)
    that begin with `incomplete`."""
    return _starting_with(_flows_in(_project_file(ctx)), incomplete)


def actions(ctx: typer.Context, incomplete: str) -> list[str]:
    """The write actions and the bound actions of the entity on the command line (of every
    entity when none is given yet) that begin with `incomplete`."""
    # Before an option's value the parse stops short: the entity is then still in ctx.args
    given = [_param(ctx, "entity"), *ctx.args]
    entity = next((word for word in given if word in catalog.CATALOG), None)
    if entity is not None:
        bound = list(catalog.CATALOG[entity].actions)
    else:
        bound = sorted({a for entity_set in catalog.CATALOG.values() for a in entity_set.actions})
    return _starting_with([*WRITE_ACTIONS, *bound], incomplete)


def _param(ctx: typer.Context, name: str) -> Any:
    """A parameter parsed so far, looked up in this context and its parents."""
    current: Any = ctx
    while current is not None:
        if current.params.get(name) is not None:
            return current.params[name]
        current = current.parent
    return None


def _project_file(ctx: typer.Context) -> Path:
    from bcbridge.flowconfig import default_config

    given = _param(ctx, "config")
    return Path(given) if given else default_config()


def _flows_in(path: Path) -> list[str]:
    """The keys of the file's `flows:` map; none when the file is missing or not YAML."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    flows = data.get("flows") if isinstance(data, dict) else None
    return [str(name) for name in flows] if isinstance(flows, dict) else []

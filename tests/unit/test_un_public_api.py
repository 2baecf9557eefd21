"""The public API of `bcbridge`: pinned, importable, documented, cheap to import, one version."""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import bcbridge

ROOT = Path(__file__).resolve().parents[2]


# Defined in modules another branch is changing at the same time; their docstrings land there.
# Non-strict xfail: once documented they pass, and the name can be taken off this list.
def test_public_names_are_pinned() -> None:
    # A change here is a change of the public API: say so in CHANGELOG.md.
    assert sorted(bcbridge.__all__) == [
        "AuthError",
        "BCAPIError",
        "BCBridgeError",
        "BatchOperation",
        "BatchResult",
        "BusinessCentralClient",
        "Chain",
        "Client",
        "ClientSettings",
        "ConfigError",
        "FatalAPIError",
        "FlowBusy",
        "FlowRunner",
        "LeaseLost",
        "MsalTokenSource",
        "NotFound",
        "Outcome",
        "PreconditionFailed",
        "ProjectConfig",
        "Publisher",
        "RecordResult",
        "RetriableAPIError",
        "RunResult",
        "RunStatus",
        "StaticToken",
        "Store",
        "StoreError",
        "Subscriber",
        "Task",
        "TaskStatus",
        "Throttled",
        "TokenSource",
        "TransformError",
        "TransportError",
        "Unauthorized",
        "ValidationFailed",
        "WriteError",
        "__version__",
        "load_chain",
        "load_chain_file",
        "load_project",
    ]
    assert len(set(bcbridge.__all__)) == len(bcbridge.__all__)


def test_every_public_name_is_the_object_of_its_module() -> None:
    star: dict[str, object] = {}
    exec("from bcbridge import *", star)  # what a star import (driven by __all__) gives
    assert set(star) - {"__builtins__"} == set(bcbridge.__all__)
    for name in bcbridge.__all__:
        value = getattr(bcbridge, name)
        if name == "__version__":
            continue
        home = importlib.import_module(value.__module__)
        assert getattr(home, name) is value, name
        assert name in dir(bcbridge)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = bcbridge.NoSuchThing  # type: ignore[attr-defined]


def test_the_sync_facade_keeps_its_old_home() -> None:
    import bcbridge.sync

    assert bcbridge.Client is bcbridge.sync.Client


def _own_docstring(value: object) -> str:
    """The docstring written for `value`, not one Python made up for it."""
    doc = vars(value).get("__doc__") if isinstance(value, type) else value.__doc__
    if not doc:
        return ""
    name = getattr(value, "__name__", "")
    if doc.startswith(f"{name}(") or doc == "An enumeration.":  # dataclass / Enum defaults
        return ""
    return doc.strip()


@pytest.mark.parametrize("name", sorted(set(bcbridge.__all__) - {"__version__"}))
def test_every_public_name_is_documented(name: str) -> None:
    value = getattr(bcbridge, name)
    assert inspect.isclass(value) or inspect.isfunction(value), name
    assert _own_docstring(value), f"bcbridge.{name} has no docstring"


def test_import_bcbridge_stays_light() -> None:
    # `bcbridge --help` imports the package first: the heavy libraries wait until a name needs them
    code = (
        "import sys, bcbridge\n"
        "heavy = [m for m in ('httpx', 'sqlalchemy', 'msal', 'pydantic', 'anyio') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))\n"
        "bcbridge.Store\n"
        "print('sqlalchemy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == ""
    assert out[1] == "True"


def test_the_version_is_written_once() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    source = ROOT / project["tool"]["hatch"]["version"]["path"]
    assert source == ROOT / "src" / "bcbridge" / "__init__.py"
    written = re.findall(r'^__version__ = "([^"]+)"$', source.read_text(encoding="utf-8"), re.M)
    assert written == [bcbridge.__version__]
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|(a|b|rc)\d+)?", bcbridge.__version__)
    # what pip installed was built from that same line
    assert importlib.metadata.version("bcbridge") == bcbridge.__version__
    # and the changelog has a section for it
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{bcbridge.__version__}]" in changelog


def test_the_readme_library_example_imports_from_bcbridge_only() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The library", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    compile(example, "README.md", "exec")
    imports = re.findall(r"^from (\S+) import (.+)$", example, re.M)
    assert imports and {module for module, _ in imports} == {"bcbridge"}
    for _, names in imports:
        assert {name.strip() for name in names.split(",")} <= set(bcbridge.__all__)

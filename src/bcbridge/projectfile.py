"""The project file edited in place: what the dashboard's forms (and any other editor) use.

The project file stays the source of truth. An edit changes one named item of a section
(`clients`, `incoming`, `outgoing`, `flows`) or the `store`, and everything else in the file
keeps its comments, key order and layout (ruamel.yaml's round trip). Each edit is:

- **checked first**: the would-be file is written beside the real one and loaded by the CLI's
  loader (`flowconfig.check_project`); a change that adds a problem is refused with the
  problems as data (`FieldProblem`: the dotted key path and the message), and neither file is
  touched. Problems the file already had do not block an edit (so a file broken by hand can be
  fixed one item at a time); `Snapshot.problems` lists them.
- **never blind**: every read returns a `version` (a hash of the project file and its `.env`);
  a save with a version that is no longer the files' is refused with `Conflict`.
- **atomic and serialised**: files are replaced by one rename (`_files.write_atomic`), under a
  lock file (`.bcbridge/<name>.lock` beside the project, in the folder `bcbridge init`'s
  .gitignore leaves out) that every `ProjectFile` takes, in any process. The lock is an
  advisory `flock`: an editor taking none (a person's) is caught by the version instead.
- **secret-free**: a client's `client_secret` and a URL's password (the store's, a flow's
  reader or writer) go to the `.env` beside the project (mode 0600; other lines kept), and the
  YAML gets ``${VAR}``. Variables are named `BCBRIDGE_<CLIENT>_CLIENT_SECRET`,
  `BCBRIDGE_STORE_PASSWORD` and `BCBRIDGE_<FLOW>_<FROM|TO>_PASSWORD` (upper case, other
  characters as `_`), after the `BC_*` variables; a secret already written as ``${NAME}`` keeps
  its NAME. A read shows a secret as `Secret.SET` or `Secret.NOT_SET`, never its value, and a
  URL's password as the ``${VAR}`` written or masked.

The loader reads that `.env` too (`config.dotenv_beside`), under the environment: a variable
set in the environment wins over the `.env`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import filelock
import yaml
from dotenv import dotenv_values
from dotenv.parser import parse_stream
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString
from ruamel.yaml.tokens import CommentToken

from bcbridge import _redact
from bcbridge._files import write_atomic
from bcbridge.config import DOTENV, Problem
from bcbridge.errors import Busy, ConfigError
from bcbridge.flowconfig import check_project

__all__ = [
    "ITEM_SECTIONS",
    "SECTIONS",
    "Conflict",
    "FieldProblem",
    "InvalidChange",
    "ProjectEditError",
    "ProjectFile",
    "Secret",
    "Snapshot",
]

SECTIONS = ("store", "clients", "incoming", "outgoing", "flows")  # in the order a file has them
ITEM_SECTIONS = SECTIONS[1:]  # the sections of named items
LOCK_TIMEOUT = 10.0  # seconds to wait for another editor's save (a save takes milliseconds)

_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
# scheme://user:PASSWORD@rest; a password with @ or / in it is percent-encoded in a URL
_URL_PASSWORD = re.compile(
    r"^(?P<head>[A-Za-z][\w+.-]*://[^:@/]*:)(?P<password>[^@/]*)(?P<tail>@.*)$"
)
_PYYAML = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"


class Secret(StrEnum):
    """How a read shows a secret field: whether it has a value, never the value."""

    SET = "set"
    NOT_SET = "not set"


@dataclass(frozen=True)
class FieldProblem:
    """One reason an edit is refused, for a form to show at its field: `path` is the dotted
    key path (e.g. `clients.bc.tenant_id`, `flows.f.transform.0`; "" for the whole file),
    `message` says what is wrong and what to do, `text` is the line the CLI prints."""

    path: str
    message: str
    text: str

    @property
    def section(self) -> str:
        return self.path.partition(".")[0]

    @property
    def item(self) -> str:
        """The name of the item the problem is in (`bc` for `clients.bc.tenant_id`)."""
        return self.path.split(".")[1] if self.path.count(".") >= 1 else ""

    @property
    def field(self) -> str:
        """The path inside the item (`tenant_id` for `clients.bc.tenant_id`)."""
        return ".".join(self.path.split(".")[2:])


class ProjectEditError(ConfigError):
    """An edit of the project file that was not made; neither file was changed."""


class InvalidChange(ProjectEditError):
    """The change would make the project invalid: `problems` says where and why."""

    def __init__(self, problems: list[FieldProblem]):
        self.problems = problems
        super().__init__("\n".join(problem.text for problem in problems))


class Conflict(ProjectEditError):
    """The project file or its .env changed since the version the edit was based on."""


@dataclass(frozen=True)
class Snapshot:
    """The project as a form shows it: `sections` as written (``${VAR}`` not expanded,
    secrets as `Secret`), the `version` to hand back with a save, and the problems the file
    has now (as `bcbridge check` sees them)."""

    version: str
    sections: dict[str, Any]
    problems: list[FieldProblem] = field(default_factory=list)

    def item(self, section: str, name: str) -> dict[str, Any] | None:
        items = self.sections.get(section) or {}
        value = items.get(name)
        return value if isinstance(value, dict) else None


class ProjectFile:
    """One project file and the `.env` beside it, read and edited as described above.

    Every edit takes the `version` of the read it is based on and returns the new version.
    """

    def __init__(self, path: Path, *, lock_timeout: float = LOCK_TIMEOUT):
        self.path = Path(path)
        self.env_path = self.path.parent / DOTENV
        self.lock_path = self.path.parent / ".bcbridge" / f"{self.path.name}.lock"
        self.lock_timeout = lock_timeout

    # reading

    def version(self) -> str:
        return _version_of(*self._texts())

    def read(self, *, check: bool = True) -> Snapshot:
        """The sections as plain data (see `Snapshot`); `check=False` leaves out the file's
        problems (which take a load of the project)."""
        text, env_text = self._texts()
        document = self._parse(text, env_text)[0]
        environ = {**_dotenv(env_text), **os.environ}
        sections = {name: _shown(name, document.get(name), environ) for name in SECTIONS}
        sections["serve"] = _plain(document.get("serve"))  # settings of `bcbridge serve`
        problems = self._problems(text, env_text) if text and check else []
        return Snapshot(_version_of(text, env_text), sections, problems)

    # editing

    def put(self, section: str, name: str, data: Mapping[str, Any], *, version: str) -> str:
        """Create or replace the item `name` of `section` with `data`. Keys of an item already
        there keep their comments where their values stay; keys not in `data` are removed,
        except a client's `client_secret`: absent or a `Secret` keeps the one there, None
        removes it, a ``${VAR}`` is written as given and any other text goes to the .env."""
        _check_section(section)

        def edit(document: CommentedMap, env: _EnvFile) -> None:
            items = document.get(section)
            if not isinstance(items, CommentedMap):  # a new section, placed once it has the item
                items = CommentedMap()
                items[name] = _node(_with_secrets(section, name, dict(data), None, env, document))
                _place_section(document, section, items)
                return
            current = items.get(name)
            value = _with_secrets(section, name, dict(data), current, env, document)
            if isinstance(current, CommentedMap) and isinstance(value, Mapping):
                _merge(current, value)
            elif name in items:
                items[name] = _node(value)
            else:
                _insert(items, len(items), name, _node(value))

        return self._change(version, edit, touched={(section, name)})

    def delete(self, section: str, name: str, *, version: str) -> str:
        """Remove the item `name` of `section` (refused while other items refer to it); its
        secrets leave the .env when nothing else refers to them."""
        _check_section(section)

        def edit(document: CommentedMap, env: _EnvFile) -> None:
            items = document.get(section)
            if not isinstance(items, CommentedMap) or name not in items:
                raise _not_found(section, name, items)
            _delete(document, section, name)

        return self._change(version, edit)

    def rename(self, section: str, old: str, new: str, *, version: str) -> str:
        """Rename an item, in place, and the references to it (a flow's from/to, an incoming's
        or outgoing's client). Refused if `new` is taken."""
        _check_section(section)

        def edit(document: CommentedMap, env: _EnvFile) -> None:
            items = document.get(section)
            if not isinstance(items, CommentedMap) or old not in items:
                raise _not_found(section, old, items)
            if new in items:
                path = f"{section}.{new}"
                raise InvalidChange(
                    [_problem(path, f"there is already a {_kind(section)} named {new!r}")]
                )
            position = list(items).index(old)
            items.insert(position, new, items.pop(old))
            _rename_references(document, section, old, new)

        return self._change(version, edit)

    def set_store(self, url: str, *, version: str) -> str:
        """The store's SQLAlchemy URL; a password in it goes to the .env."""

        def edit(document: CommentedMap, env: _EnvFile) -> None:
            written = _url_without_password("store", url, document.get("store"), env)
            if "store" in document:
                document["store"] = _node(written)
            else:
                _insert(document, 0, "store", _node(written))

        return self._change(version, edit)

    def set_serve(self, settings: Mapping[str, Any], *, version: str) -> str:
        """Keys of `serve:` (e.g. public_url, subscription_check_s): a value set, None removes
        the key; its other keys and comments stay, and an emptied `serve:` goes."""

        def edit(document: CommentedMap, env: _EnvFile) -> None:
            serve = document.get("serve")
            written = isinstance(serve, CommentedMap)  # else none yet, or `serve:` left empty
            if not isinstance(serve, CommentedMap):
                serve = CommentedMap()
            for key, value in settings.items():
                if value is None:
                    serve.pop(key, None)
                elif not (key in serve and _same(serve[key], value)):
                    serve[key] = _node(value)
            if not serve:
                document.pop("serve", None)
            elif "serve" not in document:
                _insert(document, len(document), "serve", serve)
            elif not written:
                document["serve"] = serve

        return self._change(version, edit)

    # the machinery

    def _texts(self) -> tuple[str, str]:
        """The project file's text and the .env's ("" for one that is not there)."""
        return _read(self.path), _read(self.env_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.lock_path.parent.mkdir(exist_ok=True)
        lock = filelock.FileLock(str(self.lock_path), timeout=self.lock_timeout)
        try:
            with lock:
                yield
        except filelock.Timeout:
            raise Busy(
                f"{self.path}: another edit of this project has held {self.lock_path} for "
                f"{self.lock_timeout:g} s; try again (remove the lock file if no bcbridge runs)"
            ) from None

    def _change(
        self,
        version: str,
        edit: Callable[[CommentedMap, _EnvFile], None],
        touched: frozenset[tuple[str, str]] | set[tuple[str, str]] = frozenset(),
    ) -> str:
        """Apply `edit` to the files at `version`; `touched`: the items it rewrites, whose
        layout is the new one even where their data reads the same (a quote style)."""
        with self._locked():
            text, env_text = self._texts()
            if _version_of(text, env_text) != version:
                raise Conflict(
                    "the project file or its .env changed since it was read (another editor, "
                    "or by hand): read it again and redo the change",
                    source=str(self.path),
                )
            document, yaml_writer = self._parse(text, env_text)
            env = _EnvFile(env_text)
            edit(document, env)
            new_text = _keep_layout(text, _dump(yaml_writer, document), touched)
            env.drop_unreferenced(new_text, old_text=text)
            new_env = env.text()
            self._refuse_new_problems(text, env_text, new_text, new_env)
            if self._texts() != (text, env_text):  # written by something that takes no lock
                raise Conflict(
                    "the project file or its .env changed while the change was checked: read "
                    "it again and redo the change",
                    source=str(self.path),
                )
            self._write(text, env_text, new_text, new_env)
            return _version_of(new_text, new_env)

    def _write(self, text: str, env_text: str, new_text: str, new_env: str) -> None:
        """The .env's new variables first, then the YAML that refers to them, then the .env
        without the ones no longer referred to: a reader in between finds every ${VAR}."""
        grown = _EnvFile(new_env)
        grown.keep_from(_EnvFile(env_text))
        if grown.text() != env_text:
            write_atomic(self.env_path, grown.text(), private=True)
        if new_text != text:
            mode = stat.S_IMODE(self.path.stat().st_mode) if self.path.exists() else None
            write_atomic(self.path, new_text)
            if mode is not None:
                os.chmod(self.path, mode)  # a project kept private stays so
        if new_env != grown.text():
            write_atomic(self.env_path, new_env, private=True)
        if self.env_path.exists():
            os.chmod(self.env_path, 0o600)  # a .env written by hand may be world-readable

    def _parse(self, text: str, env_text: str) -> tuple[CommentedMap, YAML]:
        yaml_rt = _round_trip(text)
        try:
            document = yaml_rt.load(text) if text.strip() else CommentedMap()
        except YAMLError:
            document = None
        if not isinstance(document, CommentedMap):
            problems = self._problems(text, env_text) or [
                _problem("", "expected a mapping at the top level")
            ]
            raise InvalidChange(problems)
        return document, yaml_rt

    def _problems(self, text: str, env_text: str) -> list[FieldProblem]:
        return self._check(text, env_text)[1]

    def _check(self, text: str, env_text: str) -> tuple[bool, list[FieldProblem]]:
        """What the CLI's loader says of `text` as this project file, with `env_text` as its
        .env, and whether it checked it all (a wrong type or key stops it before the names,
        entity sets and steps). The file checked is a temporary one beside the project (so
        relative paths mean what they mean in the project), named as the project in the
        messages."""
        descriptor, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.stem}.check-", suffix=self.path.suffix
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
            project, problems = check_project(Path(temporary), _dotenv(env_text))
        finally:
            Path(temporary).unlink(missing_ok=True)
        found = [_field_problem(problem, temporary, str(self.path)) for problem in problems]
        return project is not None, found

    def _refuse_new_problems(self, text: str, env_text: str, new_text: str, new_env: str) -> None:
        """Problems the file had do not block a change; new ones do, and so does any problem
        that stops the loader half-way (the rest of the change would go unchecked)."""
        before = {(p.path, p.message) for p in self._problems(text, env_text)} if text else set()
        complete, found = self._check(new_text, new_env)
        added = [p for p in found if (p.path, p.message) not in before]
        if added or (found and not complete):
            raise InvalidChange(added or found)


# reading helpers


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot read the file: {reason}", source=str(path)) from None


def _version_of(text: str, env_text: str) -> str:
    digest = hashlib.sha256()
    for part in (text, env_text):
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
    return digest.hexdigest()


def _dotenv(env_text: str) -> dict[str, str]:
    values = dotenv_values(stream=io.StringIO(env_text), interpolate=False)
    return {name: value for name, value in values.items() if value is not None}


def _shown(section: str, value: Any, environ: Mapping[str, str]) -> Any:
    """A section as plain data, as written, secrets as `Secret` and passwords masked."""
    plain = _plain(value)
    if section == "store":
        return _masked_url(plain) if isinstance(plain, str) else plain
    if not isinstance(plain, dict):
        return {}
    for item in plain.values():
        if not isinstance(item, dict):
            continue
        if section == "clients":
            item["client_secret"] = _secret_state(item.get("client_secret"), environ)
        if section == "flows":
            for key in ("from", "to"):
                item[key] = _masked_endpoint(item.get(key))
    return plain


def _plain(value: Any) -> Any:
    """ruamel's round-trip types as dicts, lists and plain scalars."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def _secret_state(value: Any, environ: Mapping[str, str]) -> Secret:
    if not isinstance(value, str) or not value:
        return Secret.NOT_SET
    resolved = _VARIABLE.sub(
        lambda match: environ.get(match["name"], match["default"] or ""), value
    )
    return Secret.SET if resolved else Secret.NOT_SET


def _masked_url(value: str) -> str:
    """A URL with a literal password masked; a ``${VAR}`` password is shown as written."""
    match = _URL_PASSWORD.match(value)
    if match is None or _REFERENCE.fullmatch(match["password"]):
        return value
    return f"{match['head']}{_redact.MASK}{match['tail']}"


def _masked_endpoint(value: Any) -> Any:
    if isinstance(value, str):
        return _masked_url(value)
    if isinstance(value, dict):
        for key in ("reader", "writer"):
            if isinstance(value.get(key), str):
                value[key] = _masked_url(value[key])
    return value


# editing helpers


def _check_section(section: str) -> None:
    if section not in ITEM_SECTIONS:
        raise ConfigError(
            f"unknown section {section!r}; sections of named items: {', '.join(ITEM_SECTIONS)}"
        )


def _kind(section: str) -> str:
    return {"clients": "client", "flows": "flow"}.get(section, section)


def _not_found(section: str, name: str, items: Any) -> InvalidChange:
    names = ", ".join(items) if isinstance(items, Mapping) else ""
    return InvalidChange(
        [
            _problem(
                f"{section}.{name}",
                f"no {_kind(section)} named {name!r}; defined: {names or 'none'}",
            )
        ]
    )


def _problem(path: str, message: str) -> FieldProblem:
    return FieldProblem(path, message, f"{path}: {message}" if path else message)


def _field_problem(problem: Problem, temporary: str, source: str) -> FieldProblem:
    """The loader's problem about the temporary file, as one about the project file, with the
    message alone (without `file:line: key.path: `) for the form."""
    text = problem.text.replace(temporary, source)
    message = text
    if message.startswith(source):
        message = re.sub(r"^:\d+", "", message[len(source) :]).removeprefix(": ")
    section = problem.path.partition(".")[0]
    if problem.path and message.startswith(f"{problem.path}: "):
        message = message[len(problem.path) + 2 :]
    elif section and message.startswith(section) and ": " in message:
        message = message.partition(": ")[2]  # shown differently, e.g. flows.f.transform[0]
    return FieldProblem(problem.path, message, text)


def _place_section(document: CommentedMap, section: str, items: CommentedMap) -> None:
    """A new section: in place of an empty one, else in the usual order of sections."""
    if section in document:
        document[section] = items
        return
    later = [name for name in SECTIONS[SECTIONS.index(section) + 1 :] if name in document]
    position = list(document).index(later[0]) if later else len(document)
    _insert(document, position, section, items)


# ruamel keeps the comment lines after an entry with the deepest last value of that entry (as
# the "end" of its line), so the heading of what follows belongs to what precedes it. An entry
# inserted or deleted takes those lines along: these keep them above what they head.


def _insert(mapping: CommentedMap, position: int, key: str, value: Any) -> None:
    """Insert `key` at `position`; the comment lines after the entry before it stay below."""
    mapping.insert(position, key, value)
    if position > 0:
        previous = list(mapping)[position - 1]
        moved = _take_following_lines(mapping, previous)
        if moved:
            _add_following_lines(mapping, key, moved)


def _delete(document: CommentedMap, section: str, name: str) -> None:
    """Delete an item; the comment lines after it go to the entry before it (or its section)."""
    items = document[section]
    moved = _take_following_lines(items, name)
    names = list(items)
    position = names.index(name)
    del items[name]
    if not items:
        items.fa.set_flow_style()  # `clients: {}`; a block style empty mapping is not YAML
    if not moved:
        return
    if position > 0:
        _add_following_lines(items, names[position - 1], moved)
    else:
        _add_following_lines(document, section, moved)


def _end_slot(mapping: Any, key: Any) -> tuple[Any, Any, int]:
    """Where the comment after the entry `key` of `mapping` is kept: the deepest last entry of
    a block value; index 2 of a mapping's comment slot, 0 of a list's."""
    container, slot, index = mapping, key, 2
    value = container[slot]
    while (
        isinstance(value, CommentedMap | CommentedSeq) and len(value) and not value.fa.flow_style()
    ):
        container, index = value, 2 if isinstance(value, CommentedMap) else 0
        slot = list(value)[-1] if isinstance(value, CommentedMap) else len(value) - 1
        value = container[slot]
    return container, slot, index


def _take_following_lines(mapping: Any, key: Any) -> str:
    """The comment lines after the end of the entry's own line, taken off it."""
    container, slot, index = _end_slot(mapping, key)
    comments = container.ca.items.get(slot)
    token = comments[index] if comments and len(comments) > index else None
    if not isinstance(token, CommentToken) or "\n" not in token.value:
        return ""
    own, _, rest = token.value.partition("\n")
    if not rest.strip():
        return ""
    token.value = own + "\n"
    return rest


def _add_following_lines(mapping: Any, key: Any, lines: str) -> None:
    container, slot, index = _end_slot(mapping, key)
    comments = container.ca.items.setdefault(slot, [None, None, None, None])
    while len(comments) <= index:
        comments.append(None)
    token = comments[index]
    if isinstance(token, CommentToken):
        token.value = token.value + lines
    else:
        comments[index] = CommentToken("\n" + lines, CommentMark(0), None)


def _merge(node: CommentedMap, data: Mapping[str, Any]) -> None:
    """`node` made equal to `data`, changing only what differs (so comments stay put)."""
    for key in [key for key in node if key not in data]:
        del node[key]
    for key, value in data.items():
        old = node.get(key)
        if key in node and _same(old, value):
            continue
        if isinstance(old, CommentedMap) and isinstance(value, Mapping):
            _merge(old, value)
        else:
            node[_scalar(key)] = _node(value)


def _same(old: Any, value: Any) -> bool:
    """Whether `value` is what `old` holds, in the same quotes where it asks for some (a
    ``${VAR}`` changes quotes with the secret it stands for)."""
    if isinstance(value, DoubleQuotedScalarString | SingleQuotedScalarString):
        return type(old) is type(value) and str(old) == str(value)
    plain = _plain(old)
    return bool(plain == value) and type(plain) is type(value)


def _node(value: Any) -> Any:
    """Plain data as ruamel nodes: block mappings and lists, and text quoted where PyYAML (the
    loader, YAML 1.1) would read it as something else (`no`, `on`, `1e3`, `2024-01-01`)."""
    if isinstance(value, DoubleQuotedScalarString | SingleQuotedScalarString):
        return value
    if isinstance(value, Mapping):
        mapping = CommentedMap()
        for key, item in value.items():
            mapping[_scalar(key)] = _node(item)
        return mapping
    if isinstance(value, list | tuple):
        sequence = CommentedSeq(_node(item) for item in value)
        if value and not any(isinstance(item, Mapping | list | tuple) for item in value):
            sequence.fa.set_flow_style()  # [id, number] as people write it
        return sequence
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, str) and (_read_as_other(value) or value != value.strip() or not value):
        return DoubleQuotedScalarString(value)
    return value


def _read_as_other(text: str) -> bool:
    """Whether PyYAML would read `text`, unquoted, as something other than text."""
    tag = _PYYAML.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    return bool(tag != _STR_TAG)


def _with_secrets(
    section: str,
    name: str,
    data: dict[str, Any],
    current: Any,
    env: _EnvFile,
    document: CommentedMap,
) -> dict[str, Any]:
    """`data` with its secrets moved to the .env (see `ProjectFile.put`)."""
    current = current if isinstance(current, Mapping) else {}
    if section == "clients":
        _client_secret(name, data, current, env, document)
    if section == "flows":
        for key in ("from", "to"):
            prefix = f"flows.{name}.{key}"
            endpoint, old = data.get(key), current.get(key)
            if isinstance(endpoint, str):
                data[key] = _url_without_password(prefix, endpoint, old, env)
            elif isinstance(endpoint, Mapping):
                endpoint = data[key] = dict(endpoint)
                for part in ("reader", "writer"):
                    if isinstance(endpoint.get(part), str):
                        was = old.get(part) if isinstance(old, Mapping) else old
                        endpoint[part] = _url_without_password(prefix, endpoint[part], was, env)
    return data


def _client_secret(
    name: str, data: dict[str, Any], current: Mapping[str, Any], env: _EnvFile, document: Any
) -> None:
    secret = data.get("client_secret", Secret.SET)
    if isinstance(secret, Secret):  # the form's "set" / "not set": the secret stays as it is
        secret = current.get("client_secret")
        if not isinstance(secret, str) or "${" in secret:  # none, or a ${VAR} already
            data.pop("client_secret", None)
            if secret is not None:
                data["client_secret"] = secret
            return
        # written in the YAML by hand: moved to the .env below, as a new one would be
    if secret is None:
        data.pop("client_secret")
        return
    if not isinstance(secret, str) or _REFERENCE.fullmatch(secret):
        return  # a ${VAR} written as given; a non-text value left for the loader to refuse
    variable = _variable_of(current.get("client_secret")) or _free_variable(
        f"BCBRIDGE_{_upper(name)}_CLIENT_SECRET", document
    )
    data["client_secret"] = _reference(f"clients.{name}.client_secret", variable, secret)
    env.set(variable, secret)


def _url_without_password(path: str, url: str, current: Any, env: _EnvFile) -> Any:
    """`url` with a literal password replaced by a ``${VAR}`` whose value goes to the .env;
    the masked password a read showed stands for the password there was."""
    match = _URL_PASSWORD.match(url)
    if match is None:
        return url
    password = match["password"]
    if password == _redact.MASK:
        old = _URL_PASSWORD.match(str(current)) if current is not None else None
        if old is None:
            raise InvalidChange(
                [_problem(path, "the password is masked (***) and there was none: type it")]
            )
        password = old["password"]
    if _REFERENCE.fullmatch(password):
        return url if password == match["password"] else f"{match['head']}{password}{match['tail']}"
    old_match = _URL_PASSWORD.match(str(current)) if current is not None else None
    variable = (_variable_of(old_match["password"]) if old_match else None) or (
        f"BCBRIDGE_{_upper(path.removeprefix('flows.'))}_PASSWORD"
    )
    env.set(variable, password)
    reference = f"{match['head']}${{{variable}}}{match['tail']}"
    return _quoted(path, reference, password)


def _reference(path: str, variable: str, secret: str) -> Any:
    return _quoted(path, f"${{{variable}}}", secret)


def _quoted(path: str, text: str, secret: str) -> Any:
    """`text` holding ``${VAR}``, quoted so that the YAML still reads right once the loader
    has put the secret in its place (it expands the text before parsing it)."""
    if any(character in secret for character in "\n\r\0"):
        raise InvalidChange([_problem(path, "a secret cannot hold a line break")])
    if '"' not in secret and "\\" not in secret:
        return DoubleQuotedScalarString(text)
    if "'" not in secret:
        return SingleQuotedScalarString(text)
    raise InvalidChange(
        [_problem(path, "a secret holding both ' and \" (or \\) cannot be kept: change it")]
    )


def _variable_of(value: Any) -> str | None:
    match = _VARIABLE.fullmatch(value) if isinstance(value, str) else None
    return match["name"] if match else None


def _upper(name: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") or "X"


def _free_variable(wanted: str, document: Any) -> str:
    """`wanted`, or `wanted_2`, ... when another part of the project refers to it already
    (clients `a-b` and `a_b` would both be BCBRIDGE_A_B_...)."""
    text = _dump(_round_trip(""), document)
    variable, number = wanted, 1
    while f"${{{variable}}}" in text or f"${{{variable}:-" in text:
        number += 1
        variable = f"{wanted}_{number}"
    return variable


def _rename_references(document: CommentedMap, section: str, old: str, new: str) -> None:
    if section in ("incoming", "outgoing"):
        key, kind = ("from", "incoming") if section == "incoming" else ("to", "outgoing")
        for flow in (document.get("flows") or {}).values():
            if not isinstance(flow, CommentedMap):
                continue
            if flow.get(key) == old:
                flow[key] = new
            elif isinstance(flow.get(key), CommentedMap) and flow[key].get(kind) == old:
                flow[key][kind] = new
    if section == "clients":
        for part in ("incoming", "outgoing"):
            for item in (document.get(part) or {}).values():
                if isinstance(item, CommentedMap) and item.get("client") == old:
                    item["client"] = new


# the YAML and .env texts


def _round_trip(text: str) -> YAML:
    """A ruamel round-trip YAML that writes the way `text` is indented."""
    writer = YAML()
    writer.preserve_quotes = True
    writer.width = 4096  # rewrapping long lines would change lines nobody edited
    mapping, offset = _indentation(text)
    writer.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    return writer


def _indentation(text: str) -> tuple[int, int]:
    """The file's mapping indent (2 unless its first nested key says otherwise) and how far
    its list dashes sit in from their key (2 in `transform:\\n  - keep`, 0 in `- keep`)."""
    mapping, offset = 2, 2
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    nested = next(
        (line for line in lines if line.startswith(" ") and not line.lstrip().startswith("-")), None
    )
    if nested is not None:
        mapping = len(nested) - len(nested.lstrip()) or 2
    for before, line in itertools.pairwise(lines):
        if line.lstrip().startswith("- ") and before.rstrip().endswith(":"):
            offset = max(0, (len(line) - len(line.lstrip())) - (len(before) - len(before.lstrip())))
            break
    return mapping, offset


def _dump(writer: YAML, document: CommentedMap) -> str:
    if not document:
        return ""
    out = io.StringIO()
    writer.dump(document, out)
    return out.getvalue()


def _keep_layout(
    old_text: str, new_text: str, touched: frozenset[tuple[str, str]] | set[tuple[str, str]]
) -> str:
    """`new_text` with each item that the edit left as it was written as it was in `old_text`
    (ruamel writes a flow mapping spread over lines on one line, for one); only when the
    result reads as the same data, else `new_text` as it is."""
    if not old_text.strip() or not new_text.strip():
        return new_text
    try:
        old_items, new_items = _item_lines(old_text), _item_lines(new_text)
        new_document = _round_trip(new_text).load(new_text)
    except YAMLError:
        return new_text
    old_lines = old_text.splitlines(keepends=True)
    lines = new_text.splitlines(keepends=True)
    spans = sorted(new_items.items(), key=lambda entry: entry[1][0], reverse=True)
    for key, (start, end, value) in spans:  # from the bottom, so lines above keep their index
        if key not in old_items or key in touched:
            continue
        old_start, old_end, old_value = old_items[key]
        written = old_lines[old_start:old_end]
        if old_value == value and written != lines[start:end]:
            lines[start:end] = written
    kept = "".join(lines)
    try:
        same = _plain(_round_trip(kept).load(kept)) == _plain(new_document)
    except YAMLError:
        same = False
    return kept if same else new_text


def _item_lines(text: str) -> dict[tuple[str, str], tuple[int, int, Any]]:
    """Each item of a block-style section: its first line, the line after its last (comment
    and blank lines after it not counted: they head what follows), and its data."""
    document = _round_trip(text).load(text)
    lines = text.splitlines()
    if not isinstance(document, CommentedMap):
        return {}
    starts = {document.lc.key(key)[0] for key in document}
    items: dict[tuple[str, str], int] = {}
    for section in ITEM_SECTIONS:
        values = document.get(section)
        if isinstance(values, CommentedMap) and values and not values.fa.flow_style():
            for name in values:
                items[(section, str(name))] = values.lc.key(name)[0]
    starts |= set(items.values())
    ordered = sorted(starts)
    found = {}
    for (section, name), start in items.items():
        later = [line for line in ordered if line > start]
        end = later[0] if later else len(lines)
        while end > start + 1 and (
            not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")
        ):
            end -= 1
        found[(section, name)] = (start, end, _plain(document[section][name]))
    return found


def _env_line(name: str, value: str) -> str:
    """`NAME='value'`: single quotes keep every character as it is, for python-dotenv and a
    shell's `set -a; . ./.env` alike; a value with ' or \\ in it goes in double quotes."""
    if "'" not in value and "\\" not in value:
        return f"{name}='{value}'\n"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"\n'


class _EnvFile:
    """A .env's lines, changed one variable at a time; other lines and comments kept."""

    def __init__(self, text: str):
        self.chunks: list[tuple[str | None, str]] = [
            (binding.key, binding.original.string) for binding in parse_stream(io.StringIO(text))
        ]
        self.added: set[str] = set()

    def names(self) -> set[str]:
        return {key for key, _ in self.chunks if key}

    def set(self, name: str, value: str) -> None:
        line = _env_line(name, value)
        self.added.add(name)
        for index, (key, _) in enumerate(self.chunks):
            if key == name:
                self.chunks[index] = (key, line)
                self.chunks = [
                    chunk for i, chunk in enumerate(self.chunks) if i <= index or chunk[0] != name
                ]
                return
        if self.chunks and not self.chunks[-1][1].endswith("\n"):
            key, text = self.chunks[-1]
            self.chunks[-1] = (key, text + "\n")
        self.chunks.append((name, line))

    def drop(self, name: str) -> None:
        self.chunks = [chunk for chunk in self.chunks if chunk[0] != name]

    def drop_unreferenced(self, new_text: str, old_text: str) -> None:
        """The variables the old YAML referred to and the new one does not: their secrets
        leave with the item (other lines of the .env are the user's and stay)."""
        for name in _referenced(old_text) - _referenced(new_text):
            if name.startswith("BCBRIDGE_") and name not in self.added:
                self.drop(name)

    def keep_from(self, old: _EnvFile) -> None:
        """The variables of `old` this one dropped, put back (for the first of two writes)."""
        for key, text in old.chunks:
            if key and key not in self.names():
                self.chunks.append((key, text if text.endswith("\n") else text + "\n"))

    def text(self) -> str:
        return "".join(text for _, text in self.chunks)


def _referenced(text: str) -> set[str]:
    return {
        match["name"]
        for line in text.splitlines()
        if not line.lstrip().startswith("#")
        for match in _VARIABLE.finditer(line)
    }

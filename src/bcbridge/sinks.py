"""Readers and writers for records: JSON Lines, CSV, SQL tables (SQLAlchemy), stdin/stdout.

A spec names the place: ``-`` (stdin/stdout, JSON Lines unless told otherwise), a file path
(format from the extension: ``.jsonl``/``.ndjson``/``.csv``), or a SQLAlchemy URL with the table
after ``#`` (``sqlite:///out.db#customers``). Readers stream; writers flush in batches. The SQL
writer upserts on `key` when one is given, so a repeated write after a crash updates, not adds.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import sqlalchemy as sa

from bcbridge.errors import ConfigError

__all__ = ["Writer", "open_reader", "open_writer", "sql_engine", "sql_target"]

FORMATS = ("jsonl", "csv")


def _format_of(spec: str, format: str | None) -> str:
    if format:
        if format not in FORMATS:
            raise ConfigError(
                f"unknown format {format!r}; valid: {', '.join(FORMATS)}", field="format"
            )
        return format
    suffix = Path(spec).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json") or spec == "-":
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise ConfigError(
        f"cannot tell the format of {spec!r}: "
        "use .jsonl or .csv, a SQL URL with #table, or --format",
        field="format",
    )


def sql_engine(url: str) -> sa.Engine:
    """An engine for `url`; a SQLite file's folder is created first, as a file writer does."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and not path.startswith(":memory:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(url)


def sql_target(spec: str) -> tuple[str, str] | None:
    """(url, table) for ``dialect://...#table``; None for files and ``-``."""
    if "://" not in spec:
        return None
    url, _, table = spec.partition("#")
    if not table:
        raise ConfigError(
            f"a SQL target needs its table after '#', e.g. {url}#customers", field="out"
        )
    return url, table


# --- readers -------------------------------------------------------------------------------------


def open_reader(
    spec: str, format: str | None = None, *, chunk_size: int = 1000
) -> Iterator[dict[str, Any]]:
    """Records from `spec`, streamed."""
    target = sql_target(spec)
    if target is not None:
        return _read_sql(*target, chunk_size=chunk_size)
    kind = _format_of(spec, format)
    return _read_jsonl(spec) if kind == "jsonl" else _read_csv(spec)


def _lines(spec: str, mode: str) -> Iterator[IO[Any]]:
    if spec == "-":
        yield sys.stdin.buffer if mode == "rb" else sys.stdin
        return
    try:
        handle: IO[Any] = (
            open(spec, "rb") if mode == "rb" else open(spec, newline="", encoding="utf-8")  # noqa: SIM115
        )
    except OSError as exc:
        raise ConfigError(f"cannot read {spec}: {exc.strerror}", field="in") from None
    with handle:
        yield handle


def _read_jsonl(spec: str) -> Iterator[dict[str, Any]]:
    for handle in _lines(spec, "rb"):
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{spec}:{number}: not JSON: {exc}", field="in") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{spec}:{number}: expected a JSON object per line", field="in")
            yield record


def _read_csv(spec: str) -> Iterator[dict[str, Any]]:
    """Rows as records; a row longer than the header, a NUL byte or bad UTF-8 is a bad file."""
    for handle in _lines(spec, "r"):
        reader = csv.DictReader(handle)
        try:
            for row in reader:
                if None in row:  # DictReader keeps the cells beyond the header under None
                    raise ConfigError(
                        f"{spec}:{reader.line_num}: more cells than the header has columns",
                        field="in",
                    )
                yield row
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"{spec}:{reader.line_num}: not CSV: {exc}", field="in") from None


def _read_sql(url: str, table_name: str, *, chunk_size: int) -> Iterator[dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        table = sa.Table(table_name, sa.MetaData(), autoload_with=engine)
        with engine.connect() as conn:
            result = conn.execution_options(yield_per=chunk_size).execute(sa.select(table))
            for row in result.mappings():
                yield {key: _from_sql(value) for key, value in row.items()}
    except sa.exc.NoSuchTableError:
        raise ConfigError(f"{url}: no table {table_name!r}", field="in") from None
    finally:
        engine.dispose()


def _from_sql(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


# --- writers -------------------------------------------------------------------------------------


class Writer:
    """Collects records and writes them in batches; `flush` makes everything so far durable."""

    def __init__(self, batch_size: int = 500):
        self.batch_size = batch_size
        self.pending: list[dict[str, Any]] = []
        self.written = 0

    def write(self, record: dict[str, Any]) -> None:
        self.pending.append(record)
        if len(self.pending) >= self.batch_size:
            self.flush()

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.write(record)

    def flush(self) -> None:
        if self.pending:
            self._write(self.pending)
            self.written += len(self.pending)
            self.pending = []

    def _write(self, records: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _FileWriter(Writer):
    def __init__(self, spec: str, *, append: bool, binary: bool):
        super().__init__()
        self.spec = spec
        if spec == "-":
            self.handle: IO[Any] = sys.stdout.buffer if binary else sys.stdout
            self.owned = False
        else:
            Path(spec).parent.mkdir(parents=True, exist_ok=True)
            mode = "a" if append else "w"
            # closed in close()
            if binary:
                self.handle = open(spec, mode + "b")  # noqa: SIM115
            else:
                self.handle = open(spec, mode, newline="", encoding="utf-8")  # noqa: SIM115
            self.owned = True

    def flush(self) -> None:
        super().flush()
        self.handle.flush()

    def close(self) -> None:
        super().close()
        if self.owned:
            self.handle.close()


class JsonlWriter(_FileWriter):
    def __init__(self, spec: str, *, append: bool = False):
        super().__init__(spec, append=append, binary=True)

    def _write(self, records: list[dict[str, Any]]) -> None:
        self.handle.write(
            b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records)
        )


class CsvWriter(_FileWriter):
    """The header comes from the first record; columns first seen later are refused, not lost."""

    def __init__(self, spec: str, *, append: bool = False):
        existing = append and spec != "-" and Path(spec).exists() and Path(spec).stat().st_size > 0
        super().__init__(spec, append=append, binary=False)
        self.columns: list[str] | None = None
        if existing:
            with open(spec, newline="", encoding="utf-8") as handle:
                self.columns = next(csv.reader(handle), None)

    def _write(self, records: list[dict[str, Any]]) -> None:
        if self.columns is None:
            self.columns = list(records[0])
            csv.writer(self.handle).writerow(self.columns)
        writer = csv.DictWriter(self.handle, self.columns, extrasaction="raise")
        for record in records:
            try:
                writer.writerow({k: _to_cell(v) for k, v in record.items()})
            except ValueError:
                extra = sorted(set(record) - set(self.columns))
                raise ConfigError(
                    f"{self.spec}: the record has columns the CSV header lacks: "
                    f"{', '.join(extra)}; "
                    "add a `keep` transformer or write JSON Lines",
                    field="out",
                ) from None


def _to_cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value


class SqlWriter(Writer):
    """Creates the table from the first batch (nested values as JSON text); upserts on `key`."""

    def __init__(self, url: str, table: str, *, key: str | None = None):
        super().__init__()
        self.engine = sql_engine(url)
        self.table_name = table
        self.key = key
        self.table: sa.Table | None = None

    def _ensure_table(self, sample: dict[str, Any]) -> sa.Table:
        if self.table is not None:
            return self.table
        metadata = sa.MetaData()
        inspector = sa.inspect(self.engine)
        if inspector.has_table(self.table_name):
            self.table = sa.Table(self.table_name, metadata, autoload_with=self.engine)
        else:
            columns = [
                sa.Column(name, _sql_type(value), primary_key=(name == self.key))
                for name, value in sample.items()
            ]
            self.table = sa.Table(self.table_name, metadata, *columns)
            metadata.create_all(self.engine)
        return self.table

    def _write(self, records: list[dict[str, Any]]) -> None:
        table = self._ensure_table(records[0])
        known = set(table.c.keys())
        rows = [{k: _to_cell(v) for k, v in r.items() if k in known} for r in records]
        with self.engine.begin() as conn:
            if self.key:
                keys = [row[self.key] for row in rows]
                conn.execute(table.delete().where(table.c[self.key].in_(keys)))
            conn.execute(table.insert(), rows)

    def close(self) -> None:
        super().close()
        self.engine.dispose()


def _sql_type(value: Any) -> sa.types.TypeEngine[Any]:
    if isinstance(value, bool):
        return sa.Boolean()
    if isinstance(value, int):
        return sa.BigInteger()
    if isinstance(value, float):
        return sa.Float()
    return sa.Text()


def open_writer(
    spec: str, format: str | None = None, *, key: str | None = None, append: bool = False
) -> Writer:
    target = sql_target(spec)
    if target is not None:
        return SqlWriter(*target, key=key)
    kind = _format_of(spec, format)
    return JsonlWriter(spec, append=append) if kind == "jsonl" else CsvWriter(spec, append=append)


def jsonl_text(records: Iterable[dict[str, Any]]) -> str:
    """Records as JSON Lines text (for messages and tests)."""
    buffer = io.BytesIO()
    for record in records:
        buffer.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    return buffer.getvalue().decode()

"""Readers and writers for records: JSON Lines, CSV, SQL tables (SQLAlchemy), stdin/stdout.

A spec names the place: ``-`` (stdin/stdout, JSON Lines unless told otherwise), a file path
(format from the extension: ``.jsonl``/``.ndjson``/``.csv``), or a SQLAlchemy URL with the table
after ``#`` (``sqlite:///out.db#customers``). Readers stream; writers flush in batches. The SQL
writer upserts on `key` when one is given, so a repeated write after a crash updates, not adds.

Readers are strict: a line that is not a record (broken JSON, a CSV row with too few or too many
cells) is a `BadRecord` naming file:line, and the lines around it still come through. Flows write
with `Writer.write_chunk`: each chunk is durable (fsync) before it returns, a file writer knows
the byte offset it has committed (`FileWriter.offset`) and `resume` cuts a file back to it, and
any failure is a `WriteError` after the half-written part has been cut off.

Writers leave out OData annotations (``@odata.etag``, ``picture@odata.mediaReadLink``, in expanded
records too) unless built with ``annotations=True``: they are BC's bookkeeping, not data, and
would otherwise become a CSV or SQL column. The caller's records are not changed (a flow's cursor
and a pull's cursor still read the ETag from them).
"""

from __future__ import annotations

import codecs
import csv
import errno
import io
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import orjson
import sqlalchemy as sa

from bcbridge import _json, _redact
from bcbridge.catalog import FieldType
from bcbridge.errors import ConfigError, WriteError

__all__ = [
    "BadRecord",
    "FileWriter",
    "SqlWriter",
    "Writer",
    "open_reader",
    "open_writer",
    "read_records",
    "sql_engine",
    "sql_target",
    "without_annotations",
]

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


@dataclass(frozen=True)
class BadRecord:
    """A line (or CSV row) of an input file that is not a record: where it is, why, its text."""

    source: str
    line: int
    error: str
    raw: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.error}"


def read_records(
    spec: str,
    format: str | None = None,
    *,
    chunk_size: int = 1000,
    encoding: str | None = None,
) -> Iterator[dict[str, Any] | BadRecord]:
    """Records from `spec`, streamed; a line that is not a record comes as a `BadRecord`.

    `encoding` (default UTF-8, a byte-order mark is skipped) must be ASCII-compatible (UTF-8,
    Latin-1, cp1252...): files are split into lines as bytes, so that an undecodable byte is
    reported with its offset in the file."""
    target = sql_target(spec)
    if target is not None:
        return _read_sql(*target, chunk_size=chunk_size)
    kind = _format_of(spec, format)
    lines = _decoded_lines(spec, _checked_encoding(encoding))
    return _read_jsonl(spec, lines) if kind == "jsonl" else _read_csv(spec, lines)


def open_reader(
    spec: str,
    format: str | None = None,
    *,
    chunk_size: int = 1000,
    encoding: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Records from `spec`, streamed; the first line that is not a record is a ConfigError."""
    for record in read_records(spec, format, chunk_size=chunk_size, encoding=encoding):
        if isinstance(record, BadRecord):
            raise ConfigError(str(record), field="in")
        yield record


def _checked_encoding(encoding: str | None) -> str:
    name = encoding or "utf-8"
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise ConfigError(f"unknown encoding {name!r}", field="encoding") from None
    if "\n".encode(info.name) != b"\n":
        raise ConfigError(
            f"encoding {name!r} is not ASCII-compatible; convert the file to UTF-8",
            field="encoding",
        )
    return info.name


def _decoded_lines(spec: str, encoding: str) -> Iterator[str]:
    """The file's lines as text, line endings kept (the csv module wants them)."""
    name = "stdin" if spec == "-" else spec
    offset = 0
    for handle in _binary(spec):
        for number, line in enumerate(handle, 1):
            if number == 1 and encoding == "utf-8" and line.startswith(codecs.BOM_UTF8):
                line, offset = line[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
            try:
                yield line.decode(encoding)
            except UnicodeDecodeError as exc:
                raise ConfigError(
                    f"{name}:{number}: byte {offset + exc.start} (0x{line[exc.start]:02x}) is "
                    f"not {encoding}; give the reader its encoding, e.g. "
                    "`from: {reader: ..., encoding: latin-1}`",
                    field="in",
                ) from None
            offset += len(line)


def _binary(spec: str) -> Iterator[IO[bytes]]:
    if spec == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = open(spec, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"cannot read {spec}: {exc.strerror}", field="in") from None
    with handle:
        yield handle


def _read_jsonl(spec: str, lines: Iterator[str]) -> Iterator[dict[str, Any] | BadRecord]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield BadRecord(spec, number, f"not JSON: {exc}", line.rstrip("\r\n"))
            continue
        if not isinstance(record, dict):
            yield BadRecord(spec, number, "expected a JSON object per line", line.rstrip("\r\n"))
            continue
        yield record


class _Recording:
    """The lines the csv module takes, kept until the row they make is done (its raw text)."""

    def __init__(self, lines: Iterator[str]):
        self.lines = lines
        self.taken: list[str] = []
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.taken.append(line)
        self.count += 1
        return line

    def row_text(self) -> str:
        text, self.taken = "".join(self.taken), []
        return text.rstrip("\r\n")


def _read_csv(spec: str, lines: Iterator[str]) -> Iterator[dict[str, Any] | BadRecord]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a 10 MB note is a record, not an error
    source = _Recording(lines)
    reader = csv.reader(source)
    header: list[str] | None = None
    while True:
        first_line = source.count + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield BadRecord(spec, first_line, f"not a CSV row: {exc}", source.row_text())
            continue
        raw = source.row_text()
        if not row:
            continue  # a blank line
        if header is None:
            header = row
            continue
        if len(row) != len(header):
            yield BadRecord(spec, first_line, _ragged(row, header), raw)
            continue
        yield dict(zip(header, row, strict=True))


def _ragged(row: list[str], header: list[str]) -> str:
    if len(row) < len(header):
        missing = ", ".join(header[len(row) :])
        return f"{len(row)} cells where the header has {len(header)}: no {missing}"
    return f"{len(row)} cells where the header has {len(header)}: the extra ones have no column"


def _read_sql(url: str, table_name: str, *, chunk_size: int) -> Iterator[dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        table = sa.Table(table_name, sa.MetaData(), autoload_with=engine)
        with engine.connect() as conn:
            result = conn.execution_options(yield_per=chunk_size).execute(sa.select(table))
            for row in result.mappings():
                yield {key: _from_sql(value) for key, value in row.items()}
    except sa.exc.NoSuchTableError:
        raise ConfigError(f"{shown_url(url)}: no table {table_name!r}", field="in") from None
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigError(
            f"cannot read {shown_url(url)}: {_driver_words(exc)}", field="in"
        ) from None
    finally:
        engine.dispose()


def _from_sql(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _plain_number(value)
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _plain_number(value: Decimal) -> int | float | Decimal:
    """A NUMERIC value as JSON's numbers carry it (int, or a float that reads back as the same
    decimal); a Decimal only where a float would not be exact."""
    if value.is_finite() and value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    return as_float if Decimal(repr(as_float)) == value else value


def shown_url(url: str) -> str:
    """A database URL fit to print: the password masked (SQLAlchemy's own rendering keeps the
    slashes of a sqlite:////absolute/path), anything else secret-looking scrubbed."""
    try:
        rendered = sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return _redact.url(url)
    return _redact.text(rendered)


def _driver_words(exc: BaseException) -> str:
    """The database driver's own first line (SQLAlchemy adds the statement and a link)."""
    reason = str(getattr(exc, "orig", None) or exc).strip()
    return _redact.text(reason.splitlines()[0] if reason else type(exc).__name__)


def json_bytes(value: Any, *, newline: bool = False) -> bytes:
    """`value` as JSON; decimal.Decimal values as exact JSON numbers (see `bcbridge._json`)."""
    return _json.dumps(value, option=_json.OPT_APPEND_NEWLINE if newline else 0)


# --- writers -------------------------------------------------------------------------------------


def is_annotation(name: str) -> bool:
    """An OData annotation: ``@odata.etag`` on a record, ``field@odata.x`` on a property."""
    return "@odata." in name


def without_annotations(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of `record` without OData annotations, those of expanded records included."""
    return {
        name: _value_without_annotations(value)
        for name, value in record.items()
        if not is_annotation(name)
    }


def _value_without_annotations(value: Any) -> Any:
    if isinstance(value, dict):
        return without_annotations(value)
    if isinstance(value, list):
        return [_value_without_annotations(item) for item in value]
    return value


class Writer:
    """Collects records and writes them in batches; `flush` makes everything so far durable.

    Flows use `write_chunk` instead: one call per chunk, durable on return, with the records the
    target refused (and why) told apart from those it holds. OData annotations are left out
    unless `annotations` is True."""

    def __init__(self, batch_size: int = 500, *, annotations: bool = False):
        self.batch_size = batch_size
        self.annotations = annotations
        self.pending: list[dict[str, Any]] = []
        self.written = 0

    def _outgoing(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records as they are written: copies without annotations unless asked for."""
        return records if self.annotations else [without_annotations(r) for r in records]

    def write(self, record: dict[str, Any]) -> None:
        self.pending.append(record)
        if len(self.pending) >= self.batch_size:
            self.flush()

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.write(record)

    def flush(self) -> None:
        if self.pending:
            records, self.pending = self.pending, []  # a failed batch is not tried again on close
            refused = next((e for e in self.write_chunk(records) if e is not None), None)
            if refused is not None:
                raise ConfigError(refused, field="out")
            self.written += len(records)

    def write_chunk(self, records: list[dict[str, Any]]) -> list[str | None]:
        """Write `records` durably; per record None, or why it was refused (none of it written).
        A failure of the target itself is a WriteError, with nothing of the chunk kept."""
        raise NotImplementedError

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileWriter(Writer):
    """A JSON Lines or CSV file (or stdout), written as bytes straight to the file descriptor,
    so that nothing sits in a buffer a failed write would leave to a later one."""

    def __init__(self, spec: str, *, append: bool, annotations: bool = False):
        super().__init__(annotations=annotations)
        self.spec = spec
        self.name = "stdout" if spec == "-" else spec
        self.fd: int | None = None
        self.regular = False  # a file that can be cut back (not stdout, /dev/null or a pipe)
        self.offset = 0  # the end of what has been written whole
        if spec != "-":
            try:
                Path(spec).parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_RDWR | os.O_CREAT | (0 if append else os.O_TRUNC)
                self.fd = os.open(spec, flags, 0o666)
                self.regular = stat.S_ISREG(os.fstat(self.fd).st_mode)
                if self.regular:
                    self.offset = os.lseek(self.fd, 0, os.SEEK_END)
            except OSError as exc:
                raise _write_error(self.name, exc) from None

    # --- resuming --------------------------------------------------------------------------

    def resume(self, offset: int | None) -> None:
        """Cut the file back to `offset`, the end of the last chunk the store knows as written:
        anything after it was written by a run that died before it could say so, and is written
        again. Without an offset (first run, or another file), a partial last line is cut."""
        if self.fd is None or not self.regular:
            return
        size = os.fstat(self.fd).st_size
        if offset is None:
            offset = _end_of_last_line(self.fd, size)
        elif offset > size:
            raise WriteError(
                f"{self.name} holds {size} bytes, fewer than the {offset} this flow wrote: "
                "it was cut or replaced outside bcbridge; restore it, or give the flow a new "
                "name to write every record again",
                target=self.name,
            )
        try:
            os.ftruncate(self.fd, offset)
            os.lseek(self.fd, offset, os.SEEK_SET)
        except OSError as exc:
            raise _write_error(self.name, exc) from None
        self.offset = offset
        self._resumed()

    def _resumed(self) -> None:
        """What a format must know of the file kept (the CSV header)."""

    def committed(self) -> dict[str, Any] | None:
        """What to save with the chunk's tasks: where the file ends after it."""
        return {"path": self.spec, "offset": self.offset} if self.regular else None

    # --- writing ---------------------------------------------------------------------------

    def write_chunk(self, records: list[dict[str, Any]]) -> list[str | None]:
        state = self._state()
        data, refused = self._encode(self._outgoing(records))
        try:
            self._put(data)
        except OSError as exc:
            self._cut_back()
            self._restore(state)
            raise _write_error(self.name, exc) from None
        self.offset += len(data)
        return refused

    def _put(self, data: bytes) -> None:
        if self.fd is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        if self.regular:
            os.fsync(self.fd)  # durable before the tasks say done

    def _cut_back(self) -> None:
        """After a failed write: the file ends at its last whole chunk again (best effort: the
        next run cuts it back from the store's offset anyway)."""
        if self.fd is None or not self.regular:
            return
        try:
            os.ftruncate(self.fd, self.offset)
            os.lseek(self.fd, self.offset, os.SEEK_SET)
        except OSError:
            pass

    def _state(self) -> Any:
        return None

    def _restore(self, state: Any) -> None:
        pass

    def _encode(self, records: list[dict[str, Any]]) -> tuple[bytes, list[str | None]]:
        raise NotImplementedError

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None


def _end_of_last_line(fd: int, size: int) -> int:
    """The offset just after the last newline of the file (0 if none)."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        block = os.pread(fd, end - start, start)
        found = block.rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def _write_error(name: str, exc: OSError) -> WriteError:
    what = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded"}.get(
        exc.errno or 0, "cannot write"
    )
    if exc.errno == errno.EFBIG:
        what = "file too large"
    reason = exc.strerror or str(exc)
    return WriteError(
        f"{what} writing {name}: {reason}; the records not written are written by the next run",
        target=name,
    )


class JsonlWriter(FileWriter):
    def __init__(self, spec: str, *, append: bool = False, annotations: bool = False):
        super().__init__(spec, append=append, annotations=annotations)

    def _encode(self, records: list[dict[str, Any]]) -> tuple[bytes, list[str | None]]:
        lines: list[bytes] = []
        refused: list[str | None] = []
        for record in records:
            try:
                lines.append(json_bytes(record, newline=True))
                refused.append(None)
            except TypeError as exc:
                refused.append(f"{self.name}: cannot write the record as JSON: {exc}")
        return b"".join(lines), refused


class CsvWriter(FileWriter):
    """The header holds the fields of the first chunk written to an empty file; a record with
    fields the header lacks is refused, not cut down."""

    def __init__(self, spec: str, *, append: bool = False, annotations: bool = False):
        super().__init__(spec, append=append, annotations=annotations)
        self.columns: list[str] | None = None
        self._resumed()

    def _resumed(self) -> None:
        self.columns = None
        if self.fd is not None and self.regular and self.offset > 0:
            first = os.pread(self.fd, min(self.offset, 1 << 20), 0).split(b"\n", 1)[0]
            self.columns = next(csv.reader([first.decode("utf-8-sig")]), None)

    def _state(self) -> Any:
        return self.columns

    def _restore(self, state: Any) -> None:
        self.columns = state  # a header cut off with its chunk is written again

    def _encode(self, records: list[dict[str, Any]]) -> tuple[bytes, list[str | None]]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        if self.columns is None:
            self.columns = list(dict.fromkeys(name for record in records for name in record))
            writer.writerow(self.columns)
        known = set(self.columns)
        refused: list[str | None] = []
        for record in records:
            extra = [name for name in record if name not in known]
            if extra:
                refused.append(
                    f"{self.name}: the record has columns the CSV header lacks: "
                    f"{', '.join(extra)}; add a `keep` transformer or write JSON Lines"
                )
                continue
            writer.writerow([_to_cell(record.get(name)) for name in self.columns])
            refused.append(None)
        return buffer.getvalue().encode("utf-8"), refused


def _to_cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json_bytes(value).decode()
    return value


# --- SQL -----------------------------------------------------------------------------------------

# Column kinds, narrowest first where one holds the other exactly: int < num < text.
_KIND_TYPES: Mapping[str, Any] = {
    "bool": sa.Boolean,
    "int": sa.BigInteger,
    "num": sa.Numeric,
    "date": sa.Date,
    "text": sa.Text,
}
# BC's types: DateTimeOffset stays text, as BC wrote it ("...T10:20:30.1234567Z" has more digits
# than a timestamp column keeps, and a timestamp would not give the same text back).
_CATALOG_KINDS: Mapping[FieldType, str] = {
    FieldType.INT: "int",
    FieldType.DECIMAL: "num",
    FieldType.BOOL: "bool",
    FieldType.DATE: "date",
}
_SQLITE_DIGITS = 15  # SQLite keeps decimals as 8-byte floats: 15 significant digits come back
_BIGINT = 2**63


class _Refused(Exception):
    """A value the column cannot hold as it is."""


def _kind_of_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float | Decimal):
        return "num"
    return "text"


def _kind_of_column(column: sa.Column[Any]) -> str:
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return "bool"
    if isinstance(kind, sa.Integer):
        return "int"
    if isinstance(kind, sa.Float):
        return "float"  # tables of older versions: widened to num before a decimal goes in
    if isinstance(kind, sa.Numeric):
        return "num"
    if isinstance(kind, sa.Date) and not isinstance(kind, sa.DateTime):
        return "date"
    return "text"


def _wider(column: str, value: str) -> str:
    """The narrowest kind holding both, exactly."""
    if column == value and column != "float":
        return column
    if {column, value} <= {"int", "num", "float"}:
        return "num"
    return "text"


def _cell(kind: str, value: Any, *, sqlite: bool) -> Any:
    """`value` as the column of `kind` stores it, or _Refused when it would not come back."""
    if value is None:
        return None
    if kind == "text":
        return _as_text(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise _Refused("not true or false")
    if kind == "date":
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        try:
            parsed = date.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.isoformat() != value:
            raise _Refused("not a date as YYYY-MM-DD")
        return parsed
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise _Refused("not a number")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise _Refused("not a finite number")
    if kind == "int":
        if number != number.to_integral_value():
            raise _Refused("not a whole number")
        if not -_BIGINT <= number < _BIGINT:
            raise _Refused("out of the range of a 64-bit integer")
        return int(number)
    if sqlite and len(number.normalize().as_tuple().digits) > _SQLITE_DIGITS:
        raise _Refused(f"more than {_SQLITE_DIGITS} significant digits, which SQLite rounds")
    return number


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, date):
        return value.isoformat()
    return json_bytes(value).decode()  # numbers as written, true/false, nested values as JSON


class SqlWriter(Writer):
    """Creates the table from the first chunk, upserts on `key`.

    Column types come from `types` (the BC entity's property types, when the records are BC's)
    and otherwise from the values; a column is widened (integer -> numeric -> text) or added when
    later values need it. A value its column cannot hold exactly refuses that record: nothing is
    rounded, cut or dropped."""

    def __init__(
        self,
        url: str,
        table: str,
        *,
        key: str | None = None,
        types: Mapping[str, FieldType] | None = None,
        annotations: bool = False,
    ):
        super().__init__(annotations=annotations)
        self.url = url
        self.name = f"{shown_url(url)}#{table}"
        self.engine = sql_engine(url)
        self.sqlite = self.engine.dialect.name == "sqlite"
        self.table_name = table
        self.key = key
        self.fixed = {
            name: _CATALOG_KINDS.get(kind, "text") for name, kind in (types or {}).items()
        }
        self.table: sa.Table | None = None

    def write_chunk(self, records: list[dict[str, Any]]) -> list[str | None]:
        records = self._outgoing(records)
        try:
            table = self._fit_table(records)
            rows, refused = self._rows(table, records)
            if rows:
                with self.engine.begin() as conn:
                    if self.key:
                        keys = [row[self.key] for row in rows]
                        conn.execute(table.delete().where(table.c[self.key].in_(keys)))
                    conn.execute(table.insert(), rows)
        except sa.exc.SQLAlchemyError as exc:
            self.table = None  # read the table again next time: a DDL may have been rolled back
            raise WriteError(
                f"cannot write to {self.name}: {_driver_words(exc)}; "
                "the records not written are written by the next run",
                target=self.name,
            ) from None
        return refused

    def delete_keys(self, keys: list[Any]) -> None:
        """Delete the rows with these values of `key` (a table not made yet has none)."""
        if not self.key or not keys:
            return
        try:
            if self.table is None and not sa.inspect(self.engine).has_table(self.table_name):
                return
            table = self.table if self.table is not None else self._reflect()
            with self.engine.begin() as conn:
                for start in range(0, len(keys), 500):
                    chosen = keys[start : start + 500]
                    conn.execute(table.delete().where(table.c[self.key].in_(chosen)))
        except sa.exc.SQLAlchemyError as exc:
            self.table = None
            raise WriteError(
                f"cannot delete from {self.name}: {_driver_words(exc)}; "
                "the records not deleted are deleted by the next run",
                target=self.name,
            ) from None

    def _rows(
        self, table: sa.Table, records: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[str | None]]:
        kinds = {column.name: _kind_of_column(column) for column in table.columns}
        rows: list[dict[str, Any]] = []
        refused: list[str | None] = []
        for record in records:
            try:
                if self.key and record.get(self.key) is None:
                    raise _Refused(f"no value for the key field {self.key!r}")
                row = {}
                for name, value in record.items():
                    if value is None and name not in kinds:
                        continue  # no column yet: it comes with the field's first value
                    try:
                        row[name] = _cell(kinds[name], value, sqlite=self.sqlite)
                    except _Refused as exc:
                        raise _Refused(
                            f"field {name!r}: cannot store {value!r} exactly in a "
                            f"{kinds[name]} column: {exc}"
                        ) from None
            except _Refused as exc:
                refused.append(f"{self.name}: {exc}")
                continue
            rows.append({column: row.get(column) for column in kinds})  # one shape for executemany
            refused.append(None)
        return rows, refused

    def _needed(self, records: list[dict[str, Any]]) -> dict[str, str]:
        """The kind each field of the chunk needs, in order of appearance (None-only fields wait
        for a value)."""
        needed: dict[str, str] = {}
        for record in records:
            for name, value in record.items():
                if name in self.fixed:
                    needed[name] = self.fixed[name]
                    continue
                kind = _kind_of_value(value)
                if kind is not None:
                    needed[name] = _wider(needed[name], kind) if name in needed else kind
        if self.key and self.key not in needed:
            needed[self.key] = self.fixed.get(self.key, "text")
        return needed

    def _fit_table(self, records: list[dict[str, Any]]) -> sa.Table:
        needed = self._needed(records)
        if self.table is None and sa.inspect(self.engine).has_table(self.table_name):
            self.table = self._reflect()
        if self.table is None:
            metadata = sa.MetaData()
            columns = [
                sa.Column(name, _KIND_TYPES[kind](), primary_key=(name == self.key))
                for name, kind in needed.items()
            ]
            self.table = sa.Table(self.table_name, metadata, *columns)
            metadata.create_all(self.engine)
            return self.table
        have = {column.name: _kind_of_column(column) for column in self.table.columns}
        added = {name: kind for name, kind in needed.items() if name not in have}
        widened = {
            name: _wider(have[name], kind)
            for name, kind in needed.items()
            if name in have and _wider(have[name], kind) != have[name]
        }
        if added or widened:
            self._alter(added, widened)
            self.table = self._reflect()
        return self.table

    def _reflect(self) -> sa.Table:
        return sa.Table(self.table_name, sa.MetaData(), autoload_with=self.engine)

    def _alter(self, added: dict[str, str], widened: dict[str, str]) -> None:
        from alembic.migration import MigrationContext
        from alembic.operations import Operations

        assert self.table is not None
        with self.engine.begin() as conn:
            operations = Operations(MigrationContext.configure(conn))
            for name, kind in added.items():
                operations.add_column(self.table_name, sa.Column(name, _KIND_TYPES[kind]()))
            if widened:
                # SQLite cannot change a column's type: the batch copies the table over
                with operations.batch_alter_table(self.table_name) as batch:
                    for name, kind in widened.items():
                        batch.alter_column(
                            name, type_=_KIND_TYPES[kind](), existing_type=self.table.c[name].type
                        )

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.engine.dispose()


def open_writer(
    spec: str,
    format: str | None = None,
    *,
    key: str | None = None,
    append: bool = False,
    types: Mapping[str, FieldType] | None = None,
    annotations: bool = False,
) -> Writer:
    """A writer for `spec`; `types` (field -> BC type) sets a SQL table's column types;
    `annotations` keeps OData annotations such as ``@odata.etag`` (left out by default)."""
    target = sql_target(spec)
    if target is not None:
        return SqlWriter(*target, key=key, types=types, annotations=annotations)
    kind = _format_of(spec, format)
    writer = JsonlWriter if kind == "jsonl" else CsvWriter
    return writer(spec, append=append, annotations=annotations)


def jsonl_text(records: Iterable[dict[str, Any]]) -> str:
    """Records as JSON Lines text (for messages and tests)."""
    return b"".join(json_bytes(record, newline=True) for record in records).decode()

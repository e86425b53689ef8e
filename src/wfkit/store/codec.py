"""How wfkit's values look to each database driver, both ways, and the one row loader.

wfkit's hot paths talk to the driver (sqlite3 or psycopg) directly: the
recorder writes a run's history with fixed statements, and the repository
reads runs, stages and decisions back. Both must agree, value for value, with
what the SQLModel tables define (the tests check it against SQLAlchemy's own
types). This module is that agreement:

============  ================================  ===============================
column type   SQLite (sqlite3)                  PostgreSQL (psycopg)
============  ================================  ===============================
UUID          32 hex digits (CHAR(32))          ``uuid`` (psycopg: ``UUID``)
UTC time      ``"2026-01-02 03:04:05.000006"``  ``timestamptz`` (aware datetime)
              (UTC, no offset: sorts as text)
JSON          JSON text                         ``jsonb`` (psycopg parses it)
status enum   its lower-case value              its lower-case value
boolean       0 or 1                            ``boolean``
============  ================================  ===============================

:func:`row_loader` turns rows into model instances: driver rows through a :class:`Codec` (the
repository's reads), or values that are the model's types already (the executor's finished run).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from wfkit.store.models import UTC, UTCDateTime

M = TypeVar("M")

def sqlite_time(value: datetime | None) -> str | None:
    """A time as SQLAlchemy's SQLite ``DateTime`` stores it (in UTC): ``"2026-01-02 03:04:05.000006"``."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")


_SCAN_JSON = json.JSONDecoder().raw_decode


class _Unreadable:
    """Stands for a stored JSON value that nests more deeply than Python's parser goes (wfkit never
    writes one; something else did): readers decide what to do with it, so that one such row
    cannot break a whole listing."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNREADABLE"


UNREADABLE = _Unreadable()
#: What a listing shows in place of a value it cannot read.
UNREADABLE_MARK = {"wfkit_unreadable": "this value nests more deeply than Python's JSON parser can read "
                                       "(wfkit writes at most 100 levels; this one was written otherwise)"}


def json_loads(text: str | bytes) -> Any:
    """``json.loads``, but a value too deep to parse is :data:`UNREADABLE` instead of a RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        return UNREADABLE


def _json_in(text: Any) -> Any:
    # SQLite gives a column declared JSON numeric affinity: a bare number is stored, and read back,
    # as a number. Other values are compact JSON text (no surrounding whitespace): scanning it
    # directly is twice as fast as ``json.loads``, which is still the judge of anything else.
    if not isinstance(text, str):
        return text
    try:
        value, end = _SCAN_JSON(text)
        if end == len(text):
            return value
    except ValueError:
        pass
    except RecursionError:
        return UNREADABLE
    return json_loads(text)


def _sqlite_time_in(text: str) -> datetime:
    # Parsing the offset is several times faster than ``.replace(tzinfo=UTC)`` afterwards, and gives
    # the same ``timezone.utc``.
    return datetime.fromisoformat(text + "+00:00")


def _aware_utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _enum_in(enum_cls: type[Any]) -> Callable[[str], Any]:
    members = {member.value: member for member in enum_cls}

    def decode(value: str) -> Any:
        member = members.get(value)
        return member if member is not None else enum_cls(value)  # unknown: ValueError naming it

    return decode


# SQLite's clock in the text form of sqlite_time(): strftime gives milliseconds, the column's form
# has microseconds (both sort as text, and read back alike).
_SQLITE_NOW = "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"
_SQLITE_LEASE = "(strftime('%Y-%m-%d %H:%M:%f', 'now', ? || ' seconds') || '000')"


class Codec:
    """Values to and from one driver (``"sqlite"`` or ``"postgresql"``)."""

    def __init__(self, dialect_name: str):
        self.name = dialect_name
        self.sqlite = dialect_name == "sqlite"

    # -- writing

    def sql(self, text: str) -> str:
        """Statement text with ``?`` placeholders (and ``{j}`` for JSON ones), for this driver.

        ``{now}`` is the database's clock, and ``{lease}`` the database's clock plus a parameter's
        number of seconds, in the form the time columns hold: leases are compared by one clock,
        the database's, whatever the clocks of the machines that write them say. (A SQLite file
        has one machine's clock: the one its processes share.)"""
        if self.sqlite:
            return (text.replace("{j}", "?").replace("{now}", _SQLITE_NOW)
                    .replace("{lease}", _SQLITE_LEASE))
        return (text.replace("?", "%s").replace("{j}", "%s::jsonb").replace("{now}", "now()")
                .replace("{lease}", "now() + %s * interval '1 second'"))

    def id(self, value: uuid.UUID) -> Any:
        return value.hex if self.sqlite else value

    def time(self, value: datetime | None) -> Any:
        return sqlite_time(value) if self.sqlite else value

    def flag(self, value: bool) -> Any:
        return int(value) if self.sqlite else value

    # -- reading

    def time_in(self, value: Any) -> datetime:
        """A time as the driver returns it (not None), as an aware UTC datetime."""
        return _sqlite_time_in(value) if self.sqlite else _aware_utc(value)

    def converter(self, column_type: sa.types.TypeEngine[Any]) -> Callable[[Any], Any] | None:
        """How a non-NULL value of this column type comes back from the driver (None: as it is)."""
        if isinstance(column_type, UTCDateTime):
            return _sqlite_time_in if self.sqlite else _aware_utc
        if isinstance(column_type, sa.Enum) and column_type.enum_class is not None:
            return _enum_in(column_type.enum_class)
        if isinstance(column_type, sa.Uuid):
            return uuid.UUID if self.sqlite else None
        if isinstance(column_type, sa.JSON):
            return _json_in if self.sqlite else None
        if isinstance(column_type, sa.Boolean):
            return bool if self.sqlite else None
        return None


def row_loader(model: type[M], columns: Sequence[sa.Column[Any]] | None = None, codec: Codec | None = None,
               absent: Mapping[str, Any] | None = None) -> Callable[[Sequence[Any]], M]:
    """A function from a row (the values of ``columns`` in order: by default all of the table's)
    to a detached ``model`` instance. With a ``codec``, each value is converted from its driver's
    form; without, the values are taken to be the model's types already. ``absent`` gives the
    value of each field the row leaves out.

    Listings load thousands of rows, so the function is generated for the columns (as
    :mod:`dataclasses` generates ``__init__``), doing what the ORM's loader does for a row
    without a session, identity map or validation: a new instance (``new_instance``), then the
    typed values straight into its ``__dict__``. (A validated ``model(**row)`` costs ~15x more.)
    """
    cols = list(model.__table__.columns if columns is None else columns)  # type: ignore[attr-defined]
    sa.orm.configure_mappers()
    namespace: dict[str, Any] = {"new": model._sa_class_manager.new_instance}  # type: ignore[attr-defined]
    lines = ["def load(row):", f"    {''.join(f'v{i}, ' for i in range(len(cols)))}= row",
             "    obj = new()", "    values = obj.__dict__"]
    for i, col in enumerate(cols):
        convert = None if codec is None else codec.converter(col.type)
        if convert is None:
            lines.append(f"    values[{col.key!r}] = v{i}")
        else:
            namespace[f"c{i}"] = convert
            lines.append(f"    values[{col.key!r}] = None if v{i} is None else c{i}(v{i})")
    for i, (key, value) in enumerate((absent or {}).items()):
        namespace[f"a{i}"] = value
        lines.append(f"    values[{key!r}] = a{i}")
    lines.append("    return obj")
    exec("\n".join(lines), namespace)  # noqa: S102 - the text is made of column keys and indexes only
    load: Callable[[Sequence[Any]], M] = namespace["load"]
    return load


CODECS = {name: Codec(name) for name in ("sqlite", "postgresql")}


def codec_for(dialect_name: str) -> Codec:
    """The codec of a SQLAlchemy dialect name."""
    return CODECS[dialect_name]

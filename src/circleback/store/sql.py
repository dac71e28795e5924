"""The SQL the verbs share: row locks, fences, batched writes, id lists, takeovers, wake-ups.

On PostgreSQL every transaction that writes several rows locks them in id order
first, so two writers never deadlock; SQLite locks the whole database for each
write transaction (``BEGIN IMMEDIATE``), so there the same helpers only select.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = [
    "WAKEUP_CHANNEL",
    "among",
    "changes",
    "executemany",
    "expired_leases",
    "fence",
    "group_key",
    "id_in",
    "lock_rows",
    "log_takeovers",
    "release_leases",
    "update_grouped",
    "wake_other_workers",
]

logger = logging.getLogger("circleback.store")

def lock_rows(
    conn: Connection, table: sa.Table, *conditions: Any, skip_locked: bool = False
) -> list[uuid.UUID]:
    """Lock the matching rows in id order before writing them; returns their ids.

    On PostgreSQL every transaction that writes several rows takes their locks
    in the same (id) order first, so two writers can never deadlock; with
    ``skip_locked`` rows that another transaction holds are left out instead of
    waited for. SQLite locks the whole database per write transaction, so
    there it only selects.
    """
    query = sa.select(table.c.id).where(*conditions).order_by(table.c.id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=skip_locked)
    return list(conn.execute(query).scalars())


def fence(
    conn: Connection, table: sa.Table, ids: list[uuid.UUID], worker_id: str, status: str
) -> dict[uuid.UUID, int]:
    """The lease tokens of the rows among ``ids`` that ``worker_id`` holds in ``status``.

    The rows are locked (PostgreSQL, in id order like every locking write here)
    or the database is (SQLite), so what is read holds until the commit and the
    writes that follow need not check it again. The rows are looked up by id
    alone: given the status too, SQLite's planner walks the status index (every
    active job) once the list of ids is long.
    """
    if conn.dialect.name == "sqlite":
        return _sqlite_fence(conn, table, ids, worker_id, status)
    query = (
        sa.select(table.c.id, table.c.lease_token, table.c.lease_owner, table.c.status)
        .where(id_in(conn, table, ids))
        .order_by(table.c.id)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {
        row_id: token
        for row_id, token, owner, row_status in conn.execute(query)
        if owner == worker_id and row_status == status
    }


def _sqlite_fence(
    conn: Connection, table: sa.Table, ids: list[uuid.UUID], worker_id: str, status: str
) -> dict[uuid.UUID, int]:
    """:func:`fence` on SQLite: one fixed statement, the ids passed as one JSON array.

    The same SQL whatever the number of ids, so nothing is built or compiled
    per batch, and the ids come back as the stored text, matched without
    parsing. SQLite keeps ids as 32 hex digits (SQLAlchemy's ``Uuid`` there).
    """
    by_text = {row_id.hex: row_id for row_id in ids}
    rows = conn.exec_driver_sql(
        f"SELECT id, lease_token, lease_owner, status FROM {table.name} "
        "WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(by_text)),),
    )
    return {
        by_text[row_id]: token
        for row_id, token, owner, row_status in rows
        if owner == worker_id and row_status == status
    }


def update_grouped(
    conn: Connection,
    table: sa.Table,
    rows: list[tuple[uuid.UUID, dict[str, Any]]],
    constant: dict[str, Any],
) -> None:
    """Write each row's new values (plus ``constant``) to the row with that id.

    Rows with the same new values share one ``UPDATE ... WHERE id IN (...)``
    (the ids as one parameter, :func:`id_in`): a batch of timers that fired
    together, or of messages sent together, is one row of parameters instead
    of one per job. Such groups, and rows whose values are their own, go in
    one ``executemany`` per set of columns, its SQL compiled once.
    """
    groups: dict[tuple[Any, ...], tuple[dict[str, Any], list[uuid.UUID]]] = {}
    for row_id, values in rows:
        key = group_key(values)
        group = groups.get(key)
        if group is None:
            groups[key] = (values, [row_id])
        else:
            group[1].append(row_id)
    singles: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    shared: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for values, ids in groups.values():
        params = {f"b_{name}": value for name, value in values.items()}
        if len(ids) == 1:
            singles.setdefault(tuple(values), []).append(params | {"b_id": ids[0]})
        else:
            shared.setdefault(tuple(values), []).append(params | {"b_ids": ids_value(conn, ids)})
    for names, many in shared.items():
        executemany(
            conn,
            ("update shared", table.name, names, tuple(constant.items())),
            lambda names=names: (  # type: ignore[misc]
                sa.update(table)
                .where(id_in(conn, table, (), key="b_ids"))
                .values({name: sa.bindparam(f"b_{name}") for name in names} | constant)
            ),
            many,
        )
    for names, many in singles.items():
        executemany(
            conn,
            ("update", table.name, names, tuple(constant.items())),
            lambda names=names: (  # type: ignore[misc]
                sa.update(table)
                .where(table.c.id == sa.bindparam("b_id"))
                .values({name: sa.bindparam(f"b_{name}") for name in names} | constant)
            ),
            many,
        )


def group_key(values: dict[str, Any]) -> tuple[Any, ...]:
    """What rows share when they may be written by one ``UPDATE`` (see :func:`update_grouped`).

    Equal keys mean the same columns with values stored alike.
    """
    row = tuple(values.values())
    types = tuple(map(type, row))
    if _SCALARS.issuperset(types):
        # Equal values of different types (1, 1.0, True) are stored differently: the
        # types are part of the key.
        return (tuple(values), row, types)
    # A container (a check's result) groups only with the very same object: results
    # that merely look alike are rare, and encoding each one to compare cost more.
    return tuple(
        (name, id(value)) if isinstance(value, _CONTAINERS)
        # -0.0 equals 0.0 but is stored as written: floats compare by their exact form.
        else (name, float, value.hex()) if type(value) is float
        else (name, type(value), value)
        for name, value in values.items()
    )


@attrs.frozen
class _ManyPlan:
    """A statement's SQL for the driver, and how each row's values become its parameters."""

    sql: str
    positional: bool
    #: Per parameter: its name, the row key it comes from (None: a constant), the type's
    #: processor, and the constant's value as the driver takes it.
    params: tuple[tuple[str, str | None, Any, Any], ...]


_MANY_PLANS: dict[tuple[Any, ...], _ManyPlan] = {}
#: Rows per ``executemany`` call (see :func:`executemany`).
_MANY_SLICE = 100


def executemany(
    conn: Connection,
    key: tuple[Any, ...],
    build: Callable[[], sa.Insert | sa.Update],
    rows: list[dict[str, Any]],
) -> None:
    """``conn.execute(build(), rows)``, with the SQL and the parameter handling worked out once.

    SQLAlchemy sets up every execution anew: it builds each row's parameter
    dictionary and runs each value through its type's processor by name, which
    for a batch of outbox rows costs more than SQLite's work on them. Here the
    statement is compiled once per dialect and ``key``, the same processors are
    applied in one pass, and the rows go to the driver's ``executemany``.
    """
    dialect = conn.dialect
    plan_key = (dialect.name, dialect.driver, dialect.paramstyle, key, tuple(rows[0]))
    plan = _MANY_PLANS.get(plan_key)
    if plan is None:
        compiled = build().compile(dialect=dialect)
        names = compiled.positiontup if compiled.positional else list(compiled.binds)
        params = []
        for name in names or ():
            bind = compiled.binds[name]
            source = bind.key if bind.key in rows[0] else None
            # The type's own conversion for this dialect (None: the value goes as it is).
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            constant = None
            if source is None:
                constant = processor(bind.value) if processor else bind.value
            params.append((name, source, processor, constant))
        plan = _MANY_PLANS[plan_key] = _ManyPlan(
            sql=str(compiled), positional=bool(compiled.positional), params=tuple(params)
        )
    spec = plan.params
    # In slices: under asyncio each slice's preparation runs on the event loop, and between
    # slices (while the driver works) other tasks get their turn, so a large batch does not
    # hold up checks falling due meanwhile.
    for start in range(0, len(rows), _MANY_SLICE):
        part = rows[start:start + _MANY_SLICE] if len(rows) > _MANY_SLICE else rows
        data: list[Any]
        if plan.positional:
            data = [
                tuple(
                    constant if source is None
                    else processor(row[source]) if processor else row[source]
                    for _, source, processor, constant in spec
                )
                for row in part
            ]
        else:
            data = [
                {
                    name: constant if source is None
                    else processor(row[source]) if processor else row[source]
                    for name, source, processor, constant in spec
                }
                for row in part
            ]
        conn.exec_driver_sql(plan.sql, data)


#: A list of ids as one parameter on PostgreSQL.
_UUID_ARRAY = sa.ARRAY(sa.Uuid())


def id_in(
    conn: Connection, table: sa.Table, ids: Iterable[uuid.UUID], key: str | None = None
) -> sa.ColumnElement[bool]:
    """``table.id`` is one of ``ids``, in SQL that is the same however many there are.

    Drivers keep prepared statements by their text (the sqlite3 module the
    last 128 per connection, asyncpg the last 100): ``IN (?, ?, …)`` would be
    new text for each length of the list, parsed and planned again and kept,
    thousands of placeholders long. The ids go as one value instead: on SQLite
    a JSON array of the stored text (32 hex digits, SQLAlchemy's ``Uuid``
    there), on PostgreSQL an array of UUIDs. With ``key``, the parameter has
    that name, for statements whose rows give it (:func:`ids_value`).
    """
    sqlite = conn.dialect.name == "sqlite"
    ids_type = sa.String() if sqlite else _UUID_ARRAY
    param = sa.bindparam(key, ids_value(conn, ids), type_=ids_type)
    if sqlite:
        listed = sa.func.json_each(param).table_valued("value")
        return table.c.id.in_(sa.select(listed.c.value))
    return table.c.id == sa.any_(param)


def ids_value(conn: Connection, ids: Iterable[uuid.UUID]) -> Any:
    """A list of ids as the one parameter :func:`id_in` compares with."""
    if conn.dialect.name == "sqlite":
        return json.dumps([item.hex for item in ids])
    return list(ids)


def expired_leases(
    conn: Connection, table: sa.Table, now: datetime, *conditions: Any
) -> dict[uuid.UUID, str]:
    """Rows whose lease has run out, with the worker that held it.

    Found through an index (jobs: the lease expiry; outbox: pending entries),
    so a claim pays for the expired leases only, not for every row.
    """
    rows = conn.execute(
        sa.select(table.c.id, table.c.lease_owner).where(
            *conditions, table.c.lease_expires_at.is_not(None), table.c.lease_expires_at <= now
        )
    )
    return {row.id: row.lease_owner for row in rows}


def log_takeovers(
    worker_id: str, kind: str, expired: dict[uuid.UUID, str], claimed: Iterable[uuid.UUID]
) -> None:
    """Say which expired leases a claim took over, and from whom: operators look for stalls."""
    owners = Counter(expired[item] for item in claimed if item in expired)
    for owner, count in sorted(owners.items()):
        logger.warning(
            "%s took over %d expired %s leases from %s", worker_id, count, kind, owner
        )


#: PostgreSQL channel on which a new or cancelled job wakes every worker.
WAKEUP_CHANNEL = "circleback_wakeup"


def wake_other_workers(conn: Connection) -> None:
    """Tell other worker processes to look at the store now (sent when the transaction commits)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": WAKEUP_CHANNEL})


def changes(before: object, after: object, fields: Sequence[str]) -> dict[str, Any]:
    """The fields whose value ``after`` differs from ``before`` (in value or in stored type).

    The row still holds ``before``'s values (the fence was just checked), so
    only these need writing; the rest would only split batches into groups.
    """
    changed = {}
    for name in fields:
        old, new = getattr(before, name), getattr(after, name)
        if old is new:
            continue
        if type(old) is type(new) and not isinstance(old, _CONTAINERS):
            if old != new:
                changed[name] = new
        # Unequal values are written (at worst a value stored the same is written again);
        # equal ones may still be stored differently (``True`` and ``1`` inside JSON).
        elif old != new or _hashable(old) != _hashable(new):
            changed[name] = new
    return changed


def _hashable(value: Any) -> Any:
    """A key under which only values stored alike meet (``True``, ``1`` and ``1.0`` do not)."""
    if isinstance(value, _CONTAINERS):
        return ("json", json.dumps(value, sort_keys=True, default=repr))
    return (type(value), value)


_CONTAINERS = (dict, list, tuple)
#: Types whose values group by equality (with the type): what a row's columns mostly hold.
_SCALARS = frozenset({type(None), bool, int, str, datetime, uuid.UUID})


def among(table: sa.Table, due: sa.Select[Any], *, locks_rows: bool) -> sa.ColumnElement[bool]:
    """``table.id`` is one of the ids ``due`` selects, evaluated exactly once.

    On PostgreSQL the ids are locked with ``FOR UPDATE SKIP LOCKED`` and
    gathered into an array first: a plain ``IN (subquery ... LIMIT)`` may be
    planned as a subplan run once per outer row, which claims more rows
    than the limit and rows that other workers hold.
    """
    if locks_rows:
        locked = due.with_for_update(skip_locked=True).scalar_subquery()
        return table.c.id == sa.any_(sa.func.array(locked))
    return table.c.id.in_(due.scalar_subquery())


def release_leases(
    conn: Connection,
    table: sa.Table,
    worker_id: str,
    pairs: list[tuple[uuid.UUID, int]],
    status: str,
) -> int:
    """Clear the leases among ``pairs`` (id, token) that ``worker_id`` still holds; how many.

    Counted from the fence: drivers need not report an ``executemany``'s row count.
    """
    if not pairs:
        return 0
    tokens = fence(conn, table, [item_id for item_id, _ in pairs], worker_id, status)
    held = [
        {"b_id": item_id, "b_token": token}
        for item_id, token in pairs
        if tokens.get(item_id) == token
    ]
    if held:
        conn.execute(
            sa.update(table)
            .where(
                table.c.id == sa.bindparam("b_id"),
                table.c.lease_token == sa.bindparam("b_token"),
                table.c.lease_owner == worker_id,
            )
            .values(lease_owner=None, lease_expires_at=None),
            held,
        )
    return len(held)

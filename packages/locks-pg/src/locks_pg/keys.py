"""Advisory lock keys: lock names → signed 64-bit keys, and keys as ``pg_locks`` shows them.

A name becomes ``locks.keys.int64_of(KEY_PREFIX + name)``: the first 8 bytes of SHA-256 of its
UTF-8 bytes, big-endian, two's complement. Integer names are keys as they are (they must fit in a
signed 64-bit integer). The mapping is documented and fixed, so any client (``psql``, another
language) can compute the key of a name.

PostgreSQL shows a bigint advisory key in ``pg_locks`` split in two unsigned 32-bit ``oid``
columns: ``classid`` the high half, ``objid`` the low half, with ``objsubid = 1`` (``2`` is the
separate keyspace of the two-``int4`` functions).
"""

from __future__ import annotations

from locks.keys import INT64_MAX, INT64_MIN, int64_of

__all__ = ["KEY_SQL", "advisory_key", "key_from_pg_locks", "pg_locks_ids"]

#: SQL expression giving the bigint key of a ``pg_locks`` row aliased ``l`` (``<<`` wraps in
#: bigint, which is exactly the two's complement we want for the high half).
KEY_SQL = "((l.classid::int8 << 32) | l.objid::int8)"

_MASK32 = 0xFFFFFFFF


def advisory_key(name: str | int, prefix: str = "") -> int:
    """The bigint key ``AdvisoryLockBackend`` locks for ``name`` (with the backend's
    ``KEY_PREFIX``). ``SELECT pg_advisory_lock(<key>)`` in ``psql`` takes the same lock."""
    if isinstance(name, bool) or not isinstance(name, (str, int)):
        raise TypeError(f"a lock name must be a str or an int, not {type(name).__name__}")
    if isinstance(name, int):
        _check_int64(name)
        return name
    if not name:
        raise ValueError("a lock name must not be empty")
    return int64_of(prefix + name)


def pg_locks_ids(key: int) -> tuple[int, int]:
    """``(classid, objid)``: how ``pg_locks`` shows the bigint advisory ``key`` (negative keys
    included: the halves are unsigned).

    >>> pg_locks_ids(-1)
    (4294967295, 4294967295)
    """
    if isinstance(key, bool) or not isinstance(key, int):
        raise TypeError(f"an advisory key is an int, not {type(key).__name__}")
    _check_int64(key)
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & _MASK32


def key_from_pg_locks(classid: int, objid: int) -> int:
    """The inverse of :func:`pg_locks_ids`: the signed key of a ``pg_locks`` row."""
    for value, column in ((classid, "classid"), (objid, "objid")):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MASK32:
            raise ValueError(f"{column} must be an unsigned 32-bit int, got {value!r}")
    unsigned = (classid << 32) | objid
    return unsigned - (1 << 64) if unsigned > INT64_MAX else unsigned


def _check_int64(key: int) -> None:
    if not INT64_MIN <= key <= INT64_MAX:
        raise ValueError(f"an advisory lock key must fit in a signed 64-bit integer, got {key}")

"""What a lock's row stores, and how it reads back: the primary key of a key, the name as
text columns take it, and the database's datetimes as Unix time."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

from locks.keys import Key, LockName


def digest_of(key: Key) -> str:
    """The primary key of a lock's row: SHA-256 of its key (names of any length fit)."""
    return hashlib.sha256(str(key).encode("utf-8", "surrogatepass")).hexdigest()


def display_name(name: LockName) -> str:
    """The name as stored for display: text columns take no NUL and no lone surrogate."""
    text = str(name).encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def unix_time(value: Any) -> float | None:
    """A datetime read back from the database (aware, naive UTC, or SQLite text) as Unix time."""
    if value is None:
        return None
    if isinstance(value, str):
        from django.utils.dateparse import parse_datetime

        parsed = parse_datetime(value)
        if parsed is None:
            return None
        value = parsed
    if isinstance(value, datetime):
        moment: datetime = value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)  # stored as UTC by the SQL clocks
        return moment.timestamp()
    return None

"""Lock name → server key, in one place for every backend.

Each server limits what a key may be: MySQL's GET_LOCK takes 64 case-insensitive characters,
Memcached 250 bytes without whitespace, a file name no ``/`` or NUL, a PostgreSQL advisory lock a
signed 64-bit integer. A backend declares its limits as a :class:`KeySpec`; :func:`make_key` keeps
a name readable when it fits and hashes it otherwise.

Distinct names never share a key: a name passes through unchanged only when it is made of the
safe characters (which exclude :data:`HASH_MARKER`), and every other name becomes a readable stem,
the marker and 128 bits of SHA-256 of the whole name. A hashed key therefore never equals a
passed-through one, and two hashed keys collide only if SHA-256 does.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "HASH_MARKER",
    "INT64_MAX",
    "INT64_MIN",
    "Key",
    "KeySpec",
    "LockName",
    "int64_of",
    "make_key",
    "validate_name",
]

LockName = str | int
Key = str | int

HASH_MARKER = "~"
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
SAFE_CHARS = frozenset(string.ascii_letters + string.digits + "-_.:@+=,")
_HASH_HEX_CHARS = 32  # 128 bits


@dataclass(frozen=True)
class KeySpec:
    """What a backend's server accepts as a key.

    Attributes:
        kind: ``"text"`` for string keys, ``"int64"`` for signed 64-bit integer keys.
        max_length: the longest key in UTF-8 bytes (text keys), prefix included.
        safe_chars: characters a name may keep unchanged; any other character makes it hashed.
        case_insensitive: the server folds case, so a name with upper-case letters is hashed.
        accepts_int_names: integer names are used as keys as they are (int64 keys only).
    """

    kind: Literal["text", "int64"] = "text"
    max_length: int = 200
    safe_chars: frozenset[str] = SAFE_CHARS
    case_insensitive: bool = False
    accepts_int_names: bool = False

    def __post_init__(self) -> None:
        if HASH_MARKER in self.safe_chars:
            raise ValueError(f"safe_chars must not contain the hash marker {HASH_MARKER!r}")
        if self.kind == "text" and self.max_length < _HASH_HEX_CHARS + 1 + 8:
            raise ValueError("max_length leaves no room for a hashed key")


TEXT = KeySpec()


def validate_name(name: object, spec: KeySpec = TEXT) -> LockName:
    """Check a lock name's type and value, raising ``TypeError``/``ValueError`` before any I/O."""
    if isinstance(name, bool):
        raise TypeError("a lock name must be a str, not bool")
    if isinstance(name, int):
        if not spec.accepts_int_names:
            raise TypeError("this backend takes str lock names; pass str(n) to lock on a number")
        if not INT64_MIN <= name <= INT64_MAX:
            raise ValueError(f"an integer lock key must fit in a signed 64-bit integer, got {name}")
        return name
    if not isinstance(name, str):
        raise TypeError(f"a lock name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("a lock name must not be empty")
    return name


def _encode(name: str) -> bytes:
    # surrogatepass: a name with a lone surrogate is still a distinct, hashable name
    return name.encode("utf-8", "surrogatepass")


def int64_of(name: str) -> int:
    """The stable signed 64-bit key of a name: the first 8 bytes of SHA-256 of its UTF-8 bytes,
    big-endian, two's complement. Documented and fixed: changing it would let old and new
    versions of an application hold "the same" lock at once."""
    return int.from_bytes(hashlib.sha256(_encode(name)).digest()[:8], "big", signed=True)


def make_key(name: LockName, spec: KeySpec = TEXT, prefix: str = "") -> Key:
    """Map a validated name to the key the server sees (see the module docstring)."""
    if isinstance(name, int):
        return name
    if spec.kind == "int64":
        return int64_of(prefix + name)
    room = spec.max_length - len(_encode(prefix))
    if (
        len(name) <= room
        and all(c in spec.safe_chars for c in name)
        and not (spec.case_insensitive and name != name.lower())
        and name not in (".", "..")
    ):
        return prefix + name
    digest = hashlib.sha256(_encode(name)).hexdigest()[:_HASH_HEX_CHARS]
    stem_room = min(room - _HASH_HEX_CHARS - 1, 40)
    stem = "".join(c if c in spec.safe_chars else "_" for c in name[:stem_room])
    if spec.case_insensitive:
        stem = stem.lower()
    return f"{prefix}{stem}{HASH_MARKER}{digest}"

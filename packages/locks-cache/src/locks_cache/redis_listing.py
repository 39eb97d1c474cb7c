"""Listing the Redis backend's held locks: a ``SCAN`` of its namespace, read back into
:class:`~locks.backends.HolderInfo` rows.

An exclusive lock's value is its holder record (``token \\n since \\n owner \\n name``, see
:mod:`locks_cache.redis_scripts`); a shared lock is a sorted set of reader tokens that records no
name, so readers are listed only when no prefix is asked for.
"""

from __future__ import annotations

import time
from typing import Any

from locks.backends import HolderInfo


def _text(key: str | bytes) -> str:
    return key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key


def scan_holders(client: Any, namespace: str, prefix: str | None) -> list[HolderInfo]:
    """The held locks of ``namespace`` (every node of a cluster); redis-py's errors pass through."""
    found = [_text(k) for k in client.scan_iter(match=f"{namespace}{{*}}", count=1000)]
    pipe = client.pipeline(transaction=False)
    for key in found:
        pipe.type(key)
    kinds = [_text(kind) for kind in pipe.execute()]
    pipe = client.pipeline(transaction=False)
    for key, kind in zip(found, kinds):
        if kind == "string":
            pipe.get(key)
            pipe.pttl(key)
            pipe.get(key + ":f")
        elif kind == "zset":
            pipe.zrange(key, 0, -1, withscores=True)
    replies = iter(pipe.execute())
    now = time.time()
    start = len(namespace) + 1
    result = []
    for full, kind in zip(found, kinds):
        if kind == "zset":
            live = [score for _, score in next(replies) if score / 1000 > now]
            if live and prefix is None:
                result.append(
                    HolderInfo(
                        key=full[start:-1], shared=True, expires_at=max(live) / 1000, extra={"holders": len(live)}
                    )
                )
            continue
        if kind != "string":
            continue
        value, pttl, fence = next(replies), next(replies), next(replies)
        fields = value.split(b"\n", 3) if value else []
        if len(fields) < 4:
            continue
        name = fields[3].decode("utf-8", "surrogatepass")
        if prefix is not None and not name.startswith(prefix):
            continue
        owner = fields[2].decode("utf-8", "replace")
        host, _, rest = owner.partition(":")
        pid = rest.partition(":")[0]
        result.append(
            HolderInfo(
                key=full[start:-1],
                name=name,
                owner=owner,
                host=host or None,
                pid=int(pid) if pid.isdigit() else None,
                since=float(fields[1]),
                expires_at=now + pttl / 1000 if pttl and pttl > 0 else None,
                token=int(fence) if fence and fence.isdigit() else None,
            )
        )
    return result

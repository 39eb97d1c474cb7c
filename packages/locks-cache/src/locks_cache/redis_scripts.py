"""The Redis backend's Lua scripts, and the server keys they act on.

Every release and extend is a script that acts only when the key still holds this hold's random
token (see :mod:`locks_cache.redis_lock` for the race that prevents). Keys of one lock share the
hash tag ``{K}`` (K: the lock's key), so one script touches one slot of a Redis Cluster:

* ``<ns>{K}``: the lock. Held exclusively, a string ``token \\n since \\n owner \\n name`` with
  the lease as its expiry (``SET NX PX``); held shared, a sorted set of the readers' tokens
  scored by their lease ends (server ms), expiring with the last one. ``SET NX`` fails on either,
  so an exclusive acquire needs no other check;
* ``<ns>{K}:f``: the fencing counter (see ``ACQUIRE``);
* ``<ns>{K}:q``: set while someone waits, so a release only signals when it matters;
* ``<ns>{K}:w``: the wake-up list: a release pushes, a waiter's ``BLPOP`` returns. Unlike pub/sub,
  a signal pushed between a waiter's failed attempt and its ``BLPOP`` is not lost.
"""

from __future__ import annotations

from locks.keys import Key

#: Fencing counters outlive the lease by this long, so a clock stepping back between two
#: acquisitions still yields a larger token (see ``ACQUIRE``).
FENCE_KEEP_MS = 3_600_000
#: How long a release signal waits in the list for a waiter that is about to block.
WAKE_KEEP_MS = 10_000
#: Length of a hold's random token (hex), which leads the lock's value.
TOKEN_CHARS = 32
#: Names are recorded (for listing) up to this many characters.
NAME_RECORDED = 1000

_NOW_MS = (
    "local now = redis.call('time')\nlocal now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)\n"
)

# Exclusive acquire. KEYS: lock, fence, wait flag, wake list. ARGV: value (token, since, owner,
# name), ttl ms, wait ms. Returns {1, fence} when acquired, {0, ms until the holder's lease ends}
# when busy (-1: no expiry). The fence is an INCR; a counter that does not exist (first use, or
# expired an hour after it was created) starts at the server time in µs, so tokens keep growing
# across its expiry as long as the server clock does not step back. An attempt that finds its own
# token (sent again after the connection broke before the first reply) is told it holds the lock.
# A waiting attempt (wait ms > 0) that fails sets the wait flag, so the next release signals, and
# drops a pending signal: it was sent by a release before the current hold began, and would wake
# this waiter for nothing.
ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'nx', 'px', ARGV[2]) then
  local fence = redis.call('incr', KEYS[2])
  if fence == 1 then
    local now = redis.call('time')
    fence = tonumber(now[1]) * 1000000 + tonumber(now[2])
    redis.call('set', KEYS[2], string.format('%d', fence), 'px', tonumber(ARGV[2]) + FENCE_KEEP_MS)
  end
  return {1, fence}
end
local held = redis.pcall('get', KEYS[1])
if type(held) == 'string' and string.sub(held, 1, TOKEN_CHARS) == string.sub(ARGV[1], 1, TOKEN_CHARS) then
  return {1, tonumber(redis.call('get', KEYS[2]))}
end
if ARGV[3] ~= '0' then
  redis.call('set', KEYS[3], '1', 'px', ARGV[3])
  redis.call('del', KEYS[4])
end
return {0, redis.call('pttl', KEYS[1])}
"""

# Shared acquire. KEYS: lock, fence, wait flag, wake list. ARGV: token, ttl ms, wait ms. Joins the readers
# (dropping those whose lease ended) unless a writer holds the lock. Returns {1, current fence} or
# {0, ms left} as ACQUIRE.
ACQUIRE_SHARED = (
    """
local kind = redis.call('type', KEYS[1]).ok
if kind ~= 'none' and kind ~= 'zset' then
  if ARGV[3] ~= '0' then
    redis.call('set', KEYS[3], '1', 'px', ARGV[3])
    redis.call('del', KEYS[4])
  end
  return {0, redis.call('pttl', KEYS[1])}
end
"""
    + _NOW_MS
    + """
if kind == 'zset' then redis.call('zremrangebyscore', KEYS[1], '-inf', now_ms) end
redis.call('zadd', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
if redis.call('pttl', KEYS[1]) < tonumber(ARGV[2]) then redis.call('pexpire', KEYS[1], ARGV[2]) end
return {1, tonumber(redis.call('get', KEYS[2]) or '0')}
"""
)

# Signals a waiter when someone waits (KEYS[3]) and keeps at most one signal: Redis hands it to a
# blocked waiter as soon as the script ends, so a pending signal means nobody is blocked now.
_SIGNAL = """
if redis.call('exists', KEYS[3]) == 1 and redis.call('llen', KEYS[2]) == 0 then
  redis.call('rpush', KEYS[2], '1')
  redis.call('pexpire', KEYS[2], WAKE_KEEP_MS)
end
"""

# Exclusive release. KEYS: lock, wake list, wait flag. ARGV: token. Returns 1 when this hold was
# released, 0 when it was no longer held (expired, forced, or the key is now readers').
RELEASE = (
    """
local value = redis.pcall('get', KEYS[1])
if type(value) ~= 'string' or string.sub(value, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1])
"""
    + _SIGNAL
    + "return 1\n"
)

# Shared release: as RELEASE, for one reader (whose lease must not have ended). The set then
# expires with the longest lease left; the last reader out signals.
RELEASE_SHARED = (
    """
if redis.call('type', KEYS[1]).ok ~= 'zset' then return 0 end
local ends = redis.call('zscore', KEYS[1], ARGV[1])
if not ends then return 0 end
redis.call('zrem', KEYS[1], ARGV[1])
"""
    + _NOW_MS
    + """
redis.call('zremrangebyscore', KEYS[1], '-inf', now_ms)
local last = redis.call('zrange', KEYS[1], -1, -1, 'withscores')
if last[2] then redis.call('pexpireat', KEYS[1], last[2]) end
if tonumber(ends) <= now_ms then return 0 end
if last[2] then return 1 end
"""
    + _SIGNAL
    + "return 1\n"
)

# KEYS: lock. ARGV: token, ttl ms, shared. Returns 1 when extended, 0 when no longer held.
EXTEND = (
    """
if ARGV[3] == '1' then
  if redis.call('type', KEYS[1]).ok ~= 'zset' then return 0 end
  local ends = redis.call('zscore', KEYS[1], ARGV[1])
"""
    + _NOW_MS
    + """
  if not ends or tonumber(ends) <= now_ms then
    if ends then redis.call('zrem', KEYS[1], ARGV[1]) end
    return 0
  end
  redis.call('zadd', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
  if redis.call('pttl', KEYS[1]) < tonumber(ARGV[2]) then redis.call('pexpire', KEYS[1], ARGV[2]) end
  return 1
end
local value = redis.pcall('get', KEYS[1])
if type(value) ~= 'string' or string.sub(value, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
redis.call('pexpire', KEYS[1], ARGV[2])
return 1
"""
)

# KEYS: lock, wake list. Breaks every hold (the writer, or every reader); returns how many.
FORCE = """
local kind = redis.call('type', KEYS[1]).ok
local broken = 0
if kind == 'zset' then broken = redis.call('zcard', KEYS[1]) elseif kind ~= 'none' then broken = 1 end
redis.call('del', KEYS[1])
if broken > 0 then
  redis.call('rpush', KEYS[2], '1')
  redis.call('pexpire', KEYS[2], WAKE_KEEP_MS)
end
return broken
"""

#: The scripts by name, with their constants filled in.
SCRIPTS = {
    name: src.replace("FENCE_KEEP_MS", str(FENCE_KEEP_MS))
    .replace("WAKE_KEEP_MS", str(WAKE_KEEP_MS))
    .replace("TOKEN_CHARS", str(TOKEN_CHARS))
    for name, src in {
        "acquire": ACQUIRE,
        "acquire_shared": ACQUIRE_SHARED,
        "release": RELEASE,
        "release_shared": RELEASE_SHARED,
        "extend": EXTEND,
        "force": FORCE,
    }.items()
}


class KeySet:
    """The server keys of one lock (all with the same hash tag)."""

    __slots__ = ("fence", "lock", "wait", "wake")

    def __init__(self, namespace: str, key: Key) -> None:
        base = f"{namespace}{{{key}}}"
        self.lock = base
        self.fence = base + ":f"
        self.wait = base + ":q"
        self.wake = base + ":w"

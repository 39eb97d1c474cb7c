"""Django settings and servers for locks-cache's tests.

Redis is the one at ``LOCKS_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); Memcached is
started here, on a free loopback port, for the whole session (``/usr/bin/memcached`` or
``LOCKS_MEMCACHED_BIN``), unless ``LOCKS_MEMCACHED_URL`` names one already running.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

import django
import pytest
from django.conf import settings

from locks_contract.servers import free_port, port_is_free, start_memcached, wait_for_port

REDIS_URL = os.environ.get("LOCKS_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Every key of this run lives under this namespace: runs on a shared server never meet.
NAMESPACE = f"locks-test-{uuid.uuid4().hex[:8]}:"


#: Chosen once, here, so the CACHES setting and the processes the contract spawns (which inherit
#: the environment) agree on it; the session fixture ``memcached_url`` starts the server on it.
EXTERNAL_MEMCACHED = os.environ.get("LOCKS_MEMCACHED_URL")
if not EXTERNAL_MEMCACHED:
    os.environ.setdefault("LOCKS_TEST_MEMCACHED_PORT", str(free_port()))
MEMCACHED_URL = EXTERNAL_MEMCACHED or f"memcached://127.0.0.1:{os.environ['LOCKS_TEST_MEMCACHED_PORT']}"
#: A port nothing listens on (unreachable-server cases).
os.environ.setdefault("LOCKS_TEST_CLOSED_PORT", str(free_port()))
CLOSED_PORT = int(os.environ["LOCKS_TEST_CLOSED_PORT"])


def django_settings() -> None:
    """Settings for the test process and the worker processes the contract spawns."""
    if settings.configured:
        return
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "locks"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES=cache_settings(),
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()


def cache_settings() -> dict[str, dict[str, object]]:
    pymemcache = "django.core.cache.backends.memcached.PyMemcacheCache"
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_timeout": 5},
        },
        "django-redis": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"SOCKET_TIMEOUT": 5, "SOCKET_CONNECT_TIMEOUT": 5},
        },
        "django-redis-down": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{CLOSED_PORT}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2},
        },
        "redis-no-timeout": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL},
        "redis-down": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{CLOSED_PORT}/0",
        },
        "memcached": {"BACKEND": pymemcache, "LOCATION": MEMCACHED_URL.removeprefix("memcached://")},
        "memcached-down": {"BACKEND": pymemcache, "LOCATION": f"127.0.0.1:{CLOSED_PORT}"},
        "memcached-two": {"BACKEND": pymemcache, "LOCATION": ["127.0.0.1:1", "127.0.0.1:2"]},
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "files": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": os.path.join(tempfile.gettempdir(), "locks-cache-tests"),
        },
        "dummy": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
        "database": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache_table"},
    }


def redis_clients_of_this_process(url: str) -> int:
    """The clients the Redis server at ``url`` has connected from this process (``CLIENT LIST``,
    matched by client port: other test runs share the server)."""
    from urllib.parse import urlsplit

    import redis

    from locks_contract.connections import client_ports

    parts = urlsplit(url)
    ports = client_ports(parts.port or 6379)
    client = redis.Redis(host=parts.hostname or "127.0.0.1", port=parts.port or 6379, socket_timeout=5)
    try:
        listed = client.client_list()
    finally:
        client.close()
    return sum(1 for entry in listed if int(str(entry["addr"]).rpartition(":")[2]) in ports)


def memcached_connections_of_this_process(url: str, but_django_caches: bool = False) -> int:
    """The connections the memcached at ``url`` has from this process (``stats conns``, matched
    by client port). ``but_django_caches``: not those of Django's cache objects, which Django
    keeps one per thread (the async API's worker threads each get one as they first lock)."""
    from urllib.parse import urlsplit

    from locks_contract.connections import client_ports

    parts = urlsplit(url)
    ports = client_ports(parts.port or 11211)
    if but_django_caches:
        ports -= _django_memcached_ports()
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 11211), timeout=5) as sock:
        sock.sendall(b"stats conns\r\n")
        reply = b""
        while not reply.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    count = 0
    for line in reply.decode().splitlines():
        # STAT <fd>:addr tcp:127.0.0.1:<port>
        fields = line.split()
        if len(fields) == 3 and fields[1].endswith(":addr") and fields[2].startswith("tcp"):
            count += int(fields[2].rpartition(":")[2]) in ports
    return count


def _django_memcached_ports() -> set[int]:
    import gc

    from django.core.cache.backends.memcached import PyMemcacheCache

    ports = set()
    # type(), not isinstance(): isinstance() asks a lazy object (Django's staticfiles storage...)
    # for its __class__, which sets it up.
    for cache in [obj for obj in gc.get_objects() if issubclass(type(obj), PyMemcacheCache)]:
        client = cache.__dict__.get("_cache")  # Django's cached_property: only once connected
        for server in getattr(client, "clients", {}).values():
            sock = getattr(server, "sock", None)
            if sock is not None:
                try:
                    ports.add(int(sock.getsockname()[1]))
                except OSError:
                    pass
    return ports


@pytest.fixture(scope="session")
def memcached_url() -> Iterator[str]:
    """A memcached server for this session (stopped at the end)."""
    if EXTERNAL_MEMCACHED:
        yield EXTERNAL_MEMCACHED
        return
    with start_memcached(port=int(os.environ["LOCKS_TEST_MEMCACHED_PORT"])) as server:
        yield server.url


@pytest.fixture(scope="session")
def closed_port() -> int:
    return CLOSED_PORT


django_settings()


def start_redis_server(*extra: str, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """A private redis-server on a free loopback port (no persistence), for the cases that stop,
    restart or reconfigure a server. Skipped where the redis-server binary is not installed
    (the shared server at LOCKS_REDIS_URL is what the contract requires)."""
    binary = os.environ.get("LOCKS_REDIS_SERVER_BIN") or shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server is not installed: private-server cases need it")
    if port is None:
        port = free_port()
        if "--cluster-enabled" in extra:
            # the cluster bus listens on port + 10000: both must be free and below 65536
            while port > 55000 or not port_is_free(port + 10000):
                port = free_port()
    workdir = tempfile.mkdtemp(prefix="locks-redis-")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not wait_for_port(port, 10):
        process.kill()
        pytest.fail("the private redis-server did not start")
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(10)

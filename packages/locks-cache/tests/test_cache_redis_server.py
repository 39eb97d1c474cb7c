"""A Redis server that stops, restarts or runs as a cluster: never a hang, never a silent loss."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import free_port, redis_clients_of_this_process, start_redis_server, stop

from locks import BackendUnavailable, LockLost
from locks_cache import RedisLockBackend
from locks_contract import BackendSpec, ContractTests


@pytest.fixture
def private_redis() -> Iterator[tuple[object, int]]:
    process, port = start_redis_server()
    yield process, port
    stop(process)


def test_server_restarted_while_held_gives_lock_lost(private_redis: tuple[object, int]) -> None:
    process, port = private_redis
    url = f"redis://127.0.0.1:{port}/0"
    holder = RedisLockBackend(location=url)
    handle = holder.lock("restarted", ttl=60)
    assert handle.acquire(timeout=5)
    stop(process)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        RedisLockBackend(location=url).lock("restarted").acquire(timeout=1)
    assert time.monotonic() - started < 15
    process2, _ = start_redis_server(port=port)
    try:
        other = RedisLockBackend(location=url).lock("restarted")
        assert other.acquire(timeout=5), "the restarted server forgot the lock: another client takes it"
        with pytest.raises(LockLost):
            handle.release()  # never deletes the new holder's lock
        assert other.locked()
        other.release()
    finally:
        stop(process2)


def test_a_frozen_server_raises_backend_unavailable_within_the_socket_timeout(
    private_redis: tuple[object, int],
) -> None:
    process, port = private_redis
    backend = RedisLockBackend(location=f"redis://127.0.0.1:{port}/0?socket_timeout=1")
    holder = RedisLockBackend(location=f"redis://127.0.0.1:{port}/0?socket_timeout=1").lock("frozen")
    holder.acquire(timeout=5)
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            backend.lock("frozen").acquire(timeout=60)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)  # the waiter blocks on the wake-up list
    os.kill(process.pid, signal.SIGSTOP)  # type: ignore[attr-defined]
    try:
        started = time.monotonic()
        thread.join(20)
        assert not thread.is_alive(), "a waiter hung on a frozen server"
        assert len(errors) == 1 and isinstance(errors[0], BackendUnavailable), errors
        with pytest.raises(BackendUnavailable):
            holder.release()
        assert time.monotonic() - started < 15
    finally:
        os.kill(process.pid, signal.SIGCONT)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    """A one-node Redis Cluster that owns every slot (enough for the cluster client's routing and
    the key-slot rules of scripts)."""
    process, port = start_redis_server(
        "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{uuid.uuid4().hex[:8]}.conf"
    )
    import redis

    client = redis.Redis(port=port)
    client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    deadline = time.monotonic() + 20
    while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
        assert time.monotonic() < deadline, "the cluster never became ok"
        time.sleep(0.1)
    client.close()
    yield f"redis://127.0.0.1:{port}/0?cluster=true"
    stop(process)


class TestRedisClusterContract(ContractTests):
    @pytest.fixture
    def backend_spec(self, cluster_url: str) -> BackendSpec:
        return BackendSpec("locks_cache.RedisLockBackend", location=cluster_url)

    @pytest.fixture
    def server_connection_count(self, cluster_url: str, request: pytest.FixtureRequest) -> Callable[[], int]:
        request.applymarker(
            pytest.mark.xfail(
                reason="redis-py's RedisCluster leaves one connection open past close() (measured with "
                "redis-py 8.1: one per client built, freed only by the cyclic garbage collector); "
                "the backend closes every connection it can reach"
            )
        )
        return lambda: redis_clients_of_this_process(cluster_url)

    @pytest.fixture
    def unreachable_backend_spec(self, closed_port: int) -> BackendSpec:
        return BackendSpec("locks_cache.RedisLockBackend", location=f"redis://127.0.0.1:{closed_port}/0?cluster=1")


@pytest.fixture
def tls_redis(tmp_path: Any) -> Iterator[tuple[int, str]]:
    """A private redis-server that speaks only TLS (a self-signed certificate made here) and wants
    a user and password (ACL)."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("the openssl command is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    process, _ = start_redis_server(
        "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
        "--user", "default", "off", "--user", "locker", "on", ">s3cret", "~*", "&*", "+@all",
        port=port,
    )  # fmt: skip
    yield port, str(cert)
    stop(process)


def test_tls_and_acl_credentials_from_the_url(tls_redis: tuple[int, str]) -> None:
    port, cert = tls_redis
    url = f"rediss://locker:s3cret@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    backend = RedisLockBackend(location=url)
    try:
        handle = backend.lock("tls", ttl=30)
        assert handle.acquire(timeout=5)
        assert isinstance(handle.token, int)
        assert not RedisLockBackend(location=url).lock("tls").acquire(timeout=0)
        handle.release()
    finally:
        backend.close()
    # a wrong password, or plain text to a TLS port, is an unavailable server, never a hang
    for bad in (
        f"rediss://locker:wrong@127.0.0.1:{port}/0?ssl_ca_certs={cert}",
        f"redis://locker:s3cret@127.0.0.1:{port}/0?socket_timeout=2",
    ):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            RedisLockBackend(location=bad).lock("tls").acquire(timeout=1)
        assert "wrong" not in str(info.value) and "s3cret" not in str(info.value)
        assert time.monotonic() - started < 15

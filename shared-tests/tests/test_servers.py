"""The servers of locks_contract.servers start on free loopback ports, answer, and stop."""

from __future__ import annotations

import socket

import pytest

from locks_contract.servers import port_is_free, start_memcached, start_pgbouncer


def _memcached_version(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"version\r\n")
        return sock.recv(100)


def test_start_memcached_serves_until_the_block_ends() -> None:
    with start_memcached() as server:
        assert server.url == f"memcached://127.0.0.1:{server.port}"
        assert _memcached_version(server.port).startswith(b"VERSION ")
    assert server.process.poll() is not None
    assert port_is_free(server.port)


def test_start_pgbouncer_listens_in_front_of_the_upstream_until_the_block_ends() -> None:
    with start_pgbouncer("postgresql://someone:secret@127.0.0.1:5432/app") as server:
        assert server.url == f"postgresql://someone@127.0.0.1:{server.port}/app"
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        assert server.process.poll() is None
    assert server.process.poll() is not None
    assert port_is_free(server.port)


def test_the_plugin_provides_session_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_uses_servers="""
        import socket

        def test_memcached(memcached_server):
            with socket.create_connection((memcached_server.host, memcached_server.port), timeout=5) as sock:
                sock.sendall(b"version\\r\\n")
                assert sock.recv(100).startswith(b"VERSION ")

        def test_pgbouncer(pgbouncer_server):
            assert pgbouncer_server.url.endswith("/elsewhere")
            socket.create_connection((pgbouncer_server.host, pgbouncer_server.port), timeout=5).close()
        """,
        conftest="""
        import pytest

        @pytest.fixture(scope="session")
        def pgbouncer_upstream():
            return "postgresql://postgres@127.0.0.1:5432/elsewhere"
        """,
    )
    pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider").assert_outcomes(passed=2)

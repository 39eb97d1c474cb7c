"""The pytest plugin of the contract suite (registered through the ``pytest11`` entry point).

* ``--locks-require-servers`` (or ``LOCKS_REQUIRE_SERVERS=1``, which CI sets): a server that cannot
  be reached is an error, never a skip.
* ``@requires(capability)`` marks a case; a backend that does not declare the capability gets it
  skipped with the capability as the reason (and ``test_capability_*`` checks that asking for it
  raises ``NotSupported``).
* ``@across_processes`` marks a case that takes the lock in another process; a backend whose class
  sets ``cross_process = False`` gets it skipped, saying so.
* the fixtures of :mod:`locks_contract.servers`: ``memcached_server``, ``pgbouncer_server`` (and
  ``pgbouncer_upstream``), servers the tests start on free loopback ports.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_SERVERS_ENV = "LOCKS_REQUIRE_SERVERS"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("locks", "locks contract suite")
    group.addoption(
        "--locks-require-servers",
        action="store_true",
        default=False,
        help="fail (instead of skip) when a lock server is unreachable; also LOCKS_REQUIRE_SERVERS=1",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires_capability(name): the case needs a backend capability")
    config.addinivalue_line("markers", "cross_process: the case takes the lock in another process")
    if config.getoption("--locks-require-servers", default=False):
        os.environ[REQUIRE_SERVERS_ENV] = "1"
    from locks_contract import servers

    if not config.pluginmanager.is_registered(servers):
        config.pluginmanager.register(servers, "locks_contract.servers")


def servers_required() -> bool:
    return os.environ.get(REQUIRE_SERVERS_ENV, "") not in ("", "0", "false", "no")


def server_unreachable(reason: str) -> None:
    """Skip the test because its server is down, or fail when servers are required (CI)."""
    if servers_required():
        pytest.fail(f"lock server required but unreachable: {reason}", pytrace=False)
    pytest.skip(f"lock server unreachable: {reason}")

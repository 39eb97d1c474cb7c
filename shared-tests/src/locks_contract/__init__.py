"""The contract every ``locks`` backend keeps, as an abstract pytest suite.

A backend's tests subclass :class:`ContractTests` (or single mixins) and provide the
``backend_spec`` fixture (and, ideally, ``unreachable_backend_spec`` and
``server_connection_count``)::

    from locks_contract import BackendSpec, ContractTests

    class TestMyBackend(ContractTests):
        @pytest.fixture
        def backend_spec(self):
            return BackendSpec("mypkg.MyLockBackend", location="myserver://127.0.0.1")

Capabilities the backend declares decide which cases apply; a case needing a missing one is
skipped with the capability as the reason, and ``test_capability_*`` checks that asking for it
raises ``NotSupported``. See the "contract suite" page of the documentation.
"""

from locks.backends.spec import BackendSpec
from locks_contract.base import ContractBase, across_processes, requires
from locks_contract.history import Interval, assert_exclusive, overlaps
from locks_contract.plugin import server_unreachable, servers_required
from locks_contract.suite.aio import AbstractAsyncTests
from locks_contract.suite.basic import AbstractArgumentTests, AbstractBasicTests, AbstractCapabilityTests
from locks_contract.suite.concurrency import (
    AbstractCrashTests,
    AbstractExclusionTests,
    AbstractReentrancyTests,
    AbstractTimeoutTests,
    take_and_give_back,
)
from locks_contract.suite.deadlines import AbstractDeadlineTests
from locks_contract.suite.environment import AbstractDjangoConnectionTests, AbstractUnavailableTests
from locks_contract.suite.leases import (
    AbstractFencingTests,
    AbstractForceReleaseTests,
    AbstractLeaseTests,
    AbstractListingTests,
    AbstractSharedTests,
    AbstractWatchdogTests,
)
from locks_contract.suite.lifecycle import AbstractLifecycleTests, alock_once
from locks_contract.suite.names import AbstractNameTests
from locks_contract.suite.parity import AbstractParityTests
from locks_contract.suite.trust import AbstractHoldTrustTests


class ContractTests(
    AbstractBasicTests,
    AbstractArgumentTests,
    AbstractCapabilityTests,
    AbstractTimeoutTests,
    AbstractDeadlineTests,
    AbstractExclusionTests,
    AbstractReentrancyTests,
    AbstractHoldTrustTests,
    AbstractCrashTests,
    AbstractLeaseTests,
    AbstractWatchdogTests,
    AbstractFencingTests,
    AbstractSharedTests,
    AbstractListingTests,
    AbstractForceReleaseTests,
    AbstractNameTests,
    AbstractAsyncTests,
    AbstractParityTests,
    AbstractUnavailableTests,
    AbstractLifecycleTests,
):
    """The whole contract. Subclass it as ``Test<Backend>Contract`` and provide ``backend_spec``.

    Backends that lock through a Django database add :class:`AbstractDjangoConnectionTests`
    and provide ``django_database_alias``."""


__all__ = [
    "AbstractArgumentTests",
    "AbstractAsyncTests",
    "AbstractBasicTests",
    "AbstractCapabilityTests",
    "AbstractCrashTests",
    "AbstractDeadlineTests",
    "AbstractDjangoConnectionTests",
    "AbstractExclusionTests",
    "AbstractFencingTests",
    "AbstractForceReleaseTests",
    "AbstractHoldTrustTests",
    "AbstractLeaseTests",
    "AbstractLifecycleTests",
    "AbstractListingTests",
    "AbstractNameTests",
    "AbstractParityTests",
    "AbstractReentrancyTests",
    "AbstractSharedTests",
    "AbstractTimeoutTests",
    "AbstractUnavailableTests",
    "AbstractWatchdogTests",
    "BackendSpec",
    "ContractBase",
    "ContractTests",
    "Interval",
    "across_processes",
    "alock_once",
    "assert_exclusive",
    "overlaps",
    "requires",
    "server_unreachable",
    "servers_required",
    "take_and_give_back",
]

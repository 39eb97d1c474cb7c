"""Fixtures of the contract suite.

Two kinds, in the manner of fsspec's abstract tests:

* fixtures **you must provide** in your subclass (they raise ``NotImplementedError`` here):
  ``backend_spec``; optionally ``unreachable_backend_spec`` and ``django_database_alias``;
* scenario fixtures nobody overrides: ``backend``, ``other_backend``, ``lock_name``...
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from locks.backends.base import CAPABILITIES, BaseLockBackend
from locks.backends.spec import BackendSpec
from locks.exceptions import BackendUnavailable
from locks_contract.plugin import server_unreachable


def requires(*capabilities: str, any_of: bool = False) -> pytest.MarkDecorator:
    """Mark a case as needing ``capabilities`` (all of them, or one with ``any_of=True``); where
    they are missing it is skipped with the missing ones as the reason. Marks add up: a case
    with two ``@requires`` needs both."""
    if not capabilities:
        raise ValueError("requires() needs at least one capability")
    for capability in capabilities:
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}")
    return pytest.mark.requires_capability(*capabilities, any_of=any_of)


#: Marks a case that takes the lock in another process: skipped, saying so, for a backend whose
#: class sets ``cross_process = False`` (its locks live in one process, as ``memory://`` does).
across_processes = pytest.mark.cross_process


class ContractBase:
    """Fixtures shared by every mixin of the suite."""

    #: Lease length used by lease cases (seconds); short so the suite stays fast.
    lease_ttl: float = 1.0
    #: How long a dead holder's lock may take to come back, beyond its lease, for leases.
    recovery_slack: float = 5.0

    # -- to provide ---------------------------------------------------------------------------
    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        """The recipe of the backend under test, pointing at a real server."""
        raise NotImplementedError("the backend's tests must provide a backend_spec fixture")

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        """The same backend pointed at a server that does not answer (closed port, bad dir).
        Every backend should provide it; without it those cases are skipped, saying so."""
        pytest.skip("the backend's tests provide no unreachable_backend_spec fixture")

    @pytest.fixture
    def django_database_alias(self) -> str:
        """The Django DATABASES alias the backend locks through, for backends that use one."""
        pytest.skip("the backend does not lock through a Django database")

    # -- scenario -----------------------------------------------------------------------------
    @pytest.fixture(autouse=True)
    def _capability_gate(self, request: pytest.FixtureRequest, backend_spec: BackendSpec) -> None:
        if request.node.get_closest_marker("cross_process") is not None:
            cls = _backend_class(backend_spec)
            if not cls.cross_process:
                pytest.skip(
                    f"{cls.__name__} is single-process (cross_process = False): another process cannot see its locks"
                )
        markers = list(request.node.iter_markers("requires_capability"))
        if not markers:
            return
        # An instance may declare more or fewer than its class (options such as FENCING or
        # NOTIFY decide some), so the gate asks the backend the case will run on.
        if "backend" in request.fixturenames:
            declared = request.getfixturevalue("backend").capabilities
        else:
            declared = _backend_class(backend_spec).capabilities
        for marker in markers:
            wanted = marker.args
            missing = [capability for capability in wanted if capability not in declared]
            if not missing or (marker.kwargs.get("any_of") and len(missing) < len(wanted)):
                continue
            what = "; ".join(f"{capability!r} ({CAPABILITIES[capability]})" for capability in missing)
            if marker.kwargs.get("any_of") and len(missing) > 1:
                pytest.skip(f"backend lacks every one of the capabilities {what}")
            pytest.skip(f"backend lacks capability {what}")

    @pytest.fixture
    def backend(self, backend_spec: BackendSpec) -> Iterator[BaseLockBackend]:
        """A fresh backend (its own connections), checked to reach its server."""
        yield from _reachable(backend_spec, "contract-a")

    @pytest.fixture
    def other_backend(self, backend_spec: BackendSpec) -> Iterator[BaseLockBackend]:
        """A second, independent client of the same server: another holder."""
        yield from _reachable(backend_spec, "contract-b")

    @pytest.fixture
    def lock_name(self) -> str:
        """A name no other test uses."""
        return f"contract-{uuid.uuid4().hex[:12]}"


def _backend_class(spec: BackendSpec) -> type[BaseLockBackend]:
    from django.utils.module_loading import import_string

    return import_string(spec.backend)  # type: ignore[no-any-return]


def _reachable(spec: BackendSpec, alias: str) -> Iterator[BaseLockBackend]:
    spec.run_setup()
    backend = spec.build(alias=alias)
    try:
        backend.is_locked(backend.make_key("contract-probe"))
    except BackendUnavailable as exc:
        backend.close()
        server_unreachable(f"{spec.backend} at {spec.location}: {exc}")
    try:
        yield backend
    finally:
        backend.close()

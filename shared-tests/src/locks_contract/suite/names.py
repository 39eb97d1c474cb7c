"""Hostile names: mapped to safe keys within the server's limits, without collisions."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from locks.backends.base import BaseLockBackend
from locks.keys import HASH_MARKER
from locks_contract.base import ContractBase

HOSTILE = [
    "x" * 10_000,
    "x" * 10_001,
    "nul\x00byte",
    "nul\x00bytf",
    "../../etc/passwd",
    "..",
    ".",
    "/",
    "a/b",
    "a_b",
    "quote'\"`",
    "'; DROP TABLE locks; --",
    "🔒 emoji ✓",
    "white space\ttab\nnewline",
    "UPPER",
    "upper",
    "Upper",
    "a" * 64,
    "a" * 64 + "b",
    "a" * 250,
    "a" * 250 + "b",
    "x" + HASH_MARKER + "0" * 32,
    "lone \udcff surrogate",
    "%s %d {} {0}",
    "\\backslash\\",
    "tab\t",
    "tab ",
]


class AbstractNameTests(ContractBase):
    def test_hostile_names_lock_and_never_collide(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        names = [lock_name + "-" + n for n in HOSTILE] + HOSTILE[:3]
        keys = {backend.make_key(backend.validate_name(n)) for n in names}
        assert len(keys) == len(set(names)), "two distinct names share a key"
        for index, name in enumerate(names):
            with backend.lock(name, timeout=5) as held:
                assert held
                assert not other_backend.lock(name, timeout=0).acquire()
                # every other hostile name stays free while this one is held
                neighbour = names[(index + 1) % len(names)]
                probe = other_backend.lock(neighbour, timeout=0)
                assert probe.acquire(), f"{neighbour!r} is blocked by {name!r}"
                probe.release()

    @settings(
        max_examples=25,
        deadline=None,
        # function-scoped fixtures are fresh clients, fine to share across examples; a backend's
        # tests may run this case from several contract classes in one process.
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
    )
    @given(first=st.text(min_size=1, max_size=300), second=st.text(min_size=1, max_size=300))
    def test_distinct_arbitrary_names_are_independent_locks(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, first: str, second: str
    ) -> None:
        first, second = "hyp-" + first, "hyp-" + second
        with backend.lock(first, timeout=5):
            probe = other_backend.lock(second, timeout=0)
            if first == second:
                assert not probe.acquire()
            else:
                assert probe.acquire(), f"{second!r} blocked by {first!r}"
                probe.release()

    @pytest.mark.parametrize("name", ["x" * 10_000, "\x00", "🔒"])
    def test_key_respects_the_backend_limits(self, backend: BaseLockBackend, name: str) -> None:
        key = backend.make_key(name)
        spec = backend.key_spec
        if spec.kind == "int64":
            assert isinstance(key, int) and -(2**63) <= key < 2**63
        else:
            assert isinstance(key, str)
            assert len(key.encode()) <= spec.max_length

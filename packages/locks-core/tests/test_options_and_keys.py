"""Validation of options and names, and the name → key mapping."""

from __future__ import annotations

import math
import pickle
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from locks import BackendUnavailable, LockError, LockLost, LockNotHeld, LockTimeout, NotSupported, options
from locks.keys import HASH_MARKER, KeySpec, int64_of, make_key, validate_name


class TestSeconds:
    def test_numbers_and_timedeltas_become_seconds(self) -> None:
        assert options.timeout(None) is None
        assert options.timeout(0) == 0.0
        assert options.timeout(1.5) == 1.5
        assert options.timeout(timedelta(minutes=2)) == 120.0

    @pytest.mark.parametrize("value", [-0.001, math.nan, math.inf, -math.inf, timedelta(seconds=-1)])
    def test_negative_nan_and_infinite_are_value_errors(self, value: object) -> None:
        with pytest.raises(ValueError):
            options.timeout(value)

    @pytest.mark.parametrize("value", ["1", b"1", True, [1], object()])
    def test_other_types_are_type_errors(self, value: object) -> None:
        with pytest.raises(TypeError):
            options.timeout(value)

    def test_ttl_must_be_positive(self) -> None:
        with pytest.raises(ValueError):
            options.ttl(0)
        assert options.ttl(None) is None


class TestNames:
    def test_empty_and_wrong_types_are_refused(self) -> None:
        with pytest.raises(ValueError):
            validate_name("")
        for bad in (None, b"x", 1.0, True, ("x",)):
            with pytest.raises(TypeError):
                validate_name(bad)

    def test_int_names_only_for_int64_backends_and_in_range(self) -> None:
        with pytest.raises(TypeError):
            validate_name(5)
        spec = KeySpec(kind="int64", accepts_int_names=True)
        assert validate_name(5, spec) == 5
        assert validate_name(-(2**63), spec) == -(2**63)
        with pytest.raises(ValueError):
            validate_name(2**63, spec)

    def test_safe_short_names_pass_through(self) -> None:
        assert make_key("invoices:close-month") == "invoices:close-month"
        assert make_key("job", prefix="app:") == "app:job"

    def test_unsafe_or_long_names_are_hashed_within_the_limit(self) -> None:
        spec = KeySpec(max_length=64, case_insensitive=True)
        for name in ("x" * 1000, "a/b", "Mixed", "nul\x00", "🔒", ".", ".."):
            key = make_key(name, spec)
            assert isinstance(key, str)
            assert HASH_MARKER in key
            assert len(key.encode()) <= 64
            assert key == key.lower()

    def test_case_insensitive_servers_never_conflate_names(self) -> None:
        spec = KeySpec(max_length=64, case_insensitive=True)
        keys = {str(make_key(n, spec)).lower() for n in ("job", "Job", "JOB", "jOb")}
        assert len(keys) == 4

    def test_a_name_that_looks_hashed_is_hashed_too(self) -> None:
        hashed = make_key("a/b")
        assert make_key(str(hashed)) != hashed

    @given(st.text(min_size=1), st.text(min_size=1))
    def test_distinct_names_get_distinct_keys(self, first: str, second: str) -> None:
        spec = KeySpec(max_length=64, case_insensitive=True)
        if first != second:
            assert make_key(first, spec) != make_key(second, spec)

    def test_int64_hash_is_stable(self) -> None:
        # Fixed forever: old and new versions of an application must agree on every key.
        assert int64_of("invoices:close-month") == int.from_bytes(
            __import__("hashlib").sha256(b"invoices:close-month").digest()[:8], "big", signed=True
        )
        assert int64_of("x") == 3274422879871479876  # a known vector of the documented function
        assert -(2**63) <= int64_of("🔒" * 1000) < 2**63

    def test_key_spec_refuses_the_hash_marker_as_safe(self) -> None:
        with pytest.raises(ValueError):
            KeySpec(safe_chars=frozenset("abc" + HASH_MARKER))


class TestErrors:
    @pytest.mark.parametrize("error", [LockError, LockTimeout, LockNotHeld, LockLost, BackendUnavailable, NotSupported])
    def test_errors_pickle_with_their_name_and_message(self, error: type[LockError]) -> None:
        original = error("it broke", "the-name")
        copy = pickle.loads(pickle.dumps(original))
        assert type(copy) is error
        assert copy.name == "the-name"
        assert str(copy) == "it broke"

    def test_lock_timeout_is_a_timeout_error(self) -> None:
        assert issubclass(LockTimeout, TimeoutError)

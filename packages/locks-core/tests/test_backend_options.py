"""Backend OPTIONS: one declaration, parsed once, refused with ImproperlyConfigured naming the
alias at ``manage.py check`` and at ``locks.connect()``, documented from the declaration."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import locks
from locks.backends import FENCING, TTL, BaseLockBackend, Option, Seconds
from locks.backends.memory import MemoryLockBackend
from locks.backends.options import options_table

DOCS = Path(__file__).resolve().parents[3] / "docs" / "pages"


class Declared(MemoryLockBackend):
    """A backend with one option of each kind, and a driver that takes ``timeout``."""

    OPTIONS: ClassVar[tuple[Option, ...]] = (
        *MemoryLockBackend.OPTIONS,
        Option("FENCING", bool, True, "tokens"),
        Option("POOL", int, 4, "pool size", minimum=1, maximum=64),
        Option("WAIT", Seconds, 1.5, "a wait"),
        Option("MODE", str, "fast", "how", choices=("fast", "safe")),
        Option("NAME", str, None, "a name"),
    )
    driver_name = "the test driver"

    @classmethod
    def driver_options(cls) -> frozenset[str]:
        return frozenset({"timeout", "socket_keepalive"})

    @classmethod
    def capabilities_from(cls, settings: Any) -> frozenset[str]:
        caps = set(cls.capabilities)
        if not settings["FENCING"]:
            caps.discard(FENCING)
        return frozenset(caps)


class TestParsing:
    def test_defaults_fill_in_and_values_are_converted(self) -> None:
        backend = Declared(location="opts-a", options={"pool": "8", "wait": timedelta(milliseconds=250)})
        assert backend.settings["POOL"] == 8
        assert backend.settings["WAIT"] == 0.25
        assert backend.settings["MODE"] == "fast"
        assert backend.settings["NAME"] is None
        assert backend.settings["FENCING"] is True
        assert backend.settings["KEY_PREFIX"] == "" and backend.settings["WATCHDOG"] is False

    def test_any_case_matches_one_upper_case_name(self) -> None:
        backend = Declared(location="opts-b", options={"Mode": "SAFE", "fencing": "false"})
        assert backend.settings["MODE"] == "safe"
        assert backend.settings["FENCING"] is False

    def test_url_query_parameters_are_options(self) -> None:
        backend = locks.connect("memory://opts-c?default_ttl=2&key_prefix=app:")
        assert backend.default_ttl == 2.0
        assert backend.key_prefix == "app:"

    def test_driver_parameters_pass_through_and_nothing_else(self) -> None:
        backend = Declared(location="opts-d", options={"timeout": 3, "POOL": 2})
        assert backend.options == {"timeout": 3}

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            (
                {"FENCNIG": True},
                r"'FENCNIG' is not an option of this backend nor a parameter of the test driver; "
                r"did you mean 'FENCING'\?",
            ),
            ({"timeuot": 1}, r"did you mean 'timeout'\?"),
            ({"POOL": 0}, r"OPTIONS\['POOL'\] must be at least 1"),
            ({"POOL": 65}, r"OPTIONS\['POOL'\] must be at most 64"),
            ({"POOL": 2.5}, r"OPTIONS\['POOL'\] must be a whole number"),
            ({"POOL": True}, r"OPTIONS\['POOL'\] must be a whole number"),
            ({"WAIT": "soon"}, r"OPTIONS\['WAIT'\] must be a number of seconds"),
            ({"WAIT": float("nan")}, r"OPTIONS\['WAIT'\] must be a number of seconds"),
            ({"FENCING": "maybe"}, r"OPTIONS\['FENCING'\] must be True or False"),
            ({"MODE": "slow"}, r"OPTIONS\['MODE'\] must be one of 'fast', 'safe'"),
            ({"MODE": 3}, r"OPTIONS\['MODE'\] must be a str"),
            ({"mode": "fast", "MODE": "safe"}, "gives MODE twice"),
            ({1: "x"}, "keys must be str"),
            ({"KEY_PREFIX": 3}, r"OPTIONS\['KEY_PREFIX'\] must be a str"),
        ],
    )
    def test_bad_options_name_the_alias_and_the_option(self, options: dict[Any, Any], message: str) -> None:
        with pytest.raises(ImproperlyConfigured, match=message) as info:
            Declared(alias="jobs", location="opts-e", options=options)
        assert str(info.value).startswith("Declared (alias 'jobs'): ")

    def test_an_option_declared_in_lower_case_is_a_programming_error(self) -> None:
        with pytest.raises(ValueError, match="UPPER_CASE"):
            Option("fencing", bool, False, "x")


class TestWhereBadOptionsAreRefused:
    def test_at_connect(self) -> None:
        message = r"MemoryLockBackend \(alias 'url'\): 'defualt_ttl'.*'DEFAULT_TTL'"
        with pytest.raises(ImproperlyConfigured, match=message):
            locks.connect("memory://opts-f?defualt_ttl=2")

    def test_at_manage_py_check_naming_the_alias(self) -> None:
        setting = {
            "default": {"BACKEND": "locks.backends.memory.MemoryLockBackend"},
            "jobs": {"BACKEND": "locks.backends.memory.MemoryLockBackend", "OPTIONS": {"DEFAULT_TTL": "x"}},
        }
        with override_settings(LOCKS=setting):
            errors = [e for e in checks.run_checks() if e.id == "locks.E003"]
        assert len(errors) == 1
        assert "alias 'jobs'" in errors[0].msg and "DEFAULT_TTL" in errors[0].msg

    def test_nothing_connects_or_is_held_after_a_refusal(self) -> None:
        before = len(locks.backends.base.all_backends())
        with pytest.raises(ImproperlyConfigured):
            Declared(location="opts-g", options={"POOL": -1})
        assert len(locks.backends.base.all_backends()) <= before


class TestCapabilities:
    def test_known_from_the_options_without_building_a_backend(self) -> None:
        assert FENCING in Declared.capabilities_with({"FENCING": True})
        assert FENCING not in Declared.capabilities_with({"fencing": "0"})
        assert TTL in Declared.capabilities_with()

    def test_the_instance_agrees_with_the_class(self) -> None:
        for options in ({"FENCING": True}, {"FENCING": False}):
            assert Declared(location="opts-h", options=options).capabilities == Declared.capabilities_with(options)

    def test_bad_options_are_refused_there_too(self) -> None:
        with pytest.raises(ImproperlyConfigured, match="FENCNIG"):
            Declared.capabilities_with({"FENCNIG": True})

    def test_an_undeclared_backend_has_its_class_capabilities(self) -> None:
        class Legacy(BaseLockBackend):
            capabilities = frozenset({TTL})

        assert Legacy.capabilities_with({"ANYTHING": 1}) == frozenset({TTL})


class TestDocumentation:
    def test_the_table_lists_every_option_with_its_type_and_default(self) -> None:
        table = options_table(Declared.OPTIONS)
        assert "| `POOL` | int (≥ 1, ≤ 64) | `4` | pool size |" in table
        assert '| `MODE` | `"fast"` or `"safe"` | `"fast"` | how |' in table
        assert "| `NAME` | str | not set | a name |" in table
        assert "| `WAIT` | seconds | `1.5` | a wait |" in table

    @pytest.mark.parametrize(
        ("page", "backend"),
        [("settings.md", None), ("backends/memory.md", MemoryLockBackend)],
    )
    def test_the_settings_pages_show_the_declared_table(self, page: str, backend: type[BaseLockBackend] | None) -> None:
        from locks.backends.options import COMMON_OPTIONS

        declared = COMMON_OPTIONS if backend is None else backend.OPTIONS
        assert declared is not None
        text = (DOCS / page).read_text(encoding="utf-8")
        table = options_table(declared)
        assert table in text, f"docs/pages/{page} must show the table of the declared options:\n{table}"

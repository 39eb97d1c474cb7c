"""The lock-table backend's OPTIONS: the declaration, refused before any connection (naming the
alias), driver parameters with a URL, capabilities known without connecting, the settings page."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import migrate
from django.core.exceptions import ImproperlyConfigured

import locks
from locks.backends import NOTIFY
from locks.backends.options import options_table
from locks_rowlock import RowLockBackend
from locks_rowlock.options import ROWLOCK_OPTIONS

PG_URL = os.environ.get("LOCKS_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.mark.parametrize(
    "options",
    [
        {"DATABASE": "nope"},
        {"DATABASE": 3},
        {"BOGUS": 1},
        {"POLL_MAX": "fast"},
        {"POLL_MIN": 0.5, "POLL_MAX": 0.1},
        {"NOTIFY": "maybe"},
        {"DEFAULT_TTL": -1},
        {"CREATE_TABLE": "sometimes"},
        {"sslmode": "require"},  # a driver parameter, but only a URL takes them
    ],
)
def test_bad_options_are_refused_before_connecting(options: dict[str, Any]) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"RowLockBackend \(alias 'mine'\)"):
        RowLockBackend("mine", options=options)


def test_a_typo_is_refused_with_the_alias_and_the_closest_spelling(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        RowLockBackend("mine", options={"DATABASE": "pg", "NOTIFY_PLOL": 1})
    assert "RowLockBackend (alias 'mine')" in str(info.value)
    assert "nor a parameter of the database driver; did you mean 'NOTIFY_POLL'?" in str(info.value)
    with pytest.raises(ImproperlyConfigured, match=r"alias 'url'.*did you mean 'DEFAULT_TTL'"):
        locks.connect(f"rowlock+sqlite://{tmp_path}/typo.db?default_tll=5")
    with pytest.raises(ImproperlyConfigured, match=r"alias 'url'.*did you mean 'connect_timeout'"):
        locks.connect("rowlock+" + PG_URL + "?conect_timeout=5")


def test_wrong_types_are_refused_naming_the_option(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"OPTIONS\['POLL_MAX'\] must be a number of seconds"):
        RowLockBackend(options={"POLL_MAX": "fast"})
    with pytest.raises(ImproperlyConfigured, match=r"OPTIONS\['CREATE_TABLE'\] must be True or False"):
        locks.connect(f"rowlock+sqlite://{tmp_path}/types.db?CREATE_TABLE=2")


def test_settings_refuse_a_typo_at_check_time() -> None:
    from django.core import checks
    from django.test import override_settings

    bad = {"default": {"BACKEND": "locks_rowlock.RowLockBackend", "OPTIONS": {"DATABASE": "pg", "FENCNIG": True}}}
    with override_settings(LOCKS=bad):
        errors = checks.run_checks(tags=["locks"])
    assert [m.id for m in errors] == ["locks.E003"]
    assert "FENCNIG" in errors[0].msg


def test_driver_parameters_pass_through_with_a_url(tmp_path: Path) -> None:
    migrate("pg")
    backend = locks.connect("rowlock+" + PG_URL + "?application_name=locks-optcheck&CREATE_TABLE=false")
    assert isinstance(backend, RowLockBackend)
    assert backend.options == {"application_name": "locks-optcheck"}
    assert backend.create_table is False
    try:
        with backend.lock(f"opt-{uuid.uuid4().hex}", timeout=5):
            (name,) = backend._fetch("SELECT current_setting('application_name')", ())[0]
            assert name == "locks-optcheck"
    finally:
        backend.close()
    sqlite = locks.connect(f"rowlock+sqlite://{tmp_path}/driver.db?timeout=20")
    try:
        assert sqlite._pool.settings["OPTIONS"]["timeout"] == 20
        with sqlite.lock(f"opt-{uuid.uuid4().hex}", timeout=0):
            pass
    finally:
        sqlite.close()


@pytest.mark.parametrize(
    ("options", "notify"),
    [
        ({"DATABASE": "pg"}, True),
        ({"DATABASE": "pg", "NOTIFY": "false"}, False),
        ({"DATABASE": "mysql"}, False),
        ({"DATABASE": "default", "NOTIFY": True}, False),  # SQLite
        ({"DATABASE": "pgbouncer", "NOTIFY": False, "DEFAULT_TTL": 5}, False),
    ],
)
def test_capabilities_are_known_from_the_options(options: dict[str, Any], notify: bool) -> None:
    assert (NOTIFY in RowLockBackend.capabilities_with(options)) is notify
    backend = RowLockBackend(options=options)  # builds without connecting
    try:
        assert backend.capabilities == RowLockBackend.capabilities_with(options)
    finally:
        backend.close()


def test_a_url_gives_notify_from_its_scheme(tmp_path: Path) -> None:
    pg = RowLockBackend(location="rowlock+" + PG_URL)
    sqlite = RowLockBackend(location=f"rowlock+sqlite://{tmp_path}/caps.db")
    try:
        assert NOTIFY in pg.capabilities
        assert NOTIFY not in sqlite.capabilities
    finally:
        pg.close()
        sqlite.close()


def test_the_settings_page_shows_the_declared_options() -> None:
    page = Path(__file__).resolve().parents[3] / "docs" / "pages" / "backends" / "rowlock.md"
    table = options_table(ROWLOCK_OPTIONS)
    assert table in page.read_text(encoding="utf-8"), f"docs/pages/backends/rowlock.md must show:\n{table}"

"""The MySQL backend's OPTIONS: the declaration, what passes through to mysqlclient, what is
refused before any connection, the old lower-case spellings, and the settings page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

import locks
from locks.backends import FENCING, WATCHDOG
from locks.backends.options import options_table
from locks_mysql import UserLockBackend
from locks_mysql._testing import mysql_url
from locks_mysql.options import MYSQL_OPTIONS, MYSQLCLIENT_KEYWORDS


@pytest.mark.parametrize(
    ("location", "options"),
    [
        ("postgresql://x/y", {}),
        ("mysql://root@127.0.0.1/test", {"DATABASE": "default"}),
        ("mysql://root@127.0.0.1/test", {"bogus": 1}),
        ("mysql://root@127.0.0.1/test", {"CONNECT_TIMEOUT": "soon"}),
        ("mysql://root@127.0.0.1/test", {"CONNECT_TIMEOUT": 0}),
        ("mysql://root@127.0.0.1/test", {"MAX_IDLE": -1}),
        ("mysql://root@127.0.0.1/test", {"MAX_IDLE": "many"}),
        ("mysql://root@127.0.0.1/test", {"WAIT_TIMEOUT": True}),
        ("mysql://root@127.0.0.1/test", {"WATCHDOG": "maybe"}),
        ("mysql://root@127.0.0.1/test", {"host": "elsewhere"}),  # LOCATION says where
        ("mysql://root@127.0.0.1/test", {"autocommit": False}),  # the backend's to set
        (None, {"DATABASE": "no-such-alias"}),
        (None, {"DATABASE": "sqlite"}),
    ],
)
def test_bad_configuration_is_improperly_configured(location: str | None, options: dict[str, Any]) -> None:
    with pytest.raises(ImproperlyConfigured):
        backend = UserLockBackend(location=location, options=options)
        backend.make_key("x")  # the DATABASES alias is read on first use


def test_a_typo_is_refused_with_the_alias_and_the_closest_spelling(server: Any) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        UserLockBackend("mine", mysql_url(), {"MAX_IDEL": 2})
    assert "UserLockBackend (alias 'mine')" in str(info.value)
    assert "nor a parameter of mysqlclient; did you mean 'MAX_IDLE'?" in str(info.value)
    with pytest.raises(ImproperlyConfigured, match=r"alias 'url'.*did you mean 'MAX_IDLE'"):
        locks.connect(mysql_url() + "?max_idel=2")
    with pytest.raises(ImproperlyConfigured, match=r"alias 'url'.*did you mean 'WATCHDOG'"):
        locks.connect(mysql_url(), WATCHDGO=True)
    with pytest.raises(ImproperlyConfigured, match="did you mean 'charset'"):
        UserLockBackend(location=mysql_url(), options={"charste": "utf8mb4"})


def test_mysqlclient_keywords_pass_through(server: Any, unique: str) -> None:
    backend = UserLockBackend(location=mysql_url(), options={"init_command": "SET @locks_probe = 42", "MAX_IDLE": 1})
    assert backend.options == {"init_command": "SET @locks_probe = 42"}
    try:
        with backend.lock(unique, timeout=5) as held:
            session = held._current_entry().hold.data
            assert session.row("SELECT @locks_probe")[0] == 42
    finally:
        backend.close()
    backend = locks.connect(mysql_url() + "?charset=latin1&MAX_IDLE=1")
    try:
        assert backend._params()["charset"] == "latin1"
        with backend.lock(unique, timeout=5) as held:
            assert held._current_entry().hold.data.row("SELECT @@character_set_client")[0] == "latin1"
    finally:
        backend.close()


def test_the_pass_through_keywords_are_mysqlclients() -> None:
    import MySQLdb.connections

    documented = set(re.findall(r":param \w+ (\w+):", MySQLdb.connections.Connection.__init__.__doc__ or ""))
    ours = {option.name.lower() for option in MYSQL_OPTIONS}
    set_by_us = {"autocommit", "conv", "cursorclass", "host", "user", "password", "passwd", "db", "port"}
    assert documented >= MYSQLCLIENT_KEYWORDS
    assert documented - MYSQLCLIENT_KEYWORDS <= ours | set_by_us


def test_the_old_lower_case_spellings_warn_and_work(server: Any, unique: str) -> None:
    with pytest.warns(DeprecationWarning, match=r"OPTIONS\['DATABASE'\]"):
        backend = UserLockBackend(options={"database": "default"})
    assert backend.database_alias == "default"
    with pytest.warns(DeprecationWarning, match="DATABASE"), pytest.raises(ImproperlyConfigured):
        UserLockBackend(location="mysql://root@127.0.0.1/test", options={"database": "default"})
    with pytest.warns(DeprecationWarning, match="spelled OPTIONS") as warned:
        backend = UserLockBackend(location=mysql_url(), options={"max_idle": 0, "connect_timeout": 2.5})
    assert {str(w.message).split("]")[0] for w in warned} == {"OPTIONS['max_idle'", "OPTIONS['connect_timeout'"}
    assert backend.max_idle == 0 and backend._params()["connect_timeout"] == 3
    with backend.lock(unique, timeout=5):
        pass
    backend.close()


def test_url_options_and_connect_timeout(recwarn: pytest.WarningsRecorder) -> None:
    # Query parameters are spelled in any case: no warning there.
    backend = UserLockBackend.from_url("mariadb://u:p%40ss@db.example:3307/app?connect_timeout=2.5")
    params = backend._params()
    assert params["host"] == "db.example" and params["port"] == 3307
    assert params["user"] == "u" and params["passwd"] == "p@ss" and params["db"] == "app"
    assert params["connect_timeout"] == 3 and params["autocommit"] is True
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_capabilities_are_known_from_the_options(server: Any) -> None:
    assert FENCING in UserLockBackend.capabilities_with()
    assert WATCHDOG in UserLockBackend.capabilities_with({"WATCHDOG": True})
    for options in ({}, {"WATCHDOG": "1", "MAX_IDLE": 0}, {"charset": "utf8mb4", "READ_TIMEOUT": 30}):
        backend = UserLockBackend(location=mysql_url(), options=options)
        assert backend.capabilities == UserLockBackend.capabilities_with(options)
        backend.close()


def test_session_wait_timeout_option(server: Any, unique: str) -> None:
    backend = UserLockBackend.from_url(mysql_url(), WAIT_TIMEOUT="604800")
    try:
        with backend.lock(unique, timeout=5) as held:
            session = held._current_entry().hold.data
            assert int(session.row("SELECT @@SESSION.wait_timeout")[0]) == 604800
    finally:
        backend.close()


def test_configured_through_the_locks_setting(server: Any, unique: str) -> None:
    from django.core import checks
    from django.test import override_settings

    setting = {"default": {"BACKEND": "locks_mysql.UserLockBackend", "OPTIONS": {"DATABASE": "default"}}}
    with override_settings(LOCKS=setting):
        assert [m for m in checks.run_checks(tags=["locks"]) if m.level >= checks.ERROR] == []
        with locks.lock(unique, timeout=5) as held:
            assert isinstance(held.token, int)
            assert locks.get_backend().holder_id(unique) is not None
    for bad, what in (({"DATABASE": "nope"}, "nope"), ({"FENCNIG": True}, "FENCNIG")):
        with override_settings(LOCKS={"default": {"BACKEND": "locks_mysql.UserLockBackend", "OPTIONS": bad}}):
            errors = checks.run_checks(tags=["locks"])
            assert [m.id for m in errors] == ["locks.E003"]
            assert what in errors[0].msg


def test_the_settings_page_shows_the_declared_options() -> None:
    page = Path(__file__).resolve().parents[3] / "docs" / "pages" / "backends" / "mysql.md"
    table = options_table(MYSQL_OPTIONS)
    assert table in page.read_text(encoding="utf-8"), f"docs/pages/backends/mysql.md must show:\n{table}"

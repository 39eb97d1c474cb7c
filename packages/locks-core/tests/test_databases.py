"""database_from_url: one parser of database URLs for every package."""

from __future__ import annotations

import pytest

from locks.databases import database_from_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://app:s%40cret@db.example:5433/my%20db?sslmode=require",
            {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "my db",
                "USER": "app",
                "PASSWORD": "s@cret",
                "HOST": "db.example",
                "PORT": "5433",
                "OPTIONS": {"sslmode": "require"},
            },
        ),
        (
            "postgres://localhost",
            {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "fallback",
                "USER": "",
                "PASSWORD": "",
                "HOST": "localhost",
                "PORT": "",
            },
        ),
        (
            "mariadb://root@127.0.0.1:3306/test",
            {
                "ENGINE": "django.db.backends.mysql",
                "NAME": "test",
                "USER": "root",
                "PASSWORD": "",
                "HOST": "127.0.0.1",
                "PORT": "3306",
            },
        ),
        ("sqlite:///var/db/locks.sqlite3", {"ENGINE": "django.db.backends.sqlite3", "NAME": "/var/db/locks.sqlite3"}),
        ("sqlite://relative/locks.db", {"ENGINE": "django.db.backends.sqlite3", "NAME": "relative/locks.db"}),
        ("sqlite://:memory:", {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}),
    ],
)
def test_urls_become_databases_entries(url: str, expected: dict[str, object]) -> None:
    assert database_from_url(url, default_name="fallback") == expected


def test_extra_keys_are_added() -> None:
    entry = database_from_url("mysql://root@h/db", TEST={"NAME": "db"})
    assert entry["TEST"] == {"NAME": "db"}


@pytest.mark.parametrize("url", ["redis://localhost/0", "db.example:5432", ""])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="is not a database URL"):
        database_from_url(url)


def test_a_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        database_from_url(5432)  # type: ignore[arg-type]

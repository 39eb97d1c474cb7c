"""A Django ``DATABASES`` entry from a database URL, for backends, benchmarks and tests that are
given a URL and need Django's settings (one parser instead of one per package).

```python
database_from_url("postgresql://app:secret@db:5432/app?sslmode=require")
# {"ENGINE": "django.db.backends.postgresql", "NAME": "app", "USER": "app", "PASSWORD": "secret",
#  "HOST": "db", "PORT": "5432", "OPTIONS": {"sslmode": "require"}}
```
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["ENGINES", "database_from_url"]

#: Django's engine for each URL scheme.
ENGINES: dict[str, str] = {
    "postgresql": "django.db.backends.postgresql",
    "postgres": "django.db.backends.postgresql",
    "mysql": "django.db.backends.mysql",
    "mariadb": "django.db.backends.mysql",
    "sqlite": "django.db.backends.sqlite3",
    "sqlite3": "django.db.backends.sqlite3",
}


def database_from_url(url: str, *, default_name: str = "", **extra: Any) -> dict[str, Any]:
    """The ``DATABASES`` entry of ``url``: ``postgresql://``, ``postgres://``, ``mysql://``,
    ``mariadb://``, ``sqlite:///absolute/path.db``, ``sqlite://relative/path.db`` or
    ``sqlite://:memory:``. User, password and database name are percent-decoded; query
    parameters become ``OPTIONS`` (as strings). ``default_name`` is the ``NAME`` when the URL
    names no database; ``extra`` keys are added to the entry (``TEST``, ``CONN_MAX_AGE``...).

    Raises:
        ValueError: not a URL of a database Django has an engine for.
    """
    if not isinstance(url, str):
        raise TypeError(f"a database URL must be a str, not {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    engine = ENGINES.get(scheme)
    if engine is None:
        raise ValueError(f"{url!r} is not a database URL (schemes: {', '.join(ENGINES)})")
    options = dict(parse_qsl(parts.query))
    entry: dict[str, Any]
    if engine.endswith("sqlite3"):
        path = unquote(parts.netloc) + unquote(parts.path)  # sqlite://relative/path or sqlite:///abs
        if path in ("", ":memory:", "/:memory:"):
            path = ":memory:"
        entry = {"ENGINE": engine, "NAME": path}
    else:
        entry = {
            "ENGINE": engine,
            "NAME": unquote(parts.path.lstrip("/")) or default_name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
        }
    if options:
        entry["OPTIONS"] = options
    entry.update(extra)
    return entry

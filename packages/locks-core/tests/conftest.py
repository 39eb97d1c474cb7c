"""Django settings for locks-core's own tests: SQLite, and the file backend in a temp folder."""

from __future__ import annotations

import tempfile

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "locks"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        LOCKS={
            "default": {
                "BACKEND": "locks_file.FileLockBackend",
                "LOCATION": tempfile.mkdtemp(prefix="locks-core-tests-"),
            }
        },
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()

"""The lock table: one row per lock name, kept after release so fencing tokens keep growing."""

from __future__ import annotations

from django.db import models

from locks_rowlock.dialects import TABLE


class RowLock(models.Model):
    """One lock name. Held while ``expires_at`` is later than the database's clock.

    The backend writes these rows with its own SQL on its own connection; the model exists for
    migrations and the read-only admin. ``expires_at`` is ``NULL`` once released.
    """

    digest = models.CharField(
        "digest",
        max_length=64,
        primary_key=True,
        help_text="SHA-256 (hex) of the lock key: names of any length and any characters fit.",
    )
    lock_key = models.CharField("key", max_length=255, help_text="The key the name maps to.")
    name = models.TextField("name", help_text="The lock name, for display (NUL and lone surrogates escaped).")
    host = models.CharField("host", max_length=255, blank=True, default="")
    pid = models.IntegerField("pid", null=True, blank=True)
    thread = models.CharField("thread or task", max_length=255, blank=True, default="")
    owner_uuid = models.CharField("owner id", max_length=32, blank=True, default="")
    version = models.BigIntegerField(
        "fencing token", default=0, help_text="Grows with every acquisition (and with every forced release)."
    )
    acquired_at = models.DateTimeField("acquired at", null=True, blank=True)
    expires_at = models.DateTimeField("expires at", null=True, blank=True, db_index=True)
    waiters = models.IntegerField(
        "waiters",
        default=0,
        help_text="Waiters asking to be woken by the release (PostgreSQL NOTIFY): a release with none sends "
        "no notification. An estimate: a waiter that died stays counted until the row is cleaned up.",
    )

    class Meta:
        db_table = TABLE
        verbose_name = "lock"
        verbose_name_plural = "locks"
        ordering = ("name",)

    def __str__(self) -> str:
        return str(self.name)

    @property
    def owner(self) -> str:
        return f"{self.host}:{self.pid}:{self.thread}" if self.host else ""

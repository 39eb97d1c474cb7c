"""A read-only admin of the lock table, with a "force release" action.

Rows are read from the database of the ``LOCKS`` alias that uses this backend; the action goes
through that backend, so the broken holder's release raises ``LockLost`` and waiters wake.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from locks_rowlock.models import RowLock

BACKEND_PATHS = ("locks_rowlock.RowLockBackend", "locks_rowlock.backend.RowLockBackend")


def lock_table_alias() -> str | None:
    """The first ``LOCKS`` alias configured with this backend on a ``DATABASES`` alias."""
    from locks.config import configured_locks

    try:
        configured = configured_locks()
    except Exception:  # noqa: BLE001 - no LOCKS setting usable: fall back to "default"
        return None
    for alias, config in configured.items():
        if isinstance(config, dict) and config.get("BACKEND") in BACKEND_PATHS and not config.get("LOCATION"):
            return str(alias)
    return None


def lock_table_database() -> str:
    from locks.config import configured_locks

    alias = lock_table_alias()
    if alias is None:
        return "default"
    options = configured_locks()[alias].get("OPTIONS") or {}
    upper = {str(k).upper(): v for k, v in options.items()}
    return str(upper.get("DATABASE", "default"))


@admin.register(RowLock)
class RowLockAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "state", "owner_display", "version", "acquired_at", "expires_at")
    list_filter = ("host",)
    search_fields = ("name", "lock_key", "host", "thread")
    ordering = ("-acquired_at",)
    actions = ("force_release",)
    readonly_fields = [field.name for field in RowLock._meta.fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RowLock]:
        queryset: QuerySet[RowLock] = super().get_queryset(request)
        return queryset.using(lock_table_database())  # type: ignore[no-any-return]

    # Read-only: rows belong to the backend's SQL.
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_force_release_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("locks_rowlock.change_rowlock"))  # type: ignore[union-attr]

    @admin.display(description="state")
    def state(self, obj: RowLock) -> str:
        # For display only: the backend judges expiry by the database's clock.
        if obj.expires_at is None:
            return "free"
        return "held" if obj.expires_at > timezone.now() else "expired"

    @admin.display(description="owner")
    def owner_display(self, obj: RowLock) -> str:
        return obj.owner

    @admin.action(description="Force release the selected locks", permissions=["force_release"])
    def force_release(self, request: HttpRequest, queryset: QuerySet[RowLock]) -> None:
        from locks.config import get_backend
        from locks_rowlock.backend import RowLockBackend

        digests = list(queryset.values_list("digest", flat=True))
        alias = lock_table_alias()
        backend = get_backend(alias) if alias is not None else None
        if isinstance(backend, RowLockBackend):
            broken = backend.force_release_rows(digests)
        else:
            backend = RowLockBackend(alias="admin", options={"DATABASE": queryset.db})
            try:
                broken = backend.force_release_rows(digests)
            finally:
                backend.close()
        self.message_user(request, f"{broken} held lock(s) force-released.", messages.SUCCESS)

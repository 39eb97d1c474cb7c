"""locks-pg: PostgreSQL advisory locks for ``locks``, plus table locks, ``lock_timeout``,
``prioritize`` and views of ``pg_locks``.

```python
LOCKS = {
    "default": {"BACKEND": "locks_pg.AdvisoryLockBackend", "OPTIONS": {"DATABASE": "default"}},
    "xact": {"BACKEND": "locks_pg.TransactionAdvisoryLockBackend", "OPTIONS": {"DATABASE": "default"}},
}
```
"""

from locks_pg import views
from locks_pg.backend import (
    PG_OPTIONS,
    AdvisoryLockBackend,
    PostgreSQLLockBackend,
    TransactionAdvisoryLockBackend,
    TransactionRequired,
)
from locks_pg.connection import PoolerDetected
from locks_pg.keys import advisory_key, key_from_pg_locks, pg_locks_ids
from locks_pg.prioritize import prioritize
from locks_pg.tables import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    EXCLUSIVE,
    MODES,
    ROW_EXCLUSIVE,
    ROW_SHARE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    table_lock,
)
from locks_pg.timeouts import lock_timeout

__all__ = [
    "ACCESS_EXCLUSIVE",
    "ACCESS_SHARE",
    "EXCLUSIVE",
    "MODES",
    "PG_OPTIONS",
    "ROW_EXCLUSIVE",
    "ROW_SHARE",
    "SHARE",
    "SHARE_ROW_EXCLUSIVE",
    "SHARE_UPDATE_EXCLUSIVE",
    "AdvisoryLockBackend",
    "PoolerDetected",
    "PostgreSQLLockBackend",
    "TransactionAdvisoryLockBackend",
    "TransactionRequired",
    "advisory_key",
    "key_from_pg_locks",
    "lock_timeout",
    "pg_locks_ids",
    "prioritize",
    "table_lock",
    "views",
]

"""locks-mysql: MySQL and MariaDB user locks (``GET_LOCK``) and table locks for ``locks``."""

from locks_mysql.backend import LockDeadlock, UserLockBackend
from locks_mysql.tables import TableLock

__all__ = ["LockDeadlock", "TableLock", "UserLockBackend"]

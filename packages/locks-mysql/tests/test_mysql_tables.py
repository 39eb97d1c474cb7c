"""TableLock: LOCK TABLES on Django's connection, models and names, inheritance, transactions."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, connections, models, transaction
from django.db.transaction import TransactionManagementError

from locks import LockTimeout, NotSupported
from locks_mysql import TableLock

SUFFIX = uuid.uuid4().hex[:8]


class Place(models.Model):
    name = models.CharField(max_length=50, default="")

    class Meta:
        app_label = "locks"
        db_table = f"locks_mysql_place_{SUFFIX}"


class Restaurant(Place):
    seats = models.IntegerField(default=0)

    class Meta:
        app_label = "locks"
        db_table = f"locks_mysql_restaurant_{SUFFIX}"


class Counter(models.Model):
    value = models.IntegerField(default=0)

    class Meta:
        app_label = "locks"
        db_table = f"locks_mysql_counter_{SUFFIX}"


class Base(models.Model):
    class Meta:
        abstract = True
        app_label = "locks"


@pytest.fixture(scope="module", autouse=True)
def tables(server: Any) -> Iterator[None]:
    with connection.schema_editor() as editor:
        for model in (Place, Restaurant, Counter):
            editor.create_model(model)
    yield
    connection.close()
    with connection.schema_editor() as editor:
        for model in (Restaurant, Place, Counter):
            editor.delete_model(model)


def in_thread(func: Callable[[], Any]) -> Any:
    """Run ``func`` in another thread (so on another Django connection) and return its result."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = func()
        except BaseException as exc:
            out["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_models_and_names_become_tables_with_inheritance_parents() -> None:
    lock = TableLock(read=[Counter, "some_table"], write=[Restaurant])
    assert lock.write == [Restaurant._meta.db_table, Place._meta.db_table]
    assert lock.read == [Counter._meta.db_table, "some_table"]


def test_the_callers_lists_are_not_changed() -> None:
    read: list[Any] = [Restaurant]
    write: list[Any] = [Counter, Counter]
    TableLock(read=read, write=write)
    assert read == [Restaurant] and write == [Counter, Counter]


def test_a_table_in_both_lists_is_locked_for_writing() -> None:
    lock = TableLock(read=[Counter, Place], write=[Counter])
    assert lock.write == [Counter._meta.db_table] and lock.read == [Place._meta.db_table]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, ValueError),
        ({"read": [Base]}, ValueError),
        ({"write": [""]}, ValueError),
        ({"write": "table"}, TypeError),
        ({"write": [42]}, TypeError),
        ({"write": [Counter], "timeout": -1}, ValueError),
        ({"write": [Counter], "using": 3}, TypeError),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        TableLock(**kwargs)


def test_write_lock_keeps_other_connections_out_until_the_end() -> None:
    with TableLock(write=[Counter]):
        Counter.objects.create(value=1)
        with pytest.raises(LockTimeout):
            in_thread(lambda: TableLock(read=[Counter], timeout=1).acquire())
    # committed and unlocked at the end of the block
    assert in_thread(lambda: Counter.objects.filter(value=1).count()) == 1


def test_read_locks_are_shared() -> None:
    def read_elsewhere() -> int:
        with TableLock(read=[Counter], timeout=1):
            return Counter.objects.count()

    with TableLock(read=[Counter]):
        count = Counter.objects.count()
        assert in_thread(read_elsewhere) == count


def test_a_child_model_locks_its_parents_table() -> None:
    with TableLock(write=[Restaurant]):
        Restaurant.objects.create(name="chez", seats=4)  # writes both tables
        with pytest.raises(LockTimeout):
            in_thread(lambda: TableLock(write=[Place], timeout=0).acquire())


def test_body_that_raises_rolls_back_and_unlocks() -> None:
    with pytest.raises(ZeroDivisionError), TableLock(write=[Counter]):
        Counter.objects.create(value=999)
        1 / 0
    assert not Counter.objects.filter(value=999).exists()
    assert in_thread(lambda: TableLock(write=[Counter], timeout=1).acquire() or "locked") == "locked"


def test_decorator_locks_each_call() -> None:
    @TableLock(write=[Counter])
    def bump() -> int:
        counter, _ = Counter.objects.get_or_create(pk=1)
        counter.value += 1
        counter.save()
        return counter.value

    first = bump()
    threads = [threading.Thread(target=lambda: in_thread(bump)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter.objects.get(pk=1).value == first + 3


def test_inside_a_transaction_is_a_clear_error() -> None:
    with transaction.atomic(), pytest.raises(TransactionManagementError, match="open transaction"):
        TableLock(write=[Counter]).acquire()
    # nothing stayed locked
    assert in_thread(lambda: TableLock(write=[Counter], timeout=1).acquire() or "locked") == "locked"


def test_it_does_not_nest_in_one_thread() -> None:
    lock = TableLock(write=[Counter])
    with lock, pytest.raises(TransactionManagementError):
        lock.acquire()
    with pytest.raises(TransactionManagementError):
        lock.release()


def test_another_database_vendor_is_refused() -> None:
    with pytest.raises(NotSupported, match="MySQL or MariaDB"):
        TableLock(write=["t"], using="sqlite").acquire()

"""With no LOCKS setting, the default alias comes from the URL-scheme registry: core names no
backend package, in its code or its imports."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import locks
from locks import config

CORE_SOURCE = Path(locks.__file__).parent
BACKEND_PACKAGES = ("locks_file", "locks_pg", "locks_mysql", "locks_rowlock", "locks_cache")


def _registry(schemes: dict[str, str]) -> object:
    points = [EntryPoint(name, value, config.URL_SCHEMES_GROUP) for name, value in schemes.items()]

    def entry_points(group: str) -> list[EntryPoint]:
        return [point for point in points if point.group == group]

    return entry_points


@pytest.fixture
def no_locks_setting() -> Iterator[None]:
    with override_settings(LOCKS=None):
        yield


def test_the_default_alias_is_the_backend_registered_for_file_urls(
    no_locks_setting: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "entry_points", _registry({"file": "locks.backends.memory:MemoryLockBackend"}))
    assert config.configured_locks() == {"default": {"BACKEND": "locks.backends.memory.MemoryLockBackend"}}
    assert type(locks.get_backend()).__name__ == "MemoryLockBackend"


def test_the_default_file_backend_keeps_its_own_default_location(no_locks_setting: None) -> None:
    from locks_file import FileLockBackend, default_directory

    backend = locks.get_backend()
    assert isinstance(backend, FileLockBackend)
    assert backend.location is None and backend.directory == default_directory()


def test_without_a_file_backend_no_setting_is_a_clear_improperly_configured(
    no_locks_setting: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "entry_points", _registry({"memory": "locks.backends.memory:MemoryLockBackend"}))
    with pytest.raises(ImproperlyConfigured, match=r"no installed lock backend handles file:// URLs.*locks-file"):
        locks.get_backend()
    with pytest.raises(ImproperlyConfigured):
        config.configured_locks()


def test_a_registered_default_that_does_not_load_is_a_clear_improperly_configured(
    no_locks_setting: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "entry_points", _registry({"file": "no_such_package:Backend"}))
    with pytest.raises(ImproperlyConfigured, match="could not be loaded"):
        locks.get_backend()


def _code_strings_and_imports(tree: ast.Module) -> Iterator[str]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


@pytest.mark.parametrize("path", sorted(CORE_SOURCE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE_SOURCE)))
def test_core_code_names_no_backend_package(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    named = [text for text in _code_strings_and_imports(tree) if text.startswith(BACKEND_PACKAGES)]
    assert named == [], f"{path.name} names a backend package: find backends through the URL-scheme registry"

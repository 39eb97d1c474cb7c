"""Lock names of decorated functions: the default, format templates and callables."""

from __future__ import annotations

import inspect
import string
from collections.abc import Callable
from typing import Any

_formatter = string.Formatter()


def is_template(name: object) -> bool:
    """A str name with replacement fields (``"sync-user-{user_id}"``) is a template, built from
    the decorated function's arguments at each call. Literal braces are written ``{{`` and ``}}``."""
    if not isinstance(name, str) or "{" not in name:
        return False
    try:
        return any(field is not None for _, field, _, _ in _formatter.parse(name))
    except ValueError as exc:
        raise ValueError(f"lock name {name!r} is not a valid format template: {exc}") from None


def default_name(func: Callable[..., Any]) -> str:
    """``module.qualname`` of the decorated function or class."""
    return f"{func.__module__}.{func.__qualname__}"


class NameBuilder:
    """Builds the lock name of one call of a decorated function."""

    def __init__(self, spec: Any, func: Callable[..., Any]) -> None:
        self.spec = spec
        self.func = func
        self.signature = inspect.signature(func) if is_template(spec) else None
        self.var_keyword = None
        if self.signature is not None:
            for param in self.signature.parameters.values():
                if param.kind is inspect.Parameter.VAR_KEYWORD:
                    self.var_keyword = param.name
            # Catch a misspelt field at decoration time, not at the first call in production.
            names = set(self.signature.parameters)
            for _, field, _, _ in _formatter.parse(spec):
                root = field.split(".")[0].split("[")[0] if field else field
                if root and root not in names and self.var_keyword is None:
                    raise ValueError(
                        f"lock name template {spec!r} uses {root!r}, which {default_name(func)} does not take"
                    )

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.spec is None:
            return default_name(self.func)
        if self.signature is not None:
            bound = self.signature.bind(*args, **kwargs)
            bound.apply_defaults()
            mapping = dict(bound.arguments)
            if self.var_keyword is not None:
                mapping.update(mapping.pop(self.var_keyword, {}))
            return self.spec.format_map(mapping)
        if callable(self.spec):
            return self.spec(*args, **kwargs)
        return self.spec

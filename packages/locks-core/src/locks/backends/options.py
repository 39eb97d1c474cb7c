"""The OPTIONS of a backend: declared once, parsed once, documented from the declaration.

A backend lists what it takes in :attr:`~locks.backends.BaseLockBackend.OPTIONS`, a tuple of
:class:`Option`. The base class parses the ``OPTIONS`` setting (and a URL's query parameters,
which :meth:`~locks.backends.BaseLockBackend.from_url` turns into options) through it before
anything connects, so a typo or a wrong type is refused at ``manage.py check`` and at
:func:`locks.connect`, never at the first lock.

**The spelling rule.** An option is declared in UPPER_CASE. Keys match it whatever their case:
``"FENCING": True`` in settings, ``?fencing=true`` in a URL. Giving one option twice in two
spellings is an error.

**Values.** Settings give Python values; URL query parameters give strings, which are converted
(``"true"``/``"false"``/``"1"``/``"0"`` for flags, numbers for numbers). A value of the wrong type,
out of its bounds or not among its choices raises :class:`~django.core.exceptions.ImproperlyConfigured`
naming the alias and the option.

**Driver options.** A backend whose driver takes options of its own (libpq's ``sslmode``,
redis-py's ``socket_timeout``) declares them with
:meth:`~locks.backends.BaseLockBackend.driver_options`: keys that are neither its options nor the
driver's are refused, with the closest spelling as a hint.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured

__all__ = ["COMMON_OPTIONS", "Option", "Seconds", "options_table", "parse_options"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Seconds(float):
    """The type of an option given in seconds: a number, a numeric string or a ``timedelta``."""


@dataclass(frozen=True)
class Option:
    """One option a backend takes.

    Args:
        name: its UPPER_CASE name.
        type: ``bool``, ``int``, ``float``, :class:`Seconds` or ``str``.
        default: the value when not given (``None``: not set).
        doc: one line for the settings page.
        minimum: the lower bound of a number (inclusive).
        maximum: the upper bound of a number (inclusive).
        choices: the allowed values of a ``str`` option (compared lower-cased).
        check: further validation of the converted value: returns the value to use (possibly
            changed) or raises ``ValueError`` saying what is wrong.
        parser: a conversion of its own for a value that is not ``None``, in place of the one
            ``type`` gives (an octal file mode given as a string, say); raises ``ValueError``.
        shown_default: how the settings page writes the default, when not as Python's ``repr``.
    """

    name: str
    type: type
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    check: Callable[[Any], Any] | None = None
    parser: Callable[[Any], Any] | None = None
    shown_default: str | None = None

    def __post_init__(self) -> None:
        if self.name != self.name.upper():
            raise ValueError(f"option names are declared in UPPER_CASE, not {self.name!r}")
        if self.type not in (bool, int, float, Seconds, str):
            raise ValueError(f"option {self.name}: unsupported type {self.type!r}")

    def convert(self, value: Any) -> Any:
        """The value to use, or ``ValueError`` saying what is wrong with ``value``."""
        if value is None:
            if self.default is None:
                return None
            raise ValueError(f"must be {self.describe()}, not None")
        if self.parser is not None:
            value = self.parser(value)
            return self.check(value) if self.check is not None else value
        kind = self.type
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise ValueError(f"must be True or False, not {value!r}")
        if kind is str:
            if not isinstance(value, str):
                raise ValueError(f"must be a str, not {type(value).__name__}")
            if self.choices:
                value = value.lower()
                if value not in self.choices:
                    raise ValueError(f"must be one of {', '.join(map(repr, self.choices))}, not {value!r}")
            return self.check(value) if self.check is not None else value
        number = self._number(value)
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}, not {value!r}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"must be at most {self.maximum:g}, not {value!r}")
        return self.check(number) if self.check is not None else number

    def _number(self, value: Any) -> float | int:
        if isinstance(value, bool):
            raise ValueError(f"must be {self.describe()}, not {value!r}")
        if self.type is Seconds and isinstance(value, timedelta):
            value = value.total_seconds()
        if isinstance(value, str):
            try:
                value = float(value) if self.type is not int else int(value)
            except ValueError:
                raise ValueError(f"must be {self.describe()}, not {value!r}") from None
        if self.type is int:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise ValueError(f"must be {self.describe()}, not {value!r}")
            return value
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"must be {self.describe()}, not {value!r}")
        return float(value)

    def describe(self) -> str:
        """What the option takes, in words."""
        words = {
            bool: "True or False",
            int: "a whole number",
            float: "a number",
            Seconds: "a number of seconds",
            str: "a str",
        }[self.type]
        if self.choices:
            return "one of " + ", ".join(map(repr, self.choices))
        return words


#: The options every backend takes, declared by :class:`~locks.backends.BaseLockBackend`.
COMMON_OPTIONS: tuple[Option, ...] = (
    Option("KEY_PREFIX", str, "", "prepended to every key of this alias: a namespace per project or environment"),
    Option(
        "WATCHDOG",
        bool,
        False,
        "check held locks every few seconds and report a loss through `on_lost` (backends with `watchdog`)",
    ),
)


def parse_options(
    declared: Collection[Option],
    given: Mapping[Any, Any] | None,
    *,
    where: str,
    driver: Collection[str] | None = None,
    driver_name: str = "the driver",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``given`` parsed against ``declared``: the value of every declared option (its default when
    not given), and the options passed through to the driver (keys as given).

    Args:
        where: how errors name the setting, e.g. ``"LOCKS['default'] (AdvisoryLockBackend)"``.
        driver: the keys the driver takes (lower-case), or ``None`` when nothing passes through.

    Raises:
        ImproperlyConfigured: an unknown key, an option given twice, or a bad value.
    """
    by_name = {option.name: option for option in declared}
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    passed: dict[str, Any] = {}
    for key, value in (given or {}).items():
        if not isinstance(key, str):
            raise ImproperlyConfigured(f"{where}: OPTIONS keys must be str, not {key!r}")
        name = key.upper()
        option = by_name.get(name)
        if option is None:
            if driver is not None and key.lower() in driver:
                passed[key] = value
                continue
            raise ImproperlyConfigured(_unknown(where, key, by_name, driver, driver_name))
        if name in spelled:
            raise ImproperlyConfigured(f"{where}: OPTIONS gives {name} twice ({spelled[name]!r} and {key!r})")
        spelled[name] = key
        try:
            values[name] = option.convert(value)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{where}: OPTIONS[{name!r}] {exc}") from None
    for name, option in by_name.items():
        values.setdefault(name, option.default)
    return values, passed


def _unknown(
    where: str, key: str, by_name: Mapping[str, Option], driver: Collection[str] | None, driver_name: str
) -> str:
    known = sorted(by_name)
    close = difflib.get_close_matches(key.upper(), known, n=1, cutoff=0.6)
    if not close and driver:
        close = difflib.get_close_matches(key.lower(), sorted(driver), n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    also = f" nor a parameter of {driver_name}" if driver is not None else ""
    return f"{where}: {key!r} is not an option of this backend{also}{hint} (options: {', '.join(known)})"


def options_table(declared: Collection[Option]) -> str:
    """The Markdown table of ``declared`` that the settings pages show."""
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for option in declared:
        rows.append(f"| `{option.name}` | {_type_words(option)} | {_default_words(option)} | {option.doc} |")
    return "\n".join(rows)


def _type_words(option: Option) -> str:
    if option.choices:
        return " or ".join(f"`{choice!r}`".replace("'", '"') for choice in option.choices)
    words = {bool: "bool", int: "int", float: "number", Seconds: "seconds", str: "str"}[option.type]
    bounds = []
    if option.minimum is not None:
        bounds.append(f"≥ {option.minimum:g}")
    if option.maximum is not None:
        bounds.append(f"≤ {option.maximum:g}")
    return f"{words} ({', '.join(bounds)})" if bounds else words


def _default_words(option: Option) -> str:
    if option.shown_default is not None:
        return f"`{option.shown_default}`"
    if option.default is None:
        return "not set"
    if isinstance(option.default, str):
        return f'`"{option.default}"`'
    if isinstance(option.default, float) and option.default.is_integer():
        return f"`{int(option.default)}`"
    return f"`{option.default!r}`"

"""Argument validators shared by constructors (pure Python): one check, the error naming the argument, the
allowed values and the value received.

Examples:
    >>> positive_int("rounds", 3)
    3
    >>> positive_int("rounds", 0)
    Traceback (most recent call last):
    ...
    ValueError: `rounds` must be a positive integer, got 0.
    >>> integer_at_least("warmup_epochs", -1, minimum=0)
    Traceback (most recent call last):
    ...
    ValueError: `warmup_epochs` must be an integer >= 0, got -1.
"""

from __future__ import annotations

from typing import Any


def check_number(
    name: str, value: Any, minimum: float, what: str, kind: type = int, strict: bool = False
) -> Any:
    """``value`` if it is a ``kind`` (never a bool) and ``>= minimum`` (``> minimum`` when ``strict``);
    else ``ValueError("`name` must be WHAT, got VALUE.")``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, kind)
        or (value <= minimum if strict else value < minimum)
    ):
        raise ValueError(f"`{name}` must be {what}, got {value!r}.")
    return value


def positive_int(name: str, value: Any) -> int:
    """An ``int`` >= 1 (message: "must be a positive integer")."""
    return check_number(name, value, 1, "a positive integer")


def integer_at_least(name: str, value: Any, minimum: int = 1) -> int:
    """An ``int`` >= ``minimum`` (message: "must be an integer >= MINIMUM")."""
    return check_number(name, value, minimum, f"an integer >= {minimum}")


def positive(name: str, value: Any, kind: type = int) -> Any:
    """A ``kind`` (``int`` or ``float``) > 0 (message: "must be a positive int|float")."""
    return check_number(name, value, 0, f"a positive {kind.__name__}", kind=kind, strict=True)

"""Argument checks shared by the trainer, the metrics and the plots: a bad value gives a
:class:`ValueError` that names the argument and the values accepted."""
from __future__ import annotations

import numbers
from typing import Any, Iterable, Optional, Sequence


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value: Any, name: str, minimum: Optional[int] = 1, *, none: bool = False,
              what: str = "") -> Optional[int]:
    """``value`` as an int >= ``minimum`` (any int for ``minimum=None``; None too where ``none``);
    else a ValueError naming ``name``, the values accepted and, if given, ``what`` the argument is."""
    if value is None and none:
        return None
    if not _is_int(value) or (minimum is not None and value < minimum):
        accepted = "an integer" + (f" >= {minimum}" if minimum is not None else "") + (" or None" if none else "")
        raise ValueError(f"{name} must be {accepted}" + (f" ({what})" if what else "") + f", got {value!r}")
    return int(value)


def check_ints(values: Any, name: str, minimum: int = 1) -> list[int]:
    """A non-empty sequence of ints >= ``minimum`` (e.g. the ``Ks`` of a sweep)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a non-empty sequence of integers >= {minimum}, got {values!r}")
    out = list(values)
    if not out or not all(_is_int(v) and v >= minimum for v in out):
        raise ValueError(f"{name} must be a non-empty sequence of integers >= {minimum}, got {values!r}")
    return [int(v) for v in out]


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_positive(value: Any, name: str) -> float:
    """A finite number > 0 (a span, a regularisation strength)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


__all__ = ["check_int", "check_ints", "check_choice", "check_positive"]

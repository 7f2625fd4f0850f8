"""Numeric arguments checked at the edge: a value outside its range (NaN and infinities included) is a
one-line :class:`~oneshot.errors.OneshotError` that states the range, raised before any work is done."""

from __future__ import annotations

import math

from oneshot.errors import OneshotError


def in_range(
    what: str,
    value: float | int | None,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Refuse ``value`` (named ``what`` in the message) outside [low, high] (open ends as asked); None passes."""
    if value is None:
        return
    lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
    try:
        ok = not isinstance(value, bool) and math.isfinite(value)
    except TypeError:
        ok = False
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise OneshotError(f"{what} {value!r} is out of range: give a value in {lo}, {hi}")

"""Checking a string option against the names that define it (a registry or a tuple of choices), once."""

from __future__ import annotations

from collections.abc import Iterable

from oneshot.errors import OneshotError


def check_choice(owner: str, option: str, value: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``; otherwise a :class:`OneshotError` naming them (never a silent default).

    Args:
        owner: who takes the option (a method or command name), for the message.
        option: what the option is (``mining strategy``, ``method`` ...).
    """
    choices = list(choices)
    if value not in choices:
        raise OneshotError(f"{owner}: unknown {option} {value!r}; choose one of {', '.join(choices)}")
    return value

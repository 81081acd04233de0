"""lamina's one error type: a message that says what is wrong and how to fix it.

Every loader, parser and CLI path raises :class:`LaminaError` for bad input; the CLI prints
``error: <message>`` on one line and exits with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LaminaError(Exception):
    """Bad input or an unusable environment, described in one line with the fix."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        text = " ".join(message.split())
        if hint:
            text = f"{text} ({' '.join(hint.split())})"
        super().__init__(text)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``"did you mean 'x'?"`` for the nearest choice, or the list of choices."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    return "choose one of: " + ", ".join(choices)

"""The one exception type a user should ever see from this repo."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import NoReturn


class GanError(Exception):
    """Bad input from the user, explained in one sentence that says what to do."""


def exit_with(err: GanError) -> NoReturn:
    """Print ``err`` as one line on stderr and exit non-zero (1 unless the error says)."""
    print(f"error: {err}", file=sys.stderr)
    sys.exit(getattr(err, "exit_code", 1))


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """A GanError inside the block ends the script with one line instead of a traceback."""
    try:
        yield
    except GanError as err:
        exit_with(err)

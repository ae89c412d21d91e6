"""The one exception type a user should ever see from this repo."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class GanError(Exception):
    """Bad input from the user, explained in one sentence that says what to do."""


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Print a GanError as one line on stderr and exit non-zero (1 unless the error says) instead of a traceback."""
    try:
        yield
    except GanError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 1))

"""What every command-line tool shares: user errors become one line on stderr and exit code 2.

The library raises `ValueError` (bad input, a checkpoint that does not fit, a malformed data
file) and `OSError` (a missing or unreadable file) for things the user can fix; a tool's
`main` wrapped in `user_errors` turns them into `error: ...` on one line instead of a traceback.
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def first_line(e: BaseException) -> str:
    """The first line of an error's message (a library's multi-line report), or its type's name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def user_errors(main: F) -> F:
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (ValueError, OSError) as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    return wrapped  # type: ignore[return-value]

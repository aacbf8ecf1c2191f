"""The pack's node errors: one line, our message, nothing from deep inside torch or pydantic.

Every node body runs inside `node_errors`: an error pusa-fw raises on purpose (`PusaError`) or a pydantic
`ValidationError` from a task's parameters becomes a `PusaNodeError` whose text is one line naming the node
input to change; ComfyUI shows it as the node's error. The original exception is dropped from the chain,
so the report carries our message rather than a traceback into the library.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import ValidationError

from pusa_fw.cli_params import one_line_validation_error
from pusa_fw.errors import PusaError

__all__ = ["PusaNodeError", "node_errors", "one_line"]


class PusaNodeError(PusaError, ValueError):
    """A bad input to a Pusa node; its text is the whole message (one line)."""


def one_line(error: BaseException) -> str:
    """The message of `error` on one line (pydantic errors as ``field: problem (got value)``)."""
    text = one_line_validation_error(error) if isinstance(error, ValidationError) else str(error)
    return " ".join(text.split())


@contextmanager
def node_errors(node: str) -> Iterator[None]:
    """Turn pusa-fw and pydantic errors raised inside into a one-line `PusaNodeError` from `node`."""
    try:
        yield
    except PusaNodeError:
        raise
    except (PusaError, ValidationError) as error:
        message = f"{node}: {one_line(error)}"
    else:
        return
    raise PusaNodeError(message) from None

"""Atomic file writes: write into a temporary file beside the target, then `os.replace` it into place.

A reader never sees a half-written file, and a write that fails (an exception from the writer, a full
disk, a bad frame halfway through a video) leaves the target untouched and no temporary file behind.

Two forms:

- `atomic_path(target)`: a context manager that yields a temporary *path* (same directory, same suffix),
  for writers that take a file name (PyAV, Pillow, safetensors).
- `atomic_write_bytes(target, data)`: the common case of writing a bytes object.

Example:
    >>> with atomic_path("out/video.mp4") as tmp:  # doctest: +SKIP
    ...     write_somehow(tmp)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

__all__ = ["atomic_path", "atomic_write_bytes", "check_output_path"]

_umask_lock = threading.Lock()
_umask_value: int | None = None


def _process_umask() -> int:
    """The process umask (read once; `os.umask` can only be read by setting it)."""
    global _umask_value
    with _umask_lock:
        if _umask_value is None:
            current = os.umask(0o022)
            os.umask(current)
            _umask_value = current
        return _umask_value


def check_output_path(target: str | os.PathLike[str]) -> Path:
    """Check that `target` can be written as a file and return it as a `Path`.

    Args:
        target: where a file is about to be written.

    Returns:
        The path, with `~` expanded.

    Raises:
        InputError: the target is an existing directory, its parent directory does not exist, or the
            parent does not take new files (checked by creating and deleting a temporary file there).
    """
    path = Path(target).expanduser()
    if path.is_dir():
        raise InputError(f"output path {str(path)!r} is a directory; give a file name inside it")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(
            f"cannot write {str(path)!r}: directory {str(parent)!r} does not exist; create it first"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(
            f"cannot write {str(path)!r}: directory {str(parent)!r} is not writable; "
            "choose another output directory or fix its permissions"
        )
    # os.access says yes to root everywhere (and knows nothing of /proc, /sys or read-only mounts): make
    # and delete the kind of temporary file `atomic_path` will write, so the answer is the real one.
    temp_name = _make_temp(path)
    os.unlink(temp_name)
    return path


def _make_temp(path: Path) -> str:
    """Create the (empty, closed) temporary file of `atomic_path` beside `path` and return its name.

    Raises:
        InputError: the directory does not take new files (permissions, a pseudo or read-only file system).
    """
    try:
        handle, temp_name = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent
        )
    except OSError as error:
        raise InputError(
            f"cannot write {str(path)!r}: directory {str(path.parent)!r} does not take new files "
            f"({error.strerror or type(error).__name__}); choose another output directory"
        ) from error
    os.close(handle)
    return temp_name


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success move it onto `target`, on error delete it.

    The temporary file keeps the target's suffix (so writers that infer the format from the name still
    work) and starts with a dot (so directory listings and globs ignore it while it is being written).
    It gets the permissions a newly created file would get (0o666 minus the umask), not mkstemp's 0o600.

    Args:
        target: the final file path. Its directory must exist.
        fsync: flush the written file to disk before the rename, so a crash cannot leave an empty file
            under the final name.

    Yields:
        The temporary path. The caller writes it (it exists, empty, when yielded) and closes it.

    Raises:
        InputError: the target's directory is missing or not writable, or the target is a directory
            (also when the final rename fails for that reason).
    """
    path = check_output_path(target)
    temp_path = Path(_make_temp(path))
    try:
        yield temp_path
        os.chmod(temp_path, 0o666 & ~_process_umask())
        if fsync:
            with open(temp_path, "rb") as written:
                os.fsync(written.fileno())
        try:
            os.replace(temp_path, path)
        except IsADirectoryError as error:
            raise InputError(
                f"output path {str(path)!r} is a directory; give a file name inside it"
            ) from error
        except PermissionError as error:
            raise InputError(
                f"cannot replace {str(path)!r}: permission denied; choose another output path"
            ) from error
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp_path.unlink()


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `target` atomically and return the target path.

    Args:
        target: the final file path. Its directory must exist.
        data: the complete file content.

    Returns:
        The written path.
    """
    with atomic_path(target) as temp_path:
        temp_path.write_bytes(data)
    return Path(target).expanduser()

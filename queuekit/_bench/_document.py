"""Writing ``--markdown FILE``: a document of its own, or, in a file that holds the markers,
only the block between them, every other byte of the file left as it was."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable

from ._options import UsageError

BEGIN = b"<!-- queuekit-bench:begin -->"
END = b"<!-- queuekit-bench:end -->"
_HEADING = re.compile(rb"^(#{1,6})[ \t]")
_FENCE = re.compile(rb"^\s*(```|~~~)")


def block(data: bytes, path: str) -> tuple[int, int] | None:
    """Where the generated block lies in ``data``, between the end of the begin marker and the
    start of the end marker; ``None`` if neither marker is there. ``UsageError`` unless there
    is exactly one of each, the begin marker first."""
    begins, ends = data.count(BEGIN), data.count(END)
    if begins == ends == 0:
        return None
    start, stop = data.find(BEGIN), data.find(END)
    if begins == ends == 1 and start < stop:
        return start + len(BEGIN), stop
    found = f"{begins} begin and {ends} end marker(s)"
    if begins == ends == 1:
        found = "the end marker before the begin marker"
    raise UsageError(
        f"{path}: {found}; the figures go between one {BEGIN.decode()} line and one later "
        f"{END.decode()} line: fix the markers, or remove both to have the whole file written"
    )


def check(path: str) -> None:
    """Before the run: ``UsageError`` if ``path`` holds malformed markers."""
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
        block(f.read(), path)


def level(before: bytes) -> int:
    """The level for the block's headings: one below the last heading before it (outside
    fenced code), or 2 if there is none."""
    last, fenced = 1, False
    for line in before.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (heading := _HEADING.match(line)):
            last = len(heading.group(1))
    return min(6, last + 1)


def splice(data: bytes, path: str, sections: Callable[[int], str]) -> bytes | None:
    """``data`` with ``sections(level)`` between its markers, or ``None`` if it has none."""
    span = block(data, path)
    if span is None:
        return None
    start, stop = span
    inner = sections(level(data[:start])).strip("\n")
    return data[:start] + b"\n\n" + inner.encode() + b"\n\n" + data[stop:]


def write(path: str, whole: str, sections: Callable[[int], str]) -> None:
    """``path`` anew: its block replaced if it holds the markers, else ``whole``. Written to a
    temporary file beside it and renamed over it, so a reader sees the old file or the new one,
    never part of one; the file keeps its permissions."""
    real = os.path.realpath(path)  # a symbolic link stays one
    try:
        with open(real, "rb") as f:
            data = f.read()
        mode = os.stat(real).st_mode & 0o7777
    except FileNotFoundError:
        data, mode = b"", 0o666 & ~_umask()
    new = splice(data, path, sections) if data else None
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(real)}.", dir=os.path.dirname(real))
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(whole.encode() if new is None else new)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

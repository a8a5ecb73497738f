"""The two ends of a kernel pipe that processes share, for the backends built on one.

How the ends travel to a child process (as descriptors, duplicated for it), how they are
closed, how many bytes the pipe holds as the kernel counts them, and whether a process that
may have died with work half done still runs. ``mp://`` and ``pipe://`` both use it, so they
never import each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import termios
from multiprocessing.reduction import DupFd
from typing import Any

__all__ = ["PipeEnds", "bytes_in_pipe", "pid_alive"]


def bytes_in_pipe(fd: int) -> int:
    """The bytes in the pipe of ``fd`` (either end), as the kernel counts them."""
    value: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    return value


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs; a zombie (killed, not yet reaped by its parent) does not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


class PipeEnds:
    """``rfd`` and ``wfd``, this process's ends of the pipe (-1 once closed)."""

    rfd: int
    wfd: int

    def ends_state(self) -> dict[str, Any]:
        """The ends, for a child being started: it gets copies of its own."""
        return {
            "rfd": DupFd(self.rfd) if self.rfd >= 0 else None,
            "wfd": DupFd(self.wfd),
        }

    @staticmethod
    def restore_ends(state: dict[str, Any]) -> None:
        """Turn the ends in ``state`` (from :meth:`ends_state`) into this process's descriptors."""
        for end in ("rfd", "wfd"):
            dup = state[end]
            state[end] = -1 if dup is None else dup.detach()
            if state[end] >= 0:
                os.set_inheritable(state[end], False)

    def close_fds(self) -> None:
        for end in ("rfd", "wfd"):
            fd = getattr(self, end, -1)
            setattr(self, end, -1)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __del__(self) -> None:
        self.close_fds()

"""The errors queuekit raises, rooted in :class:`QueueError`.

Each error also derives from the standard exception a caller would already catch, so code
written against :mod:`queue` or :mod:`multiprocessing` keeps working when it switches to
queuekit: ``except queue.Empty`` catches :class:`Empty`, ``except queue.Full`` catches
:class:`Full`, and on Python 3.13+ ``except queue.ShutDown`` catches :class:`ShutDown`.
A bad URL is a :class:`ValueError`, a lost connection a :class:`ConnectionError`.
"""

from __future__ import annotations

import queue as _stdlib_queue
import sys

__all__ = [
    "AuthenticationError",
    "BackendUnavailable",
    "CorruptMessage",
    "Empty",
    "Full",
    "InvalidURL",
    "JoinTimeout",
    "MessageTooLarge",
    "QueueClosed",
    "QueueError",
    "SerializationError",
    "ShutDown",
    "UnknownBackend",
]


class QueueError(Exception):
    """Base of every error queuekit raises on purpose."""


class Empty(QueueError, _stdlib_queue.Empty):
    """No item was available: the queue stayed empty for the whole wait."""


class Full(QueueError, _stdlib_queue.Full):
    """No room was available: the queue stayed full for the whole wait."""


# queue.ShutDown exists from Python 3.13 on; before that ours stands alone.
if sys.version_info >= (3, 13):

    class ShutDown(QueueError, _stdlib_queue.ShutDown):
        """The queue was shut down: puts are refused, and gets once it is drained."""

else:

    class ShutDown(QueueError):
        """The queue was shut down: puts are refused, and gets once it is drained."""


class QueueClosed(QueueError, ValueError):
    """This handle was closed; open the queue again to keep using it."""


class JoinTimeout(QueueError, TimeoutError):
    """``join(timeout)`` ran out of time while tasks were still unfinished."""


class InvalidURL(QueueError, ValueError):
    """A queue URL, or an option given beside it, cannot be used as written."""


class UnknownBackend(InvalidURL):
    """No backend is registered for the URL's scheme."""


class MessageTooLarge(QueueError, ValueError):
    """A serialized item (or batch) can never fit the backend's limit."""


class BackendUnavailable(QueueError, ConnectionError):
    """The transport behind the queue cannot be reached or is missing a dependency."""


class SerializationError(QueueError):
    """An item could not be serialized (in ``put``) or deserialized (in ``get``)."""


class CorruptMessage(QueueError):
    """The transport's bytes are damaged: a message could not be read back whole and intact.

    ``data`` holds the message's bytes as they were read, when the backend could delimit them
    (None otherwise), so a consumer can keep them aside instead of losing them.
    """

    def __init__(self, *args: object, data: bytes | None = None) -> None:
        super().__init__(*args)
        self.data = data


class AuthenticationError(CorruptMessage):
    """A message lacks a valid HMAC tag for the queue's ``authkey``; it was not deserialized."""

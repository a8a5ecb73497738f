"""queuekit: one queue API, several transports, provably the same semantics.

Open a queue by URL with :func:`open` (``memory://``, ``mp://``, ...), or construct a backend
class from :mod:`queuekit.backends` directly. The contract is :class:`Queue`; the conformance
suite that checks it is :mod:`queuekit.testing`.
"""

from ._auth import AUTHKEY_ENV, AuthenticatedSerializer
from ._base import QueueBase
from ._errors import (
    AuthenticationError,
    BackendUnavailable,
    CorruptMessage,
    Empty,
    Full,
    InvalidURL,
    JoinTimeout,
    MessageTooLarge,
    QueueClosed,
    QueueError,
    SerializationError,
    ShutDown,
    UnknownBackend,
)
from ._protocol import Capabilities, Queue
from ._registry import Opener, open, register_backend, registered_schemes
from ._serializers import (
    JsonSerializer,
    PickleSerializer,
    RawSerializer,
    Serializer,
    get_serializer,
    register_serializer,
)
from ._urls import (
    Param,
    QueueURL,
    as_bool,
    as_float,
    as_int,
    as_serializer,
    as_size,
    bind_params,
    parse_url,
)

__version__ = "0.1.0"

__all__ = [
    "AUTHKEY_ENV",
    "AuthenticatedSerializer",
    "AuthenticationError",
    "BackendUnavailable",
    "Capabilities",
    "CorruptMessage",
    "Empty",
    "Full",
    "InvalidURL",
    "JoinTimeout",
    "JsonSerializer",
    "MessageTooLarge",
    "Opener",
    "Param",
    "PickleSerializer",
    "Queue",
    "QueueBase",
    "QueueClosed",
    "QueueError",
    "QueueURL",
    "RawSerializer",
    "SerializationError",
    "Serializer",
    "ShutDown",
    "UnknownBackend",
    "as_bool",
    "as_float",
    "as_int",
    "as_serializer",
    "as_size",
    "bind_params",
    "get_serializer",
    "open",
    "parse_url",
    "register_backend",
    "register_serializer",
    "registered_schemes",
]

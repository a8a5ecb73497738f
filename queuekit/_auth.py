"""Authenticated payloads: an HMAC-SHA256 tag on every message, checked before it is loaded.

``open(url, authkey=KEY)``, or the environment variable ``QUEUEKIT_AUTHKEY``, wraps the queue's
serializer in :class:`AuthenticatedSerializer`: ``dumps`` puts a 32-byte HMAC-SHA256 tag of the
payload in front of it, and ``loads`` compares that tag in constant time before the payload
reaches the inner serializer. A message written without the key, or changed on the way, is
refused with :class:`~queuekit.AuthenticationError` whose ``data`` holds the bytes as they came,
so nothing a foreign writer put into the queue is ever unpickled.

The key is never a URL parameter, so it cannot leak through a logged URL, and it is never
shown in a repr. It does travel, inside a pickled handle, to the child processes a handle is
passed to, as their queue needs it. What the tag does not stop: a message taken from one queue
and replayed, whole, into another queue that shares the key.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from ._errors import AuthenticationError
from ._serializers import Serializer

__all__ = [
    "AUTHKEY_ENV",
    "MIN_AUTHKEY_BYTES",
    "AuthenticatedSerializer",
    "authkey_from",
    "authkey_from_environment",
]

AUTHKEY_ENV = "QUEUEKIT_AUTHKEY"
MIN_AUTHKEY_BYTES = 16
_TAG = 32  # bytes of an HMAC-SHA256 digest


def authkey_from(value: object, source: str = "authkey") -> bytes:
    """``value`` as key bytes (a str is taken as UTF-8); ValueError when it is too short."""
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{source} must be bytes or str, not {type(value).__name__}")
    key = bytes(value)
    if len(key) < MIN_AUTHKEY_BYTES:
        raise ValueError(
            f"{source} must be at least {MIN_AUTHKEY_BYTES} bytes, got {len(key)}; make one with "
            'python -c "import secrets; print(secrets.token_hex(32))"'
        )
    return key


class AuthenticatedSerializer:
    """``inner``'s bytes, each behind an HMAC-SHA256 tag made with ``key``."""

    def __init__(self, inner: Serializer, key: bytes | str) -> None:
        self.inner = inner
        self.name = f"{inner.name}+hmac"
        self._key = authkey_from(key)

    def dumps(self, item: Any) -> bytes:
        payload = self.inner.dumps(item)
        return hmac.digest(self._key, payload, "sha256") + payload

    def loads(self, data: bytes) -> Any:
        view = memoryview(data)
        tag, payload = view[:_TAG], view[_TAG:]
        if len(tag) < _TAG or not hmac.compare_digest(
            tag, hmac.digest(self._key, payload, "sha256")
        ):
            raise AuthenticationError(
                f"a {len(data)}-byte message does not carry this queue's HMAC tag: it was "
                "written without the authkey, with another one, or changed on the way. It was "
                "not deserialized; its bytes are in this error's .data",
                data=bytes(data),
            )
        return self.inner.loads(bytes(payload))

    def __repr__(self) -> str:
        return f"AuthenticatedSerializer({self.inner!r}, key=***)"


def authkey_from_environment() -> bytes | None:
    value = os.environ.get(AUTHKEY_ENV)
    if value is None:
        return None
    return authkey_from(value, f"the environment variable {AUTHKEY_ENV}")

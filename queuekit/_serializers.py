"""Serializers turn items into bytes for transports that cross a process boundary.

Three are built in: ``pickle`` (the default, protocol 5), ``json`` and ``raw`` (bytes only).
Others plug in with :func:`register_serializer` or by passing an object with ``dumps`` and
``loads`` as ``serializer=``. Failures surface as :class:`~queuekit.SerializationError` in the
caller, before the queue changes.

Pickle runs code of the sender's choosing when it loads: use it only between processes that
trust each other, and ``json`` or ``raw`` otherwise.
"""

from __future__ import annotations

import io
import json
import pickle
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from ._errors import SerializationError

__all__ = [
    "JsonSerializer",
    "PickleSerializer",
    "RawSerializer",
    "Serializer",
    "dumps_many",
    "get_serializer",
    "loads_many",
    "register_serializer",
    "serializer_names",
]


@runtime_checkable
class Serializer(Protocol):
    """Turns an item into bytes and back. ``loads(dumps(x))`` must equal ``x``.

    A serializer may also define ``dumps_many(items)`` and ``loads_many(payloads)``, lists in
    and out, for transports that move batches (see :func:`dumps_many`); they are optional.
    """

    name: str

    def dumps(self, item: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


# Above glibc's mmap threshold, pickle.dumps grows its output by realloc and faults in every
# page again: a 1 MiB bytes item took ~400 us, against ~20 us written through a BytesIO, where
# the pickler hands a large bytes object to the file whole. For small items BytesIO costs ~3x,
# so only bytes-like and str items past this size take that path.
_LARGE = 64 * 1024
_FLAT = (bytes, bytearray, str)
_FLAT_TYPES = frozenset(_FLAT)


class PickleSerializer:
    name = "pickle"
    protocol = 5

    def dumps(self, item: Any) -> bytes:
        try:
            if type(item) in _FLAT and len(item) > _LARGE:
                out = io.BytesIO()
                pickle.Pickler(out, protocol=self.protocol).dump(item)
                return out.getvalue()
            return pickle.dumps(item, protocol=self.protocol)
        except Exception as exc:
            raise SerializationError(
                f"cannot pickle {type(item).__name__!r}: {exc}. Put picklable items "
                "(module-level classes and functions, no locks, sockets or lambdas), or "
                "choose another serializer=."
            ) from exc

    def loads(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise SerializationError(
                f"cannot unpickle a {len(data)}-byte message: {exc}. The sender may run "
                "different code, or the message is not a pickle."
            ) from exc

    # The batch calls save a method call and a type check an item: a third of a small item's
    # cost in a batch.
    def dumps_many(self, items: Sequence[Any]) -> list[bytes]:
        if _FLAT_TYPES.isdisjoint(map(type, items)):
            dumps, protocol = pickle.dumps, self.protocol
            try:
                return [dumps(item, protocol) for item in items]
            except Exception:
                pass  # dumps, item by item, names the item that failed
        return [self.dumps(item) for item in items]

    def loads_many(self, payloads: Sequence[bytes]) -> list[Any]:
        try:
            return list(map(pickle.loads, payloads))
        except Exception as exc:
            raise SerializationError(
                f"cannot unpickle one of {len(payloads)} messages got together: {exc}. The "
                "sender may run different code, or the message is not a pickle."
            ) from exc

    def __repr__(self) -> str:
        return "PickleSerializer()"


class JsonSerializer:
    """UTF-8 JSON. Tuples come back as lists and dict keys as strings, as JSON has it."""

    name = "json"

    def dumps(self, item: Any) -> bytes:
        try:
            return json.dumps(item, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"cannot encode {type(item).__name__!r} as JSON: {exc}. Put JSON values "
                "(dict, list, str, int, float, bool, None), or choose serializer=pickle."
            ) from exc

    def loads(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError as exc:
            raise SerializationError(f"a {len(data)}-byte message is not JSON: {exc}") from exc

    def __repr__(self) -> str:
        return "JsonSerializer()"


class RawSerializer:
    """Bytes in, bytes out: no encoding at all."""

    name = "raw"

    def dumps(self, item: Any) -> bytes:
        if isinstance(item, bytes):
            return item
        if isinstance(item, (bytearray, memoryview)):
            return bytes(item)
        raise SerializationError(
            f"serializer=raw takes bytes, bytearray or memoryview, not {type(item).__name__!r}; "
            "encode the item first or choose serializer=pickle."
        )

    def loads(self, data: bytes) -> Any:
        return bytes(data)

    def __repr__(self) -> str:
        return "RawSerializer()"


def dumps_many(serializer: Serializer, items: Sequence[Any]) -> list[bytes]:
    """``serializer.dumps`` of each item: by its ``dumps_many``, if it has one."""
    many: Callable[[Sequence[Any]], list[bytes]] | None = getattr(serializer, "dumps_many", None)
    if many is not None:
        return many(items)
    dumps = serializer.dumps
    return [dumps(item) for item in items]


def loads_many(serializer: Serializer, payloads: Sequence[bytes]) -> list[Any]:
    """``serializer.loads`` of each payload: by its ``loads_many``, if it has one."""
    many: Callable[[Sequence[bytes]], list[Any]] | None = getattr(serializer, "loads_many", None)
    if many is not None:
        return many(payloads)
    loads = serializer.loads
    return [loads(data) for data in payloads]


_lock = threading.Lock()
_serializers: dict[str, Serializer] = {
    s.name: s for s in (PickleSerializer(), JsonSerializer(), RawSerializer())
}


def register_serializer(serializer: Serializer, *, replace: bool = False) -> None:
    """Make ``serializer`` available by its ``name``, as ``serializer=NAME`` in URLs."""
    if not isinstance(serializer, Serializer):
        raise TypeError("a serializer needs a 'name' and 'dumps'/'loads' methods")
    with _lock:
        if serializer.name in _serializers and not replace:
            raise ValueError(
                f"a serializer named {serializer.name!r} is registered already; "
                "pass replace=True to replace it"
            )
        _serializers[serializer.name] = serializer


def serializer_names() -> list[str]:
    return sorted(_serializers)


def get_serializer(spec: str | Serializer) -> Serializer:
    """The serializer named ``spec``, or ``spec`` itself when it is one already."""
    if isinstance(spec, str):
        try:
            return _serializers[spec]
        except KeyError:
            raise ValueError(
                f"unknown serializer {spec!r}; choose one of {', '.join(serializer_names())}"
            ) from None
    if isinstance(spec, Serializer):
        return spec
    raise TypeError(
        f"serializer must be a name or an object with dumps/loads, not {type(spec).__name__}"
    )

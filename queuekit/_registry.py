"""Which backend opens which URL scheme: the one place that maps schemes to code.

Three sources, looked up in this order: schemes registered at run time with
:func:`register_backend`; queuekit's own backends, imported only when first opened (so that
``import queuekit`` never imports redis-py); and the ``queuekit.backends`` entry-point group,
through which an installed distribution adds schemes without being imported until used.
"""

from __future__ import annotations

import difflib
import importlib
import re
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from ._auth import AuthenticatedSerializer, authkey_from, authkey_from_environment
from ._errors import BackendUnavailable, InvalidURL, UnknownBackend
from ._protocol import Queue
from ._serializers import get_serializer
from ._urls import QueueURL, parse_url

__all__ = ["ENTRY_POINT_GROUP", "Opener", "open", "register_backend", "registered_schemes"]

ENTRY_POINT_GROUP = "queuekit.backends"


Opener = Callable[..., Queue[Any]]
"""Opens a queue: ``opener(url: QueueURL, **options) -> Queue``, the keyword options given to
:func:`open` overriding the URL's query. (Spelt ``...`` so a plain ``def opener(url, **options)``
type-checks; a Protocol with ``**options`` would reject a parameter named ``url``.)"""


# scheme -> "module:qualified.name" of the opener, and the extra a backend needs.
_BUILTIN: dict[str, str] = {
    "memory": "queuekit.backends.memory:MemoryQueue.from_url",
    "mp": "queuekit.backends.mp:MPQueue.from_url",
    "pipe": "queuekit.backends.pipe:PipeQueue.from_url",
    "redis": "queuekit.backends.redis:RedisQueue.from_url",
    "rediss": "queuekit.backends.redis:RedisQueue.from_url",
    "shm": "queuekit.backends.shm:ShmQueue.from_url",
    "unix": "queuekit.backends.redis:RedisQueue.from_url",
}
_EXTRAS: dict[str, str] = {"redis": "redis", "rediss": "redis", "unix": "redis"}

_lock = threading.Lock()
_registered: dict[str, Opener] = {}
_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*$")


def register_backend(scheme: str, opener: Opener, *, replace: bool = False) -> None:
    """Open ``scheme://`` URLs with ``opener(url, **options)``.

    ``opener`` receives the parsed :class:`~queuekit.QueueURL` and the keyword options given to
    :func:`open`. Registering a scheme that is taken raises ``ValueError`` unless ``replace``.
    """
    if not isinstance(scheme, str) or not _SCHEME.match(scheme):
        raise ValueError(
            f"{scheme!r} is not a URL scheme: use lower-case letters, digits, '+', '-' or '.', "
            "starting with a letter"
        )
    if not callable(opener):
        raise TypeError(f"opener must be callable, not {type(opener).__name__}")
    with _lock:
        if not replace and (scheme in _registered or scheme in _BUILTIN):
            raise ValueError(
                f"scheme {scheme!r} is registered already; pass replace=True to replace it"
            )
        _registered[scheme] = opener


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def registered_schemes() -> list[str]:
    """Every scheme :func:`open` can open now, without importing any backend."""
    return sorted(set(_registered) | set(_BUILTIN) | set(_entry_points()))


def _import_target(target: str) -> Any:
    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in qualname.split("."):
        obj = getattr(obj, attr)
    return obj


def _missing_extra(scheme: str, exc: ImportError) -> BackendUnavailable:
    extra = _EXTRAS.get(scheme)
    hint = f"pip install 'queuekit[{extra}]'" if extra else "install the package it needs"
    return BackendUnavailable(f"{scheme}:// needs a package that is not installed ({exc}); {hint}")


def _find_opener(scheme: str) -> Opener:
    with _lock:
        if scheme in _registered:
            return _registered[scheme]
    if scheme in _BUILTIN:
        try:
            opener: Opener = _import_target(_BUILTIN[scheme])
        except ImportError as exc:
            raise _missing_extra(scheme, exc) from exc
        return opener
    found = _entry_points().get(scheme)
    if found is not None:
        try:
            opener = found.load()
        except ImportError as exc:
            raise BackendUnavailable(
                f"the {scheme}:// backend from entry point {found.value!r} failed to import: {exc}"
            ) from exc
        with _lock:
            _registered.setdefault(scheme, opener)
        return opener
    known = registered_schemes()
    close = difflib.get_close_matches(scheme, known + list(_EXTRAS), n=1, cutoff=0.6)
    hint = ""
    if close:
        hint = f" Did you mean {close[0]}://?"
        if close[0] in _EXTRAS:
            hint += f" (it needs: pip install 'queuekit[{_EXTRAS[close[0]]}]')"
    raise UnknownBackend(
        f"no queue backend for {scheme}://.{hint} Registered: "
        f"{', '.join(s + '://' for s in known)}. Third-party backends register with "
        f"queuekit.register_backend() or the {ENTRY_POINT_GROUP!r} entry-point group."
    )


def _authenticate(url: QueueURL, options: dict[str, Any]) -> None:
    """Turn an ``authkey`` option (or ``QUEUEKIT_AUTHKEY``) into the backend's serializer,
    wrapped so every message is signed and checked; backends never see the key as such."""
    key = options.pop("authkey", None)
    try:
        key = authkey_from(key) if key is not None else authkey_from_environment()
    except (TypeError, ValueError) as exc:
        raise InvalidURL(f"{url}: {exc}") from None
    if key is None:
        return
    inner = options.get("serializer", url.query.get("serializer", "pickle"))
    try:
        options["serializer"] = AuthenticatedSerializer(get_serializer(inner), key)
    except (TypeError, ValueError) as exc:
        raise InvalidURL(f"{url}: bad value for 'serializer': {exc}") from None


def open(url: str | QueueURL, **options: Any) -> Queue[Any]:
    """Open the queue ``url`` names; keyword ``options`` override the URL's parameters.

    ``authkey=`` (bytes or str, at least 16 bytes; or the environment variable
    ``QUEUEKIT_AUTHKEY``) signs every message with HMAC-SHA256 and checks it before loading:
    see :class:`~queuekit.AuthenticatedSerializer`. The backend must take a ``serializer``.

    Raises :class:`~queuekit.InvalidURL` for a malformed URL or parameter,
    :class:`~queuekit.UnknownBackend` for a scheme nobody registered, and
    :class:`~queuekit.BackendUnavailable` when the backend cannot be loaded or reached.
    """
    parsed = parse_url(url)
    opener = _find_opener(parsed.scheme)
    _authenticate(parsed, options)
    queue = opener(parsed, **options)
    if not isinstance(queue, Queue):
        raise TypeError(
            f"the opener for {parsed.scheme}:// returned {type(queue).__name__}, "
            "which does not implement queuekit.Queue"
        )
    return queue

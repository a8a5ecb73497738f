"""URL parameters of the ``redis://`` backend, and the redis-py connection they make."""

from __future__ import annotations

import inspect
from typing import Any

import redis
from redis._parsers import _RESP2Parser
from redis.backoff import NoBackoff
from redis.retry import Retry

from .._errors import InvalidURL
from .._urls import Param, QueueURL, as_bool, as_float, as_int, as_serializer

__all__ = ["CONNECTION_PARAMS", "OWN_PARAMS", "TLS_PARAMS", "client", "connection"]


def _as_text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, not {type(value).__name__}")
    return value


def _as_positive(value: object) -> float:
    result = as_float(value)
    if result <= 0:
        raise ValueError("expected a number of seconds above 0, like 30")
    return result


def _as_visibility(value: object) -> float:
    result = as_float(value)
    if result < 0.5:
        # Its heartbeat is refreshed three times per timeout: below that it would be a busy loop.
        raise ValueError("expected a number of seconds, at least 0.5, like 30")
    return result


def _as_seconds(value: object) -> float:
    result = as_float(value)
    if result < 0:
        raise ValueError("expected a number of seconds, 0 or more, like 5")
    return result


def _as_cert_reqs(value: object) -> str:
    if value not in ("none", "optional", "required"):
        raise ValueError("expected none, optional or required")
    return str(value)


OWN_PARAMS = [
    Param("key", _as_text, "", "the queue's name in Redis; empty: a new private key per open"),
    Param("maxsize", as_int, None, "most items held; 0 for unbounded (set by the first open)"),
    Param("serializer", as_serializer, "pickle", "pickle, json, raw or an object with dumps/loads"),
    Param("visibility_timeout", _as_visibility, 30.0, "seconds a consumer's heartbeat lives"),
    Param("retry_window", _as_seconds, 5.0, "seconds to retry a lost server before giving up"),
]
# redis-py's own connection parameters, checked here so that a wrong one is an InvalidURL and
# not a TypeError from redis-py. None: redis-py's default (or this module's, below).
CONNECTION_PARAMS = [
    Param("db", as_int, None, "database number (also the URL's path, as /0)"),
    Param("socket_timeout", _as_positive, None, "seconds a reply may take (default 10)"),
    Param("socket_connect_timeout", _as_positive, None, "seconds to connect (default 2)"),
    Param("socket_keepalive", as_bool, None, "TCP keepalive"),
    Param("health_check_interval", as_int, None, "seconds idle before a connection is checked"),
    Param("client_name", _as_text, None, "the name CLIENT LIST shows"),
    Param("max_connections", as_int, None, "most connections this handle opens"),
]
TLS_PARAMS = [
    Param("ssl_cert_reqs", _as_cert_reqs, None, "none, optional or required (default)"),
    Param("ssl_ca_certs", _as_text, None, "file of CA certificates"),
    Param("ssl_ca_path", _as_text, None, "directory of CA certificates"),
    Param("ssl_certfile", _as_text, None, "client certificate"),
    Param("ssl_keyfile", _as_text, None, "client key"),
    Param("ssl_password", _as_text, None, "password of the client key"),
    Param("ssl_check_hostname", as_bool, None, "check the certificate's host name (default yes)"),
]
_CONNECTION_NAMES = [p.name for p in CONNECTION_PARAMS + TLS_PARAMS if p.name != "db"]


def connection(url: QueueURL, values: dict[str, Any]) -> dict[str, Any]:
    """redis.Redis keyword arguments for ``url``; InvalidURL for what cannot be used."""
    kw: dict[str, Any] = {"username": url.username, "password": url.password}
    db = values["db"]
    if url.scheme == "unix":
        if url.location or not url.path:
            raise InvalidURL(
                f"{url}: write the socket's path after three slashes, as "
                "unix:///run/redis.sock?db=0&key=jobs"
            )
        kw["unix_socket_path"] = url.path
    else:
        kw["host"] = url.hostname or "localhost"
        kw["port"] = url.port or 6379
        path = url.path.strip("/")
        if path:
            if not path.isdigit():
                raise InvalidURL(f"{url}: the path is a database number, as /0; not {url.path!r}")
            if db is not None and db != int(path):
                raise InvalidURL(f"{url}: database {path} in the path but db={db}; give one")
            db = int(path)
        kw["ssl"] = url.scheme == "rediss"
    given_tls = [p.name for p in TLS_PARAMS if values[p.name] is not None]
    if given_tls and url.scheme != "rediss":
        raise InvalidURL(f"{url}: {', '.join(given_tls)} need TLS: use rediss://")
    kw["db"] = db or 0
    for name in _CONNECTION_NAMES:
        if values[name] is not None:
            kw[name] = values[name]
    kw.setdefault("socket_timeout", 10.0)
    kw.setdefault("socket_connect_timeout", 2.0)
    # Retries are this module's business: redis-py's would resend writes blindly.
    kw["retry"] = Retry(NoBackoff(), 0)
    # No CLIENT SETINFO on connecting: a reconnection during a server stall would wait for its
    # reply for the whole socket_timeout, past the timeout of the call that reconnects. (AUTH
    # and SELECT, when a password or a database other than 0 needs them, still do.)
    # RESP2 for the same reason: RESP3 costs a HELLO on every connection.
    kw.update(_NO_SETINFO, protocol=2)
    return kw


def client(kw: dict[str, Any]) -> redis.Redis:
    """The redis-py client for keyword arguments from :func:`connection`."""
    made = redis.Redis(**kw)
    if kw.get("ssl"):
        # redis-py checks a new connection for unread data by polling its socket (hiredis's
        # parser does). A TLS 1.3 server's session tickets arrive after the handshake; as
        # nothing is read on connecting (no SETINFO, above), they are still on the socket, so
        # the check refuses the connection ("Connection has data"), again and again. The
        # pure-Python parser's check reads through TLS, which takes the tickets in.
        made.connection_pool.connection_kwargs["parser_class"] = _RESP2Parser
    return made


_REDIS_ARGS = inspect.signature(redis.Redis.__init__).parameters
_NO_SETINFO = {"driver_info": None} if "driver_info" in _REDIS_ARGS else {"lib_name": None}

"""Queue URLs: parsing, declared parameters, and values given in text.

A URL is ``SCHEME://[USER[:PASSWORD]@]LOCATION[/PATH][?NAME=VALUE&...]``. What LOCATION and
PATH mean is the backend's business; the query holds the backend's declared parameters, and
keyword options given to :func:`queuekit.open` override them. Nothing is silently ignored: an
undeclared parameter, a repeated one or a value of the wrong form is an
:class:`~queuekit.InvalidURL` that names it and says what is accepted.

A password never leaves this module in clear: ``repr``/``str`` of a :class:`QueueURL` and
every error built here show ``***`` in its place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ._errors import InvalidURL
from ._serializers import Serializer, get_serializer, serializer_names

__all__ = [
    "Param",
    "QueueURL",
    "as_bool",
    "as_float",
    "as_int",
    "as_serializer",
    "as_size",
    "bind_params",
    "parse_url",
]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
MASK = "***"


@dataclass(frozen=True)
class QueueURL:
    """A parsed queue URL. The password is kept, but never shown."""

    scheme: str
    location: str = ""
    """What stands between ``://`` (after any user info) and the path: a host, a name."""
    path: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    query: Mapping[str, str] = field(default_factory=dict)

    @property
    def hostname(self) -> str | None:
        return urlsplit(f"//{self.location}").hostname

    @property
    def port(self) -> int | None:
        try:
            return urlsplit(f"//{self.location}").port
        except ValueError as exc:
            raise InvalidURL(f"{self}: bad port: {exc}") from None

    def redacted(self) -> str:
        """The URL as text, with ``***`` for the password."""
        userinfo = ""
        if self.username is not None or self.password is not None:
            userinfo = quote(self.username or "", safe="")
            if self.password is not None:
                userinfo += ":" + MASK
            userinfo += "@"
        query = "&".join(f"{k}={quote(v, safe='/:,')}" for k, v in self.query.items())
        return f"{self.scheme}://{userinfo}{self.location}{self.path}" + (
            f"?{query}" if query else ""
        )

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"QueueURL({self.redacted()!r})"


def _mask(text: str) -> str:
    """``text`` with any ``user:password@`` part masked, for errors about unparsable URLs.

    The mask runs to the last ``@``: an unencoded ``/ ? # @`` in a password is a usual reason
    a URL does not parse, so it may hide more than the password, never less.
    """
    # The authority starts after "://"; in a text that lacks it (the very URLs this is for),
    # the scheme cannot be told from a user name, so the mask starts at the first ':'.
    sep = text.find("://")
    start = sep + 3 if sep >= 0 else 0
    at = text.rfind("@")
    colon = text.find(":", start, at) if at > start else -1
    if colon < 0:
        return text
    return f"{text[: colon + 1]}{MASK}{text[at:]}"


def parse_url(url: str | QueueURL) -> QueueURL:
    """Split ``url`` into a :class:`QueueURL`; :class:`~queuekit.InvalidURL` if it is not one."""
    if isinstance(url, QueueURL):
        return url
    if not isinstance(url, str):
        raise InvalidURL(f"a queue URL is a str, not {type(url).__name__}")
    shown = _mask(url)
    scheme, sep, _ = url.partition("://")
    if not sep or not _SCHEME.match(scheme):
        raise InvalidURL(
            f"{shown!r} is not a queue URL: expected SCHEME://..., for example memory:// or "
            "mp:// (see docs/urls.md)"
        )
    if any(ch.isspace() or ord(ch) < 32 or 0xD800 <= ord(ch) < 0xE000 for ch in url):
        raise InvalidURL(
            f"{shown!r}: a queue URL may not contain spaces, control characters or invalid Unicode"
        )
    try:
        parts = urlsplit(url)
        password = parts.password
        username = parts.username
    except ValueError as exc:
        raise InvalidURL(f"{shown!r} is not a valid URL: {exc}") from None
    if parts.fragment or url.endswith("#"):
        raise InvalidURL(f"{shown!r}: a queue URL has no #fragment; remove it")
    if "@" in parts.path:
        # Most often a password with an unencoded '/', which would otherwise end up, in clear,
        # in the path of a URL that shows no password at all.
        raise InvalidURL(
            f"{shown!r}: '@' after the first '/': if a password or name holds '/', '?', '#' or "
            "'@', percent-encode them (%2F, %3F, %23, %40)"
        )
    query: dict[str, str] = {}
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise InvalidURL(f"{shown!r}: the query must be NAME=VALUE pairs joined by '&'") from None
    for key, value in pairs:
        if key in query:
            raise InvalidURL(f"{shown!r}: parameter {key!r} is given twice; give it once")
        query[key] = value
    location = parts.netloc.rpartition("@")[2]
    return QueueURL(
        scheme=parts.scheme.lower(),
        location=location,
        path=parts.path,
        username=unquote(username) if username is not None else None,
        password=unquote(password) if password is not None else None,
        query=query,
    )


# --- Parameter values -------------------------------------------------------------------
# A converter takes a value as written in a URL (str) or passed as a keyword (already typed)
# and returns the typed value, raising ValueError or TypeError with the accepted form.


def as_int(value: object) -> int:
    if isinstance(value, bool):
        raise TypeError("expected a whole number, not a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    raise ValueError("expected a whole number, like 100")


def as_float(value: object) -> float:
    if isinstance(value, bool):
        raise TypeError("expected a number, not a bool")
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value)
        except ValueError:
            raise ValueError("expected a number, like 0.5") from None
    else:
        raise TypeError(f"expected a number, not {type(value).__name__}")
    if result != result or result in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number")
    return result


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ValueError("expected true or false (also 1/0, yes/no, on/off)")


_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip
_SIZE = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*")


def as_size(value: object) -> int:
    """A byte count: ``65536``, ``64KiB``, ``1MiB``, ``2GiB`` (or ``kB``/``MB``/``GB``, powers of
    1000)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match and match.group(2).lower() in _UNITS:
            return int(match.group(1)) * _UNITS[match.group(2).lower()]
    raise ValueError("expected a size in bytes, like 65536, 64KiB or 1MiB")


def as_serializer(value: object) -> Serializer:
    try:
        return get_serializer(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(
            f"expected one of {', '.join(serializer_names())}, or an object with dumps/loads"
        ) from None


@dataclass(frozen=True)
class Param:
    """One parameter a backend accepts, in its URL query or as a keyword option."""

    name: str
    convert: Callable[[object], Any]
    default: Any
    help: str = ""


def bind_params(
    url: QueueURL, params: Mapping[str, Param] | list[Param], options: Mapping[str, object]
) -> dict[str, Any]:
    """The typed value of every declared parameter: default, then query, then keyword.

    Raises :class:`~queuekit.InvalidURL` naming an undeclared parameter (and listing the
    declared ones) or a value that does not convert (with the accepted form).
    """
    declared = {p.name: p for p in params} if isinstance(params, list) else dict(params)
    accepted = ", ".join(sorted(declared)) or "none"
    for source, names in (("URL parameter", url.query), ("option", options)):
        for name in names:
            if name not in declared:
                raise InvalidURL(
                    f"{url}: unknown {source} {name!r} for {url.scheme}://; accepted: {accepted}"
                )
    values: dict[str, Any] = {}
    for name, param in declared.items():
        raw: object
        if name in options:
            raw = options[name]
        elif name in url.query:
            raw = url.query[name]
        else:
            values[name] = param.default
            continue
        try:
            values[name] = param.convert(raw)
        except (TypeError, ValueError) as exc:
            shown = MASK if name in ("password", "authkey") else repr(raw)
            raise InvalidURL(f"{url}: bad value {shown} for {name!r}: {exc}") from None
    return values

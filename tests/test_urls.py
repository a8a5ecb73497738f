"""The URL grammar: parsing, declared parameters, value forms, and passwords kept out of sight."""

from __future__ import annotations

import contextlib
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import queuekit
from queuekit import (
    InvalidURL,
    JsonSerializer,
    Param,
    QueueURL,
    UnknownBackend,
    as_bool,
    as_float,
    as_int,
    as_size,
    bind_params,
    parse_url,
)
from queuekit.testing._profiles import CI_PROFILE

PASSWORD = "Zq7-pw-never-shown"


@pytest.mark.parametrize(
    ("url", "scheme", "location", "path", "username", "password", "query"),
    [
        ("memory://", "memory", "", "", None, None, {}),
        ("memory://jobs", "memory", "jobs", "", None, None, {}),
        ("MEMORY://jobs", "memory", "jobs", "", None, None, {}),
        ("mp://?maxsize=10", "mp", "", "", None, None, {"maxsize": "10"}),
        (
            "redis://app:pw@db.internal:6379/0?a=1&b=two",
            "redis",
            "db.internal:6379",
            "/0",
            "app",
            "pw",
            {"a": "1", "b": "two"},
        ),
        ("redis://:pw@h", "redis", "h", "", "", "pw", {}),
        ("redis://u:p%40ss%2Fw@h", "redis", "h", "", "u", "p@ss/w", {}),
        ("x+y.z-w://name/a/b?k=%20v", "x+y.z-w", "name", "/a/b", None, None, {"k": " v"}),
        ("mp://?serializer=", "mp", "", "", None, None, {"serializer": ""}),
    ],
)
def test_parse_url(
    url: str,
    scheme: str,
    location: str,
    path: str,
    username: str | None,
    password: str | None,
    query: dict[str, str],
) -> None:
    parsed = parse_url(url)
    assert (parsed.scheme, parsed.location, parsed.path) == (scheme, location, path)
    assert (parsed.username, parsed.password) == (username, password)
    assert dict(parsed.query) == query
    assert parse_url(parsed) is parsed


def test_host_and_port() -> None:
    parsed = parse_url("redis://h.example:6380/1")
    assert (parsed.hostname, parsed.port) == ("h.example", 6380)
    assert parse_url("redis://[::1]:7000").hostname == "::1"
    with pytest.raises(InvalidURL, match="port"):
        _ = parse_url("redis://h:99999").port


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("memory", "SCHEME://"),
        ("memory:/x", "SCHEME://"),
        ("1mem://", "SCHEME://"),
        ("://x", "SCHEME://"),
        ("memory://a b", "spaces"),
        ("memory://a\tb", "spaces"),
        ("memory://a\x00", "control"),
        ("memory://?maxsize=\udcff", "Unicode"),
        ("redis://[::1", "not a valid URL"),
        ("memory://?maxsize", "NAME=VALUE"),
        ("memory://?a=1&&b=2", "NAME=VALUE"),
        ("memory://?a=1&a=2", "given twice"),
        ("memory://jobs#frag", "fragment"),
        ("memory://jobs#", "fragment"),
    ],
)
def test_malformed_urls(url: str, complaint: str) -> None:
    with pytest.raises(InvalidURL, match=complaint):
        parse_url(url)


def test_not_a_string() -> None:
    with pytest.raises(InvalidURL, match="str, not bytes"):
        parse_url(b"memory://")  # type: ignore[arg-type]


def test_repeated_parameter_is_named() -> None:
    with pytest.raises(InvalidURL, match="'maxsize' is given twice"):
        queuekit.open("memory://?maxsize=1&maxsize=2")


def test_undeclared_parameter_is_named_with_the_accepted_ones() -> None:
    with pytest.raises(InvalidURL) as info:
        queuekit.open("memory://?bogus=1")
    message = str(info.value)
    assert "'bogus'" in message
    assert "accepted: maxsize, serializer" in message


def test_undeclared_keyword_option_is_refused() -> None:
    with pytest.raises(InvalidURL, match=r"unknown option 'colour'.*accepted: maxsize"):
        queuekit.open("memory://", colour="blue")


@pytest.mark.parametrize("url", ["memory://?maxsize=ten", "memory://?maxsize=1.5"])
def test_bad_value_names_the_parameter_and_the_form(url: str) -> None:
    with pytest.raises(InvalidURL, match="for 'maxsize': expected a whole number"):
        queuekit.open(url)


def test_bad_serializer_lists_the_choices() -> None:
    with pytest.raises(InvalidURL, match=r"'serializer'.*json, pickle, raw"):
        queuekit.open("memory://?serializer=yaml")


def test_keyword_options_override_the_query() -> None:
    with queuekit.open("memory://?maxsize=3", maxsize=7) as q:
        assert q.maxsize == 7
    with queuekit.open("memory://?maxsize=3") as q:
        assert q.maxsize == 3
    # The override wins even where the query's own value would be refused.
    with queuekit.open("memory://?maxsize=junk", maxsize=2) as q:
        assert q.maxsize == 2


def test_keyword_options_take_typed_values_and_text() -> None:
    serializer = JsonSerializer()
    with queuekit.open("memory://", maxsize="4", serializer=serializer) as q:
        assert q.maxsize == 4
        assert q.capabilities.serializes
        q.put((1, 2))
        assert q.get() == [1, 2]  # JSON turns the tuple into a list: it was serialized


# --- Value forms ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("65536", 65536),
        ("64KiB", 65536),
        ("64kib", 65536),
        ("1MiB", 1024**2),
        ("1MB", 1000**2),
        ("1kB", 1000),
        ("2GiB", 2 * 1024**3),
        ("512B", 512),
        ("0", 0),
        (4096, 4096),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    assert as_size(text) == size


@pytest.mark.parametrize("text", ["1.5MiB", "64 KiBs", "MiB", "-1", "1TiB", "", "1e6", -5, 2.0])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ValueError, match="size"):
        as_size(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[("true", True), ("TRUE", True), ("1", True), ("yes", True), ("On", True)],
        *[("false", False), ("0", False), ("no", False), ("OFF", False), (False, False)],
    ],
)
def test_bools(text: object, value: bool) -> None:
    assert as_bool(text) is value


@pytest.mark.parametrize("text", ["", "2", "y", "truthy", 1, None])
def test_bad_bools(text: object) -> None:
    with pytest.raises(ValueError, match="true or false"):
        as_bool(text)


def test_ints_and_floats() -> None:
    assert [as_int("100"), as_int("-1"), as_int("+5"), as_int(7)] == [100, -1, 5, 7]
    assert [as_float("0.5"), as_float("1e-3"), as_float(2)] == [0.5, 0.001, 2.0]
    for bad in ("1.0", "x", "", "1_000"):
        with pytest.raises(ValueError, match="whole number"):
            as_int(bad)
    with pytest.raises(TypeError, match="bool"):
        as_int(True)
    for bad_float in ("nan", "inf", "-inf", "half"):
        with pytest.raises(ValueError, match="number"):
            as_float(bad_float)


def test_bind_params_defaults_query_then_options() -> None:
    params = [Param("size", as_size, 1024), Param("fast", as_bool, False), Param("n", as_int, 1)]
    url = parse_url("x://?size=2KiB&fast=yes")
    assert bind_params(url, params, {"n": 3}) == {"size": 2048, "fast": True, "n": 3}
    assert bind_params(url, params, {"size": 5}) == {"size": 5, "fast": True, "n": 1}
    with pytest.raises(InvalidURL, match="unknown option 'm' for x://; accepted: fast, n, size"):
        bind_params(url, params, {"m": 1})
    with pytest.raises(InvalidURL, match="unknown URL parameter 'q' for x://; accepted: none"):
        bind_params(parse_url("x://?q=1"), [], {})


# --- Passwords --------------------------------------------------------------------------


def _assert_hidden(text: str) -> None:
    assert PASSWORD not in text, f"the password leaked into: {text}"


def test_password_hidden_in_repr_and_str() -> None:
    url = f"redis://app:{PASSWORD}@h:6379/0?timeout=1"
    parsed = parse_url(url)
    assert parsed.password == PASSWORD
    for shown in (repr(parsed), str(parsed), parsed.redacted(), f"{parsed}", f"{parsed!r}"):
        _assert_hidden(shown)
        assert "app:***@h:6379/0" in shown


@pytest.mark.parametrize(
    "url",
    [
        f"redis://u:{PASSWORD}@h#frag",
        f"redis://u:{PASSWORD}@[::1",
        f"redis://u:{PASSWORD}@h?a=1&a=2",
        f"redis://u:{PASSWORD}@h?flag",
        f"redis://u:{PASSWORD}@h x",
        f"redis://u:{PASSWORD}@h/\x01",
        f"redis://:{PASSWORD}@h#f",
        # Unencoded special characters in the password, the usual reason a URL fails to parse.
        f"redis://u:{PASSWORD}#x@h",
        f"redis://u:{PASSWORD}/x@h#f",
        f"redis://u:{PASSWORD}/x@h/0",
        f"redis://:{PASSWORD}/x@h",
        f"redis://u:{PASSWORD}?x@h#f",
        f"redis://u:a@{PASSWORD}@h#f",
        f"redis://u:{PASSWORD} x@h",
        f"redis://u:{PASSWORD}\nx@h",
    ],
)
def test_password_hidden_in_errors_for_malformed_urls(url: str) -> None:
    with pytest.raises(InvalidURL) as info:
        parse_url(url)
    _assert_hidden(str(info.value))
    _assert_hidden(repr(info.value))


@pytest.mark.parametrize(
    ("url", "options"),
    [
        (f"memory://u:{PASSWORD}@jobs", {}),
        (f"memory://u:{PASSWORD}@?bogus=1", {}),
        (f"nosuch://u:{PASSWORD}@h", {}),
        (f"reddis://u:{PASSWORD}@h", {}),
        (f"redis://u:{PASSWORD}@h:99999", {}),
    ],
)
def test_password_hidden_in_open_errors(url: str, options: dict[str, object]) -> None:
    # QueueError: once redis:// is built in, a missing redis-py is BackendUnavailable instead.
    with pytest.raises(queuekit.QueueError) as info:
        queuekit.open(url, **options)
    _assert_hidden(str(info.value))
    _assert_hidden(repr(info.value))


def test_password_hidden_in_bind_params_errors() -> None:
    params = [Param("maxsize", as_int, 0), Param("password", as_int, 0)]
    url = parse_url(f"x://u:{PASSWORD}@h?maxsize=ten")
    with pytest.raises(InvalidURL, match="'maxsize'") as info:
        bind_params(url, params, {})
    _assert_hidden(str(info.value))
    with pytest.raises(InvalidURL, match="unknown URL parameter 'other'") as info:
        bind_params(parse_url(f"x://u:{PASSWORD}@h?other=1"), params, {})
    _assert_hidden(str(info.value))
    # A bad value for a parameter that is itself a secret is not shown either.
    with pytest.raises(InvalidURL, match=r"\*\*\* for 'password'") as info:
        bind_params(parse_url("x://h"), params, {"password": PASSWORD})
    _assert_hidden(str(info.value))


# --- Schemes ----------------------------------------------------------------------------


def test_unknown_scheme_lists_registered_and_suggests_nearest() -> None:
    with pytest.raises(UnknownBackend) as info:
        queuekit.open("memroy://")
    message = str(info.value)
    assert "no queue backend for memroy://" in message
    assert "Did you mean memory://?" in message
    for scheme in queuekit.registered_schemes():
        assert f"{scheme}://" in message
    assert "register_backend" in message


def test_unknown_scheme_without_a_near_one_makes_no_suggestion() -> None:
    with pytest.raises(UnknownBackend) as info:
        queuekit.open("zzzzzz://")
    assert "Did you mean" not in str(info.value)


def test_misspelt_redis_suggests_redis_and_its_extra() -> None:
    with pytest.raises(UnknownBackend) as info:
        queuekit.open("reddis://localhost")
    message = str(info.value)
    assert "Did you mean redis://?" in message
    assert "pip install 'queuekit[redis]'" in message


def test_unknown_backend_is_an_invalid_url() -> None:
    with pytest.raises(InvalidURL):
        queuekit.open("nosuch://")


# --- Anything in, only InvalidURL or a queue out ----------------------------------------

_URL_CHARS = string.ascii_letters + string.digits + ":/?#[]@!$&'()*+,;=%-._~ \t\x00é"
_text = st.text(alphabet=_URL_CHARS, max_size=12)
# Half plausible, half noise: enough URLs open that the success path is exercised too.
_values = st.sampled_from(["", "0", "3", "-1", "json", "pickle", "raw", "none", "yes"]) | _text
_query = st.dictionaries(
    st.sampled_from(["maxsize", "serializer", "bogus", ""]), _values, max_size=2
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs.items()))
_structured = st.builds(
    lambda scheme, userinfo, location, query: (
        f"{scheme}://{userinfo}{location}" + (f"?{query}" if query else "")
    ),
    st.sampled_from(["memory", "memory", "mp", "mp", "MEMORY", "memroy", "reddis", "x"]),
    st.sampled_from(["", "", "", "u@", f"u:{PASSWORD}@", ":@"]),
    st.sampled_from(["", "jobs"]) | _text,
    _query,
)
_plausible = st.builds(
    lambda scheme, options: f"{scheme}://?" + "&".join(f"{k}={v}" for k, v in options.items()),
    st.sampled_from(["memory", "mp"]),
    st.fixed_dictionaries(
        {},
        optional={
            "maxsize": st.sampled_from(["0", "3", "-1", "+2", "x"]),
            "serializer": st.sampled_from(["json", "pickle", "raw", "none", ""]),
        },
    ),
)
_urls = st.one_of(
    _plausible, _structured, st.text(max_size=40), st.text(alphabet=_URL_CHARS, max_size=40)
)


@settings(settings.get_profile(CI_PROFILE), max_examples=200)
@given(url=_urls)
def test_open_yields_a_queue_or_invalid_url(url: str) -> None:
    try:
        q = queuekit.open(url)
    except InvalidURL as exc:
        _assert_hidden(str(exc))
        return
    with contextlib.closing(q):
        assert isinstance(q, queuekit.Queue)
        _assert_hidden(repr(q))


def test_queue_url_is_immutable() -> None:
    parsed = parse_url("memory://jobs")
    assert isinstance(parsed, QueueURL)
    with pytest.raises(AttributeError):
        parsed.scheme = "mp"  # type: ignore[misc]

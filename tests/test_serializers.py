"""Serializers: round trips, helpful SerializationErrors, and registering new ones."""

from __future__ import annotations

import datetime
import pickle
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import queuekit
from queuekit import (
    JsonSerializer,
    PickleSerializer,
    RawSerializer,
    SerializationError,
    Serializer,
    _serializers,
    get_serializer,
    register_serializer,
)
from queuekit.testing._profiles import CI_PROFILE

CI = settings.get_profile(CI_PROFILE)


@dataclass(frozen=True)
class Point:
    x: int
    y: int


@pytest.fixture(autouse=True)
def isolated_serializers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serializers registered by a test end with it (there is no unregister, by design)."""
    monkeypatch.setattr(_serializers, "_serializers", dict(_serializers._serializers))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(CI)
@given(item=json_values)
def test_json_round_trip(item: Any) -> None:
    s = JsonSerializer()
    assert s.loads(s.dumps(item)) == item


@settings(CI)
@given(
    item=json_values
    | st.binary()
    | st.tuples(st.integers(), st.text())
    | st.frozensets(st.integers())
)
def test_pickle_round_trip(item: Any) -> None:
    s = PickleSerializer()
    data = s.dumps(item)
    assert isinstance(data, bytes)
    assert s.loads(data) == item


@settings(CI)
@given(item=st.binary())
def test_raw_round_trip(item: bytes) -> None:
    s = RawSerializer()
    for given_as in (item, bytearray(item), memoryview(item)):
        data = s.dumps(given_as)
        assert type(data) is bytes
        assert s.loads(data) == item


def test_pickle_keeps_types_json_does_not() -> None:
    item = {"when": datetime.date(2024, 1, 2), "where": Point(1, 2), "pair": (1, 2)}
    assert PickleSerializer().loads(PickleSerializer().dumps(item)) == item
    assert JsonSerializer().loads(JsonSerializer().dumps({"pair": (1, 2), 3: "x"})) == {
        "pair": [1, 2],
        "3": "x",
    }


def test_pickle_uses_protocol_5() -> None:
    data = PickleSerializer().dumps([1])
    assert data[:2] == b"\x80\x05"
    assert PickleSerializer.protocol == 5 <= pickle.HIGHEST_PROTOCOL


@pytest.mark.parametrize(
    ("serializer", "item", "advice"),
    [
        (PickleSerializer(), lambda: None, r"cannot pickle 'function'.*choose another serializer="),
        (JsonSerializer(), {1, 2}, r"cannot encode 'set' as JSON.*serializer=pickle"),
        (JsonSerializer(), float("nan"), r"cannot encode 'float' as JSON"),
        (JsonSerializer(), b"bytes", r"cannot encode 'bytes' as JSON"),
        (RawSerializer(), "text", r"serializer=raw takes bytes.*not 'str'.*encode the item"),
        (RawSerializer(), 7, r"not 'int'"),
    ],
)
def test_dumps_errors_say_what_and_what_to_do(
    serializer: Serializer, item: object, advice: str
) -> None:
    with pytest.raises(SerializationError, match=advice) as info:
        serializer.dumps(item)
    assert isinstance(info.value, queuekit.QueueError)


@pytest.mark.parametrize(
    ("serializer", "data", "complaint"),
    [
        (PickleSerializer(), b"not a pickle", r"cannot unpickle a 12-byte message"),
        (PickleSerializer(), b"", r"cannot unpickle a 0-byte message"),
        (JsonSerializer(), b"{nope", r"a 5-byte message is not JSON"),
        (JsonSerializer(), b"\xff\xfe\xfa", r"is not JSON"),
    ],
)
def test_loads_errors_are_serialization_errors(
    serializer: Serializer, data: bytes, complaint: str
) -> None:
    with pytest.raises(SerializationError, match=complaint):
        serializer.loads(data)


def test_a_failed_put_leaves_the_queue_unchanged() -> None:
    with queuekit.open("memory://?serializer=json") as q:
        q.put("kept")
        with pytest.raises(SerializationError):
            q.put({"a": {1, 2}})
        with pytest.raises(SerializationError):
            q.put_many(["fine", object()])
        assert q.qsize() == 1
        assert q.get_many(10) == ["kept"]


def test_builtins_by_name() -> None:
    assert [type(get_serializer(n)) for n in ("pickle", "json", "raw")] == [
        PickleSerializer,
        JsonSerializer,
        RawSerializer,
    ]
    custom = JsonSerializer()
    assert get_serializer(custom) is custom
    assert _serializers.serializer_names() == ["json", "pickle", "raw"]


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown serializer 'yaml'; choose one of json, pickle, raw"
    ):
        get_serializer("yaml")
    with pytest.raises(TypeError, match="not int"):
        get_serializer(5)  # type: ignore[arg-type]


class Upper:
    """Text in, upper-cased text out: lossy on purpose, so a test can tell it was used."""

    name = "upper"

    def dumps(self, item: Any) -> bytes:
        return str(item).upper().encode()

    def loads(self, data: bytes) -> Any:
        return data.decode()


def test_register_makes_the_name_usable_in_urls() -> None:
    register_serializer(Upper())
    assert "upper" in _serializers.serializer_names()
    assert isinstance(get_serializer("upper"), Upper)
    with queuekit.open("memory://?serializer=upper") as q:
        q.put("shout")
        assert q.get() == "SHOUT"


def test_register_refuses_a_taken_name_unless_replace() -> None:
    register_serializer(Upper())
    with pytest.raises(ValueError, match="'upper' is registered already; pass replace=True"):
        register_serializer(Upper())
    with pytest.raises(ValueError, match="'json' is registered already"):
        register_serializer(type("Fake", (Upper,), {"name": "json"})())
    replacement = Upper()
    register_serializer(replacement, replace=True)
    assert get_serializer("upper") is replacement


def test_register_refuses_what_is_not_a_serializer() -> None:
    class NoLoads:
        name = "half"

        def dumps(self, item: Any) -> bytes:
            return b""

    with pytest.raises(TypeError, match="'dumps'/'loads'"):
        register_serializer(NoLoads())  # type: ignore[arg-type]
    assert "half" not in _serializers.serializer_names()


@pytest.mark.parametrize(
    "item",
    [b"b" * (1 << 20), bytearray(b"a" * (1 << 17)), "s" * (1 << 17), b"x" * (64 * 1024 + 1)],
    ids=["bytes-1MiB", "bytearray-128KiB", "str-128KiB", "bytes-just-past-64KiB"],
)
def test_pickle_of_a_large_flat_item_is_the_same_pickle(item: Any) -> None:
    # Large bytes and str take a faster path; it must produce exactly what pickle.dumps does.
    data = PickleSerializer().dumps(item)
    assert data == pickle.dumps(item, protocol=5)
    assert PickleSerializer().loads(data) == item

"""redis:// in bad moments: killed producers and consumers, a stalled or killed server, and
bytes in the list that queuekit did not put there.

30 kills in CI, 200 with ``QUEUEKIT_HYPOTHESIS_PROFILE=queuekit-heavy``. Unlike the local
backends, nothing whose put returned may be lost: what a killed consumer held comes back
after its visibility timeout, so the only duplicates are those redeliveries.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _killing import MAX_GET, kill_loop
from hypothesis import example, given
from hypothesis import strategies as st
from redis_server import RedisServer
from refusing import BAD, Refusing

import queuekit
from queuekit import AuthenticationError, BackendUnavailable, CorruptMessage, Empty, Full
from queuekit.backends._redis_scripts import SENTINEL

HEAVY = os.environ.get("QUEUEKIT_HYPOTHESIS_PROFILE") == "queuekit-heavy"
KILLS = 200 if HEAVY else 30
LONG = 20.0
MAGIC = b"qk\x01"
AUTHKEY = "a-key-of-at-least-16-bytes"


def client(url: str) -> Any:
    return importlib.import_module("redis").Redis.from_url(url)


@pytest.fixture
def key() -> str:
    return f"faults-{secrets.token_hex(6)}"


# --- SIGKILLed producers and consumers ------------------------------------------------------


class _UnfinishedAsSize:
    """The handle, except that ``qsize()`` is the unfinished count: kill_loop shuts the queue
    down once qsize() is 0, and here that must wait for what killed consumers held too."""

    def __init__(self, q: Any) -> None:
        self._q = q

    def __getattr__(self, name: str) -> Any:
        return getattr(self._q, name)

    def qsize(self) -> int:
        unfinished: int = self._q.info()["unfinished"]
        return unfinished


# The workers fork while the parent's handle exists; the parent itself runs no thread of its own.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_kills_lose_nothing_whose_put_returned(redis_url: str, key: str) -> None:
    url = f"{redis_url}?key={key}&maxsize=64&visibility_timeout=2"
    with queuekit.open(url) as q:
        out = kill_loop(_UnfinishedAsSize(q), KILLS)
        info = q.info()
    report = (
        f"kills={out.kills} got={len(out.got)} promised={len(out.promised)} "
        f"missing={len(out.missing)} duplicates={out.duplicates} late={len(out.late)}"
    )
    print(report)  # the figures docs/reliability.md quotes (pytest -s shows them)
    assert sum(out.kills.values()) >= KILLS, out.kills
    assert min(out.kills.values()) > 0, f"not both kinds were killed: {out.kills}"
    assert out.got, "nothing was got; the test proved nothing"
    assert not out.torn, f"{len(out.torn)} items came out changed, e.g. {out.torn[0]}"
    assert not out.late, f"calls overran their timeouts: {out.late[:3]}"
    assert not out.errors, f"calls failed: {out.errors[:3]}"
    assert not out.missing, f"{len(out.missing)} items whose put returned were lost ({report})"
    assert out.duplicates <= out.kills["consumer"] * MAX_GET, report
    assert out.left_in_queue == 0, info
    assert info["unfinished"] == 0, info


# --- The server stalls or dies --------------------------------------------------------------


@pytest.fixture
def aof_server(redis_server: RedisServer | None) -> Iterator[RedisServer]:
    if redis_server is None:
        pytest.skip("needs a redis-server of its own to stop and kill")
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always")
    server.start()
    yield server
    server.close()


class _Calls:
    """Threads calling the queue with a timeout, in a loop; each call's overrun recorded."""

    TIMEOUT = 1.0

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.overruns: list[float] = [0.0]
        self.worst: dict[str, float] = {}
        self.outcomes: dict[str, int] = {}
        self.unexpected: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def loop(self, call: Callable[[float], Any]) -> None:
        def run() -> None:
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    call(self.TIMEOUT)
                    outcome = "returned"
                except (Empty, Full, queuekit.JoinTimeout, BackendUnavailable) as exc:
                    outcome = type(exc).__name__
                except BaseException as exc:  # recorded, and the test fails on it
                    self.unexpected.append(exc)
                    return
                with self.lock:
                    over = time.monotonic() - start - self.TIMEOUT
                    self.overruns.append(over)
                    self.worst[outcome] = max(over, self.worst.get(outcome, over))
                    self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(LONG)
        assert not any(t.is_alive() for t in self.threads), "a call never returned"


def _blocked_calls(url: str, calls: _Calls) -> list[Any]:
    """A getter on an empty queue, a putter on a full one, a joiner: all blocked."""
    empty, full = queuekit.open(f"{url}-empty"), queuekit.open(f"{url}-full&maxsize=1")
    full.put("filler")
    calls.loop(lambda t: empty.get(timeout=t))
    calls.loop(lambda t: empty.get_many(5, timeout=t))
    calls.loop(lambda t: full.put("more", timeout=t))
    calls.loop(lambda t: full.join(timeout=t))
    return [empty, full]


@pytest.mark.parametrize("stall", [3.0])
def test_a_stalled_server_holds_no_call_past_its_timeout(
    aof_server: RedisServer, key: str, stall: float
) -> None:
    assert aof_server.process is not None
    calls = _Calls()
    handles = _blocked_calls(f"{aof_server.url}?key={key}", calls)
    time.sleep(0.5)
    aof_server.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(stall)
    finally:
        aof_server.process.send_signal(signal.SIGCONT)
    time.sleep(2 * calls.TIMEOUT + 1)
    calls.finish()
    worst = max(calls.overruns)
    print(
        f"stall of {stall:g}s: worst overrun {worst:.2f}s, outcomes {calls.outcomes}, {calls.worst}"
    )
    assert not calls.unexpected, calls.unexpected
    assert worst < 2.0, f"a call overran its timeout by {worst:.2f}s ({calls.outcomes})"
    # The handles work again, on their own.
    handles[0].put("after")
    assert handles[0].get(timeout=LONG) == "after"
    for h in handles:
        h.close()


def test_a_killed_server_holds_no_call_past_its_timeout(aof_server: RedisServer, key: str) -> None:
    calls = _Calls()
    url = f"{aof_server.url}?key={key}"
    handles = _blocked_calls(url, calls)
    with queuekit.open(url) as q:
        acknowledged = []
        for n in range(50):
            q.put(n)
            acknowledged.append(n)
        time.sleep(0.5)
        aof_server.kill()
        time.sleep(2.0)
        aof_server.start()
        time.sleep(2 * calls.TIMEOUT + 1)
        calls.finish()
        worst = max(calls.overruns)
        print(
            f"server killed for 2s: worst overrun {worst:.2f}s, "
            f"outcomes {calls.outcomes}, worst by outcome {calls.worst}"
        )
        assert not calls.unexpected, calls.unexpected
        assert worst < 2.0, f"a call overran its timeout by {worst:.2f}s ({calls.outcomes})"
        assert q.get_many(100, timeout=LONG) == acknowledged  # the AOF kept every one
        for _ in acknowledged:
            q.task_done()
        q.join(timeout=LONG)
    for h in handles:
        h.close()


# --- Bytes that queuekit did not put ----------------------------------------------------------


def _envelope(payload: bytes) -> bytes:
    return MAGIC + secrets.token_bytes(16) + b"\x01" + payload


GARBAGE = {
    "not an envelope": b"hello from another program",
    "a truncated envelope": MAGIC + b"\x00" * 5,
    "a payload that does not unpickle": _envelope(b"\x80\x05not a pickle"),
}


def test_foreign_bytes_are_dead_lettered_and_the_next_good_item_served(
    redis_url: str, key: str
) -> None:
    url = f"{redis_url}?key={key}"
    r = client(redis_url)
    with queuekit.open(url) as q:
        q.put("first")
        for raw in GARBAGE.values():
            r.lpush("{" + key + "}", raw)
        q.put("last")
        assert q.get(timeout=LONG) == "first"
        for what, raw in GARBAGE.items():
            with pytest.raises(CorruptMessage, match="dead-letter list") as caught:
                q.get(timeout=LONG)
            assert caught.value.data == raw, what
            assert not isinstance(caught.value, AuthenticationError), what
        assert q.get(timeout=LONG) == "last"
        info = q.info()
        assert info["dead_letters"] == len(GARBAGE)
        assert r.lrange("{" + key + "}:dead", 0, -1) == list(GARBAGE.values())[::-1]
        # Nothing held for the bad ones: two acknowledgements finish every task.
        assert [c["in_flight"] for c in info["consumers"].values()] == [2]
        q.task_done()
        q.task_done()
        q.join(timeout=LONG)
        assert q.info()["unfinished"] == 0
        with pytest.raises(ValueError, match="more times"):
            q.task_done()


def test_a_message_without_the_authkey_is_dead_lettered(redis_url: str, key: str) -> None:
    url = f"{redis_url}?key={key}"
    with queuekit.open(url) as plain, queuekit.open(url, authkey=AUTHKEY) as keyed:
        plain.put("unsigned")  # counted as unfinished, like any put
        keyed.put("signed")
        with pytest.raises(AuthenticationError, match="HMAC") as caught:
            keyed.get(timeout=LONG)
        assert caught.value.data is not None
        assert caught.value.data.startswith(MAGIC)
        assert keyed.get(timeout=LONG) == "signed"
        keyed.task_done()
        keyed.join(timeout=LONG)  # the dead-lettered message is not left unfinished
        assert keyed.info()["dead_letters"] == 1


def test_a_message_from_other_code_is_dead_lettered(redis_url: str, key: str) -> None:
    # What a producer running other code puts: an envelope whose pickle names a class the
    # consumer cannot import. It was counted as unfinished; foreign bytes beside it were not.
    url = f"{redis_url}?key={key}"
    r = client(redis_url)
    payload = b"c__nowhere__\nThing\n)R."  # GLOBAL __nowhere__.Thing, called with ()
    with queuekit.open(url) as q:
        q.put("x")
        r.lpush("{" + key + "}", b"foreign")
        r.lpush("{" + key + "}", _envelope(payload))
        r.hincrby("{" + key + "}:meta", "unfinished", 1)  # as a queuekit put would have
        q.put("good")
        assert q.get(timeout=LONG) == "x"
        q.task_done()
        for _ in range(2):
            with pytest.raises(CorruptMessage):
                q.get(timeout=LONG)
        assert q.get(timeout=LONG) == "good"
        q.task_done()
        q.join(timeout=LONG)


# get_many takes small batches by a script, and 64 or more into a list of their own.
BATCHES = pytest.mark.parametrize("many", [10, 100])


@BATCHES
def test_get_many_stops_before_a_bad_message(redis_url: str, key: str, many: int) -> None:
    # As gets that stop before the first that would raise: the good items before it are
    # returned; it and the rest wait at the front of the queue for the next get.
    url = f"{redis_url}?key={key}"
    r = client(redis_url)
    with queuekit.open(url) as q:
        q.put("a")
        r.lpush("{" + key + "}", b"junk")
        q.put_many(["b", "c"])
        assert q.get_many(many, timeout=LONG) == ["a"]
        assert q.qsize() == 3
        assert [c["in_flight"] for c in q.info()["consumers"].values()] == [1]
        assert q.info()["dead_letters"] == 0
        with pytest.raises(CorruptMessage, match="dead-letter list") as caught:
            q.get(timeout=LONG)
        assert caught.value.data == b"junk"
        assert q.qsize() == 2
        first = q.get_message(timeout=LONG)  # type: ignore[attr-defined]
        assert (first.item, first.deliveries) == ("b", 1)  # given back, not redelivered
        assert q.get_many(many, timeout=LONG) == ["c"]
        for _ in range(3):
            q.task_done()
        q.join(timeout=LONG)
        assert q.info()["dead_letters"] == 1
        with pytest.raises(ValueError, match="more times"):
            q.task_done()


@BATCHES
def test_get_many_meeting_a_bad_message_first_raises_and_gives_the_rest_back(
    redis_url: str, key: str, many: int
) -> None:
    url = f"{redis_url}?key={key}"
    r = client(redis_url)
    with queuekit.open(url) as q:
        r.lpush("{" + key + "}", b"junk")
        q.put_many(["b", "c"])
        with pytest.raises(CorruptMessage, match="2 messages this get_many took after it") as e:
            q.get_many(many, timeout=LONG)
        assert e.value.data == b"junk"
        assert q.qsize() == 2
        assert [c["in_flight"] for c in q.info()["consumers"].values()] == [0]
        first = q.get_message(timeout=LONG)  # type: ignore[attr-defined]
        assert (first.item, first.deliveries) == ("b", 1)
        assert q.get_many(many, timeout=LONG) == ["c"]
        q.task_done()
        q.task_done()
        q.join(timeout=LONG)
        assert q.info()["dead_letters"] == 1


@BATCHES
def test_a_bad_message_put_by_queuekit_counts_as_done(redis_url: str, key: str, many: int) -> None:
    # The rule for every backend, on redis://: [0, 1, BAD, 3, 4] and [BAD] alone.
    url = f"{redis_url}?key={key}"
    with queuekit.open(url, serializer=Refusing()) as q:
        q.put_many([0, 1, BAD, 3, 4])
        assert q.get_many(many, timeout=LONG) == [0, 1]
        with pytest.raises(CorruptMessage, match="refused"):
            q.get(timeout=LONG)
        assert q.get_many(many, timeout=LONG) == [3, 4]
        for _ in range(4):
            q.task_done()
        q.join(timeout=LONG)
        assert q.qsize() == 0
        q.put(BAD)
        with pytest.raises(CorruptMessage, match="refused"):
            q.get_many(many, timeout=LONG)
        q.join(timeout=LONG)  # at once: nothing to call task_done() for
        assert q.info()["unfinished"] == 0


def _get_or_error(q: Any) -> Any:
    try:
        return q.get(timeout=LONG)
    except CorruptMessage as exc:
        return exc


_BYTES = st.one_of(
    st.binary(max_size=80),
    st.binary(max_size=60).map(lambda payload: MAGIC + bytes(17) + payload),
)


@given(raw=_BYTES)
@example(raw=SENTINEL)  # the bytes that mark a queue shut down, in one that is not
def test_any_foreign_value_is_an_item_or_a_corrupt_message(redis_url: str, raw: bytes) -> None:
    # json, so that no generated bytes are ever unpickled.
    key = f"faults-{secrets.token_hex(6)}"
    with queuekit.open(f"{redis_url}?key={key}&serializer=json") as q:
        client(redis_url).lpush("{" + key + "}", raw)
        q.put("next")
        got = _get_or_error(q)
        if isinstance(got, CorruptMessage):
            assert got.data == raw
            assert q.info()["dead_letters"] == 1
        else:  # it looked like an envelope, and its payload is JSON
            assert raw.startswith(MAGIC)
            assert got == json.loads(raw[len(MAGIC) + 17 :])
        assert q.get(timeout=LONG) == "next"
        q.task_done()
        q.join(timeout=LONG)
        assert q.info()["unfinished"] == 0

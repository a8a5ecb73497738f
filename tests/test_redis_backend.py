"""What is particular to redis://; the contract itself is the conformance suite's business.

The backend's module is imported inside the tests, never at the top: Hypothesis draws
constants from the modules loaded while tests are collected (see tests/test_shm_backend.py).
"""

from __future__ import annotations

import importlib
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis_server import RedisServer, free_port, make_certificates

import queuekit
from queuekit import BackendUnavailable, Empty, InvalidURL, QueueClosed
from queuekit.testing._suite import QueueConformance

LONG = 20.0
"""Seconds after which a child or a call is taken to hang (the machine is shared and slow)."""
SECRET = "s3cret-Pa55"


def client(url: str) -> Any:
    redis = importlib.import_module("redis")
    return redis.Redis.from_url(url)


@pytest.fixture
def key() -> str:
    return f"test-{secrets.token_hex(6)}"


@pytest.fixture
def url(redis_url: str, key: str) -> str:
    return f"{redis_url}?key={key}"


class TestRedisConformance(QueueConformance):
    """The whole suite; every open without key= is a fresh private queue."""

    @pytest.fixture
    def queue_url(self, redis_url: str) -> str:
        return redis_url


# --- URLs, parameters, errors ------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("bogus=1", "unknown URL parameter 'bogus'"),
        ("socket_timeout=soon", "bad value 'soon' for 'socket_timeout'"),
        ("visibility_timeout=0.1", "at least 0.5"),
        ("socket_timeout=0", "above 0"),
        ("ssl_cert_reqs=required", "need TLS: use rediss://"),
        ("key=a{b}", "bad key"),
        ("key=", None),
        ("db=3", "database 0 in the path but db=3"),
    ],
)
def test_bad_parameters_are_invalid_urls(redis_url: str, query: str, message: str | None) -> None:
    if message is None:
        queuekit.open(f"{redis_url}?{query}").close()  # an empty key: a private queue
        return
    with pytest.raises(InvalidURL, match=message.replace("{", r"\{").replace("}", r"\}")):
        queuekit.open(f"{redis_url}?{query}")


def test_redis_py_parameters_pass_through(redis_url: str, key: str) -> None:
    with queuekit.open(
        f"{redis_url}?key={key}&client_name=qk-{key}&socket_connect_timeout=3&"
        "health_check_interval=5&socket_keepalive=yes"
    ) as q:
        q.put(1)
        names = [c["name"] for c in client(redis_url).client_list()]
        assert f"qk-{key}" in names
        assert q.get(timeout=LONG) == 1


def test_unknown_option_is_invalid_url_not_type_error(redis_url: str) -> None:
    with pytest.raises(InvalidURL, match="unknown option 'decode_responses'"):
        queuekit.open(redis_url, decode_responses=True)


@pytest.mark.parametrize("bad", ["redis://127.0.0.1:6379/x", "unix://host/sock", "unix://"])
def test_bad_locations(bad: str) -> None:
    with pytest.raises(InvalidURL):
        queuekit.open(bad)


def test_unix_socket(redis_server: RedisServer | None, key: str) -> None:
    if redis_server is None:
        pytest.skip("the server named by QUEUEKIT_REDIS_URL may have no socket here")
    with queuekit.open(f"unix://{redis_server.socket}?db=0&key={key}") as q:
        q.put("via the socket")
        with queuekit.open(f"{redis_server.url}?key={key}") as tcp:
            assert tcp.get(timeout=LONG) == "via the socket"


def test_maxsize_belongs_to_the_queue(url: str) -> None:
    with queuekit.open(url, maxsize=3) as q:
        with queuekit.open(url) as again:
            assert again.maxsize == 3
        with pytest.raises(InvalidURL, match="exists already with maxsize=3, not 4"):
            queuekit.open(url, maxsize=4)
        assert q.maxsize == 3


def test_a_key_holding_something_else(redis_url: str, key: str) -> None:
    client(redis_url).set("{" + key + "}", "not a list")
    with queuekit.open(f"{redis_url}?key={key}") as q, pytest.raises(InvalidURL, match="key="):
        q.put(1)


def test_unreachable_server_is_backend_unavailable_in_bounded_time() -> None:
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match="raise retry_window") as info:
        queuekit.open(f"redis://u:{SECRET}@127.0.0.1:{free_port()}/0?retry_window=0.5")
    assert time.monotonic() - start < 5
    assert SECRET not in str(info.value)


def test_key_password_only_as_an_option(redis_url: str) -> None:
    tls = redis_url.replace("redis://", "rediss://")
    with pytest.raises(InvalidURL, match="keyword option") as info:
        queuekit.open(f"{tls}?ssl_password={SECRET}")
    assert SECRET not in str(info.value)


def test_password_never_shown(redis_url: str, key: str, capsys: pytest.CaptureFixture[str]) -> None:
    admin = client(redis_url)
    user = f"qk-{key}"
    admin.acl_setuser(user, enabled=True, passwords=[f"+{SECRET}"], keys=["*"], commands=["+@all"])
    try:
        authed = redis_url.replace("redis://", f"redis://{user}:{SECRET}@") + f"?key={key}"
        with queuekit.open(authed) as q:
            q.put(1)
            assert SECRET not in repr(q)
            assert "***" in repr(q)
            assert SECRET not in repr(q.info())
            from queuekit._cli import main

            assert main(["info", authed]) == 0
            out = capsys.readouterr().out
            assert SECRET not in out
            assert "qsize: 1" in out
        wrong = authed.replace(SECRET, SECRET + "x")
        with pytest.raises(BackendUnavailable, match="refused") as info:
            queuekit.open(wrong)
        assert SECRET not in str(info.value)
    finally:
        admin.acl_deluser(user)


@pytest.fixture(scope="module")
def tls_server(
    redis_server: RedisServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RedisServer, dict[str, str]]]:
    if redis_server is None:
        pytest.skip("needs a redis-server of its own, with TLS")
    certs = make_certificates(str(tmp_path_factory.mktemp("tls")))
    port = free_port()
    server = RedisServer(
        "--appendonly", "no", "--port", "0", "--tls-port", str(port),
        "--tls-cert-file", certs["server.pem"], "--tls-key-file", certs["server.key"],
        "--tls-ca-cert-file", certs["ca.pem"], "--tls-auth-clients", "no",
        port=port, tls=True,
    )  # fmt: skip
    server.start()
    yield server, certs
    server.close()


def test_rediss_checks_the_certificate(
    tls_server: tuple[RedisServer, dict[str, str]], key: str
) -> None:
    server, certs = tls_server
    base = f"rediss://localhost:{server.port}/0?key={key}"
    with queuekit.open(f"{base}&ssl_ca_certs={certs['ca.pem']}") as q:
        q.put("over TLS")
        assert q.get(timeout=LONG) == "over TLS"
        q.task_done()  # or close() would give it back
    # The test CA is in no system store: refused, in bounded time, saying why.
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match="certificate was refused"):
        queuekit.open(base)  # not retried for the retry window: it would not change
    assert time.monotonic() - start < 4
    with queuekit.open(f"{base}&ssl_cert_reqs=none") as q:
        q.put("unchecked")
        assert q.get(timeout=LONG) == "unchecked"


def test_rediss_connects_at_the_first_try(
    tls_server: tuple[RedisServer, dict[str, str]], key: str
) -> None:
    # A TLS 1.3 server's session tickets come after the handshake; a new connection must not
    # be refused as holding unread data for them. retry_window=0: no second try to hide it.
    server, certs = tls_server
    url = f"rediss://localhost:{server.port}/0?key={key}&retry_window=0"
    url += f"&ssl_ca_certs={certs['ca.pem']}"
    for n in range(20):
        with queuekit.open(url) as q:
            q.put(n)
            assert q.get(timeout=LONG) == n
            q.task_done()


# --- Delivery, redelivery, batches -------------------------------------------------------


def _consumer_script(url: str) -> str:
    return textwrap.dedent(
        f"""
        import sys, time, queuekit
        q = queuekit.open({url!r})
        m = q.get_message(timeout={LONG})
        print(m.item, flush=True)
        time.sleep(600)
        """
    )


def test_killed_consumer_message_delivered_again_exactly_once(url: str) -> None:
    url += "&visibility_timeout=1"
    with queuekit.open(url) as q, queuekit.open(url) as other:
        q.put("job")
        child = subprocess.Popen(
            [sys.executable, "-c", _consumer_script(url)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "job"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(LONG)
        assert q.qsize() == 0
        # Two live consumers wait: both look for the dead one; the message comes back once.
        outcomes: dict[str, Any] = {}

        def consume(name: str, handle: Any) -> None:
            try:
                outcomes[name] = handle.get_message(timeout=5)  # > 1.5 visibility timeouts
            except Empty as exc:
                outcomes[name] = exc

        waiters = [
            threading.Thread(target=consume, args=(name, h))
            for name, h in (("q", q), ("other", other))
        ]
        for w in waiters:
            w.start()
        for w in waiters:
            w.join(LONG)
        got = {name: m for name, m in outcomes.items() if not isinstance(m, Empty)}
        assert len(outcomes) == 2
        assert len(got) == 1, f"delivered again {len(got)} times: {outcomes}"
        ((name, m),) = got.items()
        assert (m.item, m.deliveries, m.redelivered) == ("job", 2, True)
        {"q": q, "other": other}[name].task_done()
        q.join(timeout=LONG)  # the dead consumer's task did not leak
        info = q.info()
        assert info["unfinished"] == 0
        assert info["consumers_alive"] == 2


def test_close_gives_back_unacknowledged_messages(url: str) -> None:
    with queuekit.open(url) as q:
        q.put_many(["a", "b", "c"])
        taker = queuekit.open(url)
        assert taker.get_many(2) == ["a", "b"]
        taker.task_done()  # "a" is done; "b" is not
        taker.close()
        got = [q.get_message(timeout=LONG) for _ in range(2)]  # type: ignore[attr-defined]
        assert [(m.item, m.deliveries) for m in got] == [("b", 2), ("c", 1)]


def test_killed_consumer_batch_comes_back_without_what_it_acknowledged(url: str) -> None:
    # A get_many of 64 or more holds its batch in a list of its own on the server; a consumer
    # killed holding two of them, part acknowledged, gives back exactly the rest, once each.
    url += "&visibility_timeout=1"
    script = textwrap.dedent(
        f"""
        import time, queuekit
        q = queuekit.open({url!r})
        assert q.get_many(70, timeout={LONG}) == list(range(70))
        assert q.get_many(70, timeout={LONG}) == list(range(70, 140))
        for _ in range(5):
            q.task_done()
        print(q.info()["consumers"][q._cid]["in_flight"], flush=True)
        time.sleep(600)
        """
    )
    with queuekit.open(url) as q:
        q.put_many(range(150))
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "135"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(LONG)
        assert q.qsize() == 10
        got: list[int] = []
        while len(got) < 145:
            got += q.get_many(100, timeout=5)  # > 1.5 visibility timeouts
        assert sorted(got) == list(range(5, 150)), "lost or delivered twice"
        with pytest.raises(Empty):
            q.get(timeout=2.5)  # nothing comes back a second time
        for _ in got:
            q.task_done()
        q.join(timeout=LONG)
        info = q.info()
        assert (info["unfinished"], info["qsize"]) == (0, 0)
        assert list(info["consumers"].values()) == [{"alive": True, "in_flight": 0}]


def test_close_gives_back_a_batch_list_in_order(url: str) -> None:
    with queuekit.open(url) as q:
        q.put_many(range(100))
        taker = queuekit.open(url)
        assert taker.get_many(80) == list(range(80))  # 64 or more: a batch list
        for _ in range(10):
            taker.task_done()
        assert [c["in_flight"] for c in taker.info()["consumers"].values()] == [70]
        taker.close()
        got = [q.get_message(timeout=LONG) for _ in range(90)]  # type: ignore[attr-defined]
        assert [m.item for m in got] == list(range(10, 100))
        assert [m.deliveries for m in got] == [2] * 70 + [1] * 20
        for _ in got:
            q.task_done()
        q.join(timeout=LONG)
        assert q.unlink() is True


def test_a_blocked_big_get_many_waits_without_taking(url: str) -> None:
    # A get_many of 64 or more waits by moving a message from the front to the front, then
    # takes its batch whole; it wakes on a put, times out, and wakes on shutdown.
    with queuekit.open(url) as q:
        with pytest.raises(Empty):
            q.get_many(100, timeout=0.2)
        got: list[Any] = []
        getter = threading.Thread(target=lambda: got.append(_outcome(lambda: q.get_many(100))))
        getter.start()
        time.sleep(0.3)  # let it block (if it has not yet, it finds the items at once)
        q.put_many(range(5))
        getter.join(LONG)
        assert got == [list(range(5))]
        assert [c["in_flight"] for c in q.info()["consumers"].values()] == [5]
        getter = threading.Thread(target=lambda: got.append(_outcome(lambda: q.get_many(100))))
        getter.start()
        time.sleep(0.3)
        q.shutdown()
        getter.join(LONG)
        assert isinstance(got[1], queuekit.ShutDown)
        for _ in range(5):
            q.task_done()
        q.join(timeout=LONG)


def test_close_during_a_blocked_get_gives_its_message_back(url: str) -> None:
    with queuekit.open(url) as q:
        waiting = queuekit.open(url)
        outcome: list[BaseException | Any] = []
        getter = threading.Thread(target=lambda: outcome.append(_outcome(waiting.get)))
        getter.start()
        time.sleep(0.3)  # let it block (if it has not yet, close() makes it fail at once)
        waiting.close()
        q.put("late")
        getter.join(LONG)
        assert len(outcome) == 1
        assert isinstance(outcome[0], QueueClosed)
        m = q.get_message(timeout=LONG)  # type: ignore[attr-defined]
        assert m.item == "late"
        q.task_done()
        q.join(timeout=LONG)


def _outcome(call: Any) -> Any:
    try:
        return call()
    except BaseException as exc:
        return exc


def test_task_done_acknowledges_oldest_of_this_handle(url: str) -> None:
    with queuekit.open(url) as q:
        q.put_many([1, 2])
        taker = queuekit.open(url)
        assert [taker.get(), taker.get()] == [1, 2]
        taker.task_done()
        assert [c["in_flight"] for c in taker.info()["consumers"].values()] == [1]
        taker.close()
        m = q.get_message(timeout=LONG)  # type: ignore[attr-defined]
        assert (m.item, m.deliveries) == (2, 2)
        q.task_done()
        q.join(timeout=LONG)


def test_batches_are_one_call_each(redis_url: str, url: str) -> None:
    r = client(redis_url)
    with queuekit.open(url) as q:
        q.put(0)
        q.get()  # scripts loaded, consumer registered
        r.config_resetstat()
        q.put_many(range(1000))
        assert len(q.get_many(1000)) == 1000
        stats = r.info("commandstats")
        calls = {name: s["calls"] for name, s in stats.items() if name.startswith("cmdstat_")}
        # Commands run inside scripts count too. put_many: one native variadic LPUSH and the
        # script that checks it, in one MULTI/EXEC. get_many: a script whose SORT ... STORE
        # copies the batch into a list of its own, named by one LPUSH into the processing list,
        # and whose LTRIM takes it off the queue; then one LRANGE, sent with it. Nothing per
        # item.
        assert calls.get("cmdstat_exec") == 1, calls
        assert calls.get("cmdstat_eval") == 1, calls
        assert calls.get("cmdstat_evalsha") == 1, calls
        assert calls.get("cmdstat_lpush") == 2, calls
        assert calls.get("cmdstat_sort") == 1, calls
        assert calls.get("cmdstat_lrange") == 1, calls
        assert calls.get("cmdstat_ltrim") == 1, calls
        assert not {"cmdstat_lmove", "cmdstat_blmove", "cmdstat_rpop"} & set(calls), calls


def test_a_refused_native_push_leaves_nothing(url: str) -> None:
    # Batches of 128 and more are pushed first and checked after, in one MULTI/EXEC: a full or
    # shut-down queue takes them off again before anyone can see them.
    with queuekit.open(url, maxsize=200) as q:
        q.put_many(range(128))
        with pytest.raises(queuekit.Full):
            q.put_many(range(128, 256), timeout=0.1)
        assert (q.qsize(), q.info()["unfinished"]) == (128, 128)
        q.shutdown()
        with pytest.raises(queuekit.ShutDown):
            q.put_many(range(128, 256))
        assert q.get_many(300, timeout=LONG) == list(range(128))
        with pytest.raises(queuekit.ShutDown):
            q.get(timeout=LONG)
        assert q.info()["unfinished"] == 128


@pytest.mark.parametrize("size", [1, 128, 200])  # one message; native pushes from 128 on
def test_a_put_whose_reply_was_lost_is_not_pushed_twice(url: str, size: int) -> None:
    redis = importlib.import_module("redis")
    with queuekit.open(url) as q:
        q.put("first")  # scripts loaded
        talk, lost = q._talk, []  # type: ignore[attr-defined]

        def reply_lost(*args: Any) -> Any:
            reply = talk(*args)
            if not lost:
                lost.append(reply)
                raise redis.ConnectionError("the reply was lost on the way")
            return reply

        q._talk = reply_lost  # type: ignore[attr-defined]
        q.put_many(range(size))
        del q._talk  # type: ignore[attr-defined]
        assert lost, "the put was not sent"
        assert q.qsize() == size + 1
        assert q.info()["unfinished"] == size + 1
        assert q.get_many(size + 1, timeout=LONG) == ["first", *range(size)]


def test_every_key_shares_the_hash_tag(redis_url: str, url: str, key: str) -> None:
    with queuekit.open(url, maxsize=2) as q:
        q.put_many([1, 2])
        waiter = threading.Thread(target=lambda: q.put(3, timeout=LONG))
        waiter.start()
        q.get()
        waiter.join(LONG)
        q.get()
        q.task_done()
        q.shutdown()
        names = [n.decode() for n in client(redis_url).scan_iter(match=f"*{key}*")]
        assert len(names) >= 4, names
        assert all(n.startswith("{" + key + "}") for n in names), names


def test_a_closed_handle_can_unlink(redis_url: str, key: str) -> None:
    r = client(redis_url)
    q = queuekit.open(f"{redis_url}?key={key}")
    q.put_many([1, 2])
    assert q.get(timeout=LONG) == 1  # in flight: close() gives it back
    q.close()
    assert list(r.scan_iter(match="{" + key + "}*")) != []
    assert q.unlink() is True  # type: ignore[attr-defined]
    assert list(r.scan_iter(match="{" + key + "}*")) == []
    with pytest.raises(queuekit.QueueClosed):
        q.qsize()


def test_unlink_leaves_no_key_of_the_queue(redis_url: str, key: str) -> None:
    r = client(redis_url)
    # A glob character in the key: the scan must take it literally, and spare the neighbour.
    mine, other = f"{key}-*", f"{key}-other"
    with queuekit.open(f"{redis_url}?key={other}") as neighbour:
        neighbour.put("kept")
        with queuekit.open(f"{redis_url}?key={mine}", maxsize=2) as q:
            q.put_many([1, 2])
            waiter = threading.Thread(target=lambda: q.put(3, timeout=LONG))
            waiter.start()
            assert q.get(timeout=LONG) == 1  # a consumer: processing list, heartbeat
            waiter.join(LONG)  # wake-up lists
            r.lpush("{" + mine + "}", b"junk")
            assert q.get_many(2, timeout=LONG) == [2, 3]
            with pytest.raises(queuekit.CorruptMessage):
                q.get(timeout=LONG)  # a dead letter
            q.shutdown()
            assert len(list(r.scan_iter(match="{" + key + "-[*]}*"))) >= 5

            assert q.unlink() is True
            assert list(r.scan_iter(match="{" + key + "-[*]}*")) == []
            assert q.unlink() is False
            # This handle works on a new, empty queue; what it held is forgotten.
            assert (q.qsize(), q.info()["unfinished"]) == (0, 0)
            q.put(4)
            assert q.get(timeout=LONG) == 4
            q.task_done()
            q.join(timeout=LONG)
            assert q.unlink() is True
        assert neighbour.get(timeout=LONG) == "kept"
        neighbour.task_done()
        assert neighbour.unlink() is True
    assert list(r.scan_iter(match="{" + key + "*")) == []


def test_handles_pickle_to_the_same_queue(url: str) -> None:
    import pickle

    with queuekit.open(url) as q:
        copy = pickle.loads(pickle.dumps(q))
        copy.put("from the copy")
        assert q.get(timeout=LONG) == "from the copy"
        copy.close()


# --- A server that dies ------------------------------------------------------------------


@pytest.fixture
def aof_server(redis_server: RedisServer | None) -> Iterator[RedisServer]:
    if redis_server is None:
        pytest.skip("needs a redis-server of its own to kill")
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always")
    server.start()
    yield server
    server.close()


def test_server_killed_and_restarted_loses_no_returned_put(aof_server: RedisServer) -> None:
    url = f"{aof_server.url}?key=crash&retry_window=15&visibility_timeout=2"
    returned: list[int] = []
    got: list[int] = []
    errors: list[BaseException] = []
    stop_producing, stop_consuming = threading.Event(), threading.Event()

    def produce() -> None:
        with queuekit.open(url) as q:
            n = 0
            while not stop_producing.is_set():
                try:
                    q.put(n)
                except BaseException as exc:  # recorded, and the test fails on it
                    errors.append(exc)
                    return
                returned.append(n)
                n += 1

    def consume() -> None:
        # A get whose reply the crash swallowed leaves its item with a consumer id given up;
        # it comes back after the visibility timeout, to this same loop.
        with queuekit.open(url) as q:
            while not stop_consuming.is_set():
                try:
                    got.append(q.get(timeout=0.2))
                    q.task_done()
                except Empty:
                    pass
                except BaseException as exc:
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    aof_server.kill()
    killed_at = len(returned)
    time.sleep(0.5)
    aof_server.start()
    time.sleep(0.5)
    stop_producing.set()
    threads[0].join(LONG)
    end = time.monotonic() + LONG
    while set(returned) - set(got) and time.monotonic() < end and not errors:
        time.sleep(0.1)
    stop_consuming.set()
    threads[1].join(LONG)
    assert not errors, errors
    assert killed_at > 0, "nothing was put before the server was killed"
    assert len(returned) > killed_at, "the producer did not resume"
    missing = set(returned) - set(got)
    assert not missing, f"{len(missing)} items whose put returned were lost: {sorted(missing)[:5]}"
    # A put retried after its reply was lost is not pushed twice (its sequence number is kept).
    assert len(set(got)) == len(got), "an item was delivered twice"


def test_lost_server_is_backend_unavailable_then_reconnects(aof_server: RedisServer) -> None:
    url = f"{aof_server.url}?key=lost&retry_window=0.5"
    with queuekit.open(url) as q:
        q.put("before")
        aof_server.kill()
        start = time.monotonic()
        with pytest.raises(BackendUnavailable):
            q.get(timeout=LONG)
        assert time.monotonic() - start < 5
        aof_server.start()
        assert q.get(timeout=LONG) == "before"  # the AOF kept it; the handle reconnected


# The parent's heartbeat thread runs when it forks, on purpose: the child must not inherit it.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_uses_its_own_connection(url: str) -> None:
    import multiprocessing

    with queuekit.open(url) as q:
        q.put("warm")
        assert q.get() == "warm"
        q.task_done()
        ctx = multiprocessing.get_context("fork")
        child = ctx.Process(target=_put_in_child, args=(q,))
        child.start()
        child.join(LONG)
        assert child.exitcode == 0
        assert q.get(timeout=LONG) == os.getpid()
        q.task_done()
        q.join(timeout=LONG)


def _put_in_child(q: Any) -> None:
    q.put(os.getppid())
    q.close()


def test_small_max_connections_leave_room_for_blocking_calls(url: str) -> None:
    # Scripts keep connections of their own unless max_connections= bounds the pool.
    with queuekit.open(f"{url}&max_connections=2") as q:
        q.put("first")
        assert q.get() == "first"
        q.task_done()
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(q.get(timeout=LONG)))
        waiter.start()
        time.sleep(0.2)
        assert q.info()["qsize"] == 0  # a pooled call while the get holds the other one
        q.put("second")
        waiter.join(LONG)
        assert got == ["second"]
        q.task_done()
        q.join(timeout=LONG)

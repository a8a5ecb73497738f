"""``redis://``: a queue in a Redis list, shared by processes on any number of hosts.

URLs: ``redis://[USER:PASSWORD@]HOST[:PORT][/DB]?key=jobs``, ``rediss://`` for TLS (the
server's certificate is checked by default), and ``unix://[USER:PASSWORD@]/PATH?db=N``
for a Unix socket. Without ``key`` every open makes a new private key ``queuekit-<hex>`` (its
handles reach other processes by pickling); ``key=NAME`` opens the queue called NAME from
anywhere. ``maxsize`` belongs to the queue: the first open sets it, later ones take it, and
giving one that differs is an ``InvalidURL``.

Delivery is at least once. ``get`` moves a message atomically (a script, or ``BLMOVE``) from
the queue into this handle's processing list; a ``get_many`` of ``BATCH_LIST`` or more has the
server copy its batch into a list of its own, which the processing list names. ``task_done()``
acknowledges the oldest message this handle got and has not acknowledged, by removing exactly
that envelope (which carries a unique id) or the oldest of its batch list, and counts one task
done. With nothing to acknowledge it counts a task done as the
stdlib does. A handle that gets keeps a heartbeat key alive (refreshed every third of
``visibility_timeout`` by a thread); once it lapses, another getter gives the handle's
unacknowledged messages back to the front of the queue, in one script, so once only, with the
delivery count in their envelope raised: :meth:`RedisQueue.get_message` shows it. ``close()``
gives back what the handle holds at once.

Unfinished tasks are a counter beside the list (``put`` adds, ``task_done`` subtracts), not
"queued + in processing": the stdlib lets ``task_done()`` count an item nobody got, and the
conformance suite checks that. A dead consumer does not leak the count, because its messages
are delivered again and acknowledged by someone else.

Waiting is done by the server: getters block in ``BLMOVE`` (a shutdown pushes a marker that
wakes them), putters and joiners in ``BLPOP`` on wake-up lists that getters and ``task_done``
fill, all in slices of at most two seconds so that a getter also looks for dead consumers.
The socket timeout is longer than any slice. Nothing is retried blindly: a put carries a
per-thread sequence number the server remembers, so a put retried after a lost reply is not
pushed twice (a ``put_many`` of ``NATIVE_PUSH`` or more is pushed natively and checked by a
script in the same MULTI/EXEC, which takes it off again when refused or repeated); a get whose
reply was lost gives its consumer id up (its messages come back after the visibility timeout).
A lost server is retried for ``retry_window`` seconds, then ``BackendUnavailable``; the next
call reconnects by itself. A call with a timeout waits for a server that does not answer
(stopped, or gone) until its timeout plus ``LATE`` at most.

A message a getter cannot read (not an envelope, or a payload its serializer or authkey
refuses) goes to the dead-letter list ``{key}:dead``, counts as a task done (nobody has an
item to call ``task_done()`` for), and the get raises ``CorruptMessage`` (``AuthenticationError``
for a bad HMAC tag) with its bytes. ``get_many`` is as gets that stop before the first that
would raise: it returns the items before the unreadable message, and gives that message and
the rest of its batch back to the front of the queue in one script, where the next get meets
it; only when it is first does it go to the dead-letter list (the rest go back) and
``get_many`` raise. ``unlink()`` removes every key of the queue.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import operator
import os
import re
import secrets
import socket
import struct
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from typing import Any, ClassVar, Generic, TypeVar

import redis

from .._base import QueueBase, check_batch_fits, check_max_items, deadline, remaining
from .._errors import (
    AuthenticationError,
    BackendUnavailable,
    CorruptMessage,
    Empty,
    Full,
    InvalidURL,
    JoinTimeout,
    MessageTooLarge,
    QueueClosed,
    ShutDown,
)
from .._protocol import Capabilities
from .._serializers import RawSerializer, Serializer, dumps_many, get_serializer, loads_many
from .._urls import Param, QueueURL, bind_params
from .._urls import parse_url as _parse_url
from . import _redis_scripts as lua
from ._redis_connection import CONNECTION_PARAMS, OWN_PARAMS, TLS_PARAMS, client, connection

__all__ = ["MAX_MESSAGE_SIZE", "Message", "RedisQueue"]

T = TypeVar("T")
R = TypeVar("R")

MAX_MESSAGE_SIZE = 512 * 1024 * 1024 - lua.HEADER
"""Redis's largest string (``proto-max-bulk-len``) less the envelope."""
MAX_SLICE = 2.0
BATCH_LIST = 64
"""A get_many of this many or more copies its batch into a list of its own on the server (the
processing list names it), and reads it natively: no messages pass through a script, for two
replies to read and a key more a batch (smaller batches go through the script)."""
NATIVE_PUSH = 128
"""Batches of this many messages or more are pushed by a native LPUSH, checked by a script
after it in the same MULTI/EXEC: half the server's work of passing them through a script, for
four replies to read instead of one (smaller batches go through the script)."""
LATE = 1.0
"""Seconds past its timeout a call waits for a server that does not answer (a stall)."""
_SCRIPT_NAMES = ["ATTACH", "PUT", "GET", "RETURN_SENTINEL", "MOVED", "ACK", "UNFINISHED", "SIZES"]
_SCRIPT_NAMES += ["SHUTDOWN", "RECOVER", "DEAD_LETTER", "GET_MANY", "ACK_BATCH"]
_PAYLOAD = operator.itemgetter(slice(lua.HEADER, None))
_HEAD = struct.Struct(f">{lua.HEADER - 9}sQB")  # MAGIC and a random prefix, a counter, deliveries


@dataclass(frozen=True)
class Message(Generic[T]):
    """An item with its delivery facts, from :meth:`RedisQueue.get_message`."""

    item: T
    id: str
    deliveries: int

    @property
    def redelivered(self) -> bool:
        """Got before by a consumer that died (or closed) without acknowledging it."""
        return self.deliveries > 1


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:60]


class RedisQueue(QueueBase[T]):
    SCHEME = "redis"
    PARAMS: ClassVar[list[Param]] = OWN_PARAMS + CONNECTION_PARAMS + TLS_PARAMS

    def __init__(self, url: str | QueueURL = "redis://localhost:6379/0", **options: Any) -> None:
        parsed = _parse_url(url)
        if parsed.scheme not in ("redis", "rediss", "unix"):
            raise InvalidURL(f"{parsed}: RedisQueue opens redis://, rediss:// or unix://")
        if "ssl_password" in parsed.query:
            # Not even the URL can be shown here: its query would show the password.
            raise InvalidURL(
                "ssl_password in a redis URL would be shown wherever the URL is: pass it as "
                "a keyword option, queuekit.open(url, ssl_password=...)"
            )
        values = bind_params(parsed, self.PARAMS, options)
        key = values["key"] or f"queuekit-{secrets.token_hex(8)}"
        problem = lua.check_key(key)
        if problem:
            raise InvalidURL(f"{parsed}: bad key {key!r}: {problem}")
        self._url = parsed
        self._shown = parsed.redacted()
        self._options = {**options, "key": key}
        self._connect = connection(parsed, values)
        self._keys = lua.Keys(key)
        self._serializer: Serializer = get_serializer(values["serializer"])
        self._raw = type(self._serializer) is RawSerializer
        self._visibility = float(values["visibility_timeout"])
        self._retry_window = float(values["retry_window"])
        self._recover_every = min(self._visibility / 2, 5.0)
        self._slice = max(
            0.05, min(MAX_SLICE, self._recover_every, self._connect["socket_timeout"] / 2)
        )
        self._marker_ms = int(3000 * self._slice) + 1000
        self._seq_ms = int(max(60.0, 4 * self._retry_window) * 1000)
        self._keep_connections = values["max_connections"] is None
        self._socket_timeout = float(self._connect["socket_timeout"])
        self._fresh_process()
        try:
            self._maxsize, self._durable = self._attach(values["maxsize"])
        except BaseException:
            self._client.close()
            raise
        self._options["maxsize"] = self._maxsize

    @classmethod
    def from_url(cls, url: QueueURL, **options: Any) -> RedisQueue[Any]:
        return cls(url, **options)

    def _fresh_process(self) -> None:
        """This process's own connection and consumer: set at open, and again after a fork."""
        self._pid = os.getpid()
        self._client = client(self._connect)
        # Connections for scripts, held until close() (which disconnects the whole pool).
        self._spare: list[Any] = []
        self._shas = {name: lua.sha1(getattr(lua, name)) for name in _SCRIPT_NAMES}
        self._lock = threading.Lock()
        # What this handle got and has not acknowledged, a get at a time:
        # [proc, envelopes, acknowledged, (batch list, its REF) or None].
        self._pending: deque[list[Any]] = deque()
        self._batches = 0
        self._cid: str | None = None
        self._proc: str | None = None
        self._retired: list[str] = []  # consumer ids given up after a lost reply
        self._beat_stop = threading.Event()
        self._beat_lock = threading.Lock()  # held by a heartbeat on its way: unlink() waits
        self._beater: threading.Thread | None = None
        self._id_prefix = lua.MAGIC + os.urandom(8)
        self._next_id = 0
        self._producer = f"{_safe(socket.gethostname())}-{os.getpid()}-{secrets.token_hex(4)}"
        self._seqs = threading.local()
        self._last_recover = 0.0

    def _attach(self, maxsize: int | None) -> tuple[int, bool]:
        has = int(self._run(lambda: self._script("ATTACH", [self._keys.meta], [maxsize or ""])))
        if maxsize is not None and maxsize != has and not (maxsize <= 0 and has <= 0):
            raise InvalidURL(
                f"{self._shown}: queue {self._keys.key!r} exists already with maxsize={has}, "
                f"not {maxsize}: open it without maxsize= (or with maxsize={has}), or use "
                "another key"
            )
        durable = False
        with contextlib.suppress(redis.RedisError):
            conf: dict[Any, Any] = self._client.config_get("append*")
            durable = conf.get(b"appendonly") == b"yes" and conf.get(b"appendfsync") == b"always"
        return has, durable

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif hasattr(self, "_maxsize"):
            state = f"maxsize={self._maxsize}"
        else:  # shown in the traceback of a failed open
            state = "opening"
        return f"<RedisQueue {self._shown} key={self._keys.key!r} {state}>"

    def __reduce__(self) -> Any:
        if self._closed:
            raise QueueClosed(f"{self!r} is closed; pass an open handle to the child process")
        return _reopen, (self._url, self._options)

    # --- Calls to the server ---------------------------------------------------------

    def _call(self, *args: Any, end: float | None = None, blocks: float = 0.0) -> Any:
        """One command on a connection of our own; the reply is awaited until ``end`` (or
        for ``blocks`` seconds, the command's own wait) plus ``LATE``, at most socket_timeout.
        """
        return self._talk(args, None, end, blocks)

    def _exec(self, *commands: tuple[Any, ...], end: float | None = None) -> list[Any]:
        """``commands`` in one MULTI/EXEC, sent at once; their replies. An error among them
        is raised (after every reply is read), as ``_call`` raises its command's."""
        replies: list[Any] = self._talk((), commands, end, 0.0)
        return replies

    def _pipeline(self, *commands: tuple[Any, ...], end: float | None = None) -> list[Any]:
        """``commands`` sent at once, not in a transaction: their replies, or the first
        error among them (raised after every reply is read)."""
        replies: list[Any] = self._talk((), commands, end, 0.0, atomic=False)
        return replies

    def _read_all(self, conn: Any, count: int) -> list[Any]:
        replies, error = [], None
        for _ in range(count):
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                error = error or exc
        if error is not None:
            raise error
        return replies

    def _read_exec(self, conn: Any, queued: int) -> list[Any]:
        error = None
        for _ in range(queued + 1):  # MULTI's +OK, then +QUEUED each (or why not)
            try:
                conn.read_response()
            except redis.ResponseError as exc:
                error = error or exc
        try:
            replies: list[Any] = conn.read_response()
        except redis.ResponseError as exc:  # EXECABORT: say why
            raise error or exc from None
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return replies

    def _talk(
        self,
        args: tuple[Any, ...],
        commands: tuple[Any, ...] | None,
        end: float | None,
        blocks: float,
        atomic: bool = True,
    ) -> Any:
        # Not redis-py's execute_command: its per-command path (pool checkout, observability
        # hooks, its retry wrapper) costs about 10 us a call, as much again as a script. A
        # connection error has disconnected the connection; it reconnects on its next use.
        spare = self._spare
        try:
            conn = spare.pop()
        except IndexError:  # another thread holds each one
            conn = self._new_connection()
        try:
            if commands is None:
                conn.send_command(*args)
                read = conn.read_response
            elif not atomic:
                conn.send_packed_command(conn.pack_commands(commands))
                read = partial(self._read_all, conn, len(commands))
            else:
                conn.send_packed_command(conn.pack_commands([("MULTI",), *commands, ("EXEC",)]))
                read = partial(self._read_exec, conn, len(commands))
            if end is None and not blocks:
                return read()
            wait = max(blocks, end - time.monotonic() if end is not None else 0.0)
            # On the socket itself: read_response(timeout=) is redis-py 5.3 and later.
            sock = conn._sock
            sock.settimeout(min(self._socket_timeout, max(wait, 0.0) + LATE))
            try:
                return read()
            finally:
                # Unless an error or close() (in another thread) disconnected it meanwhile.
                if conn._sock is sock:
                    with contextlib.suppress(OSError):
                        sock.settimeout(self._socket_timeout)
        finally:
            if self._keep_connections:
                spare.append(conn)
            else:  # max_connections= was given: the blocking calls need the pool's too
                self._client.connection_pool.release(conn)

    def _new_connection(self) -> Any:
        pool = self._client.connection_pool
        try:
            return pool.get_connection()
        except TypeError:  # redis-py before 5.3 wants a command name
            return pool.get_connection("_")

    def _script(self, name: str, keys: list[str], args: list[Any], end: float | None = None) -> Any:
        try:
            return self._call("EVALSHA", self._shas[name], len(keys), *keys, *args, end=end)
        except redis.exceptions.NoScriptError:
            self._call("SCRIPT", "LOAD", getattr(lua, name), end=end)  # a new server
            return self._call("EVALSHA", self._shas[name], len(keys), *keys, *args, end=end)

    def _script_then(
        self, name: str, keys: list[str], args: list[Any], *then: Any, end: float | None = None
    ) -> list[Any]:
        """Script ``name`` and the commands ``then`` after it, sent at once. Only for commands
        that change nothing: when the server has lost the script, they run anyway."""
        script = ("EVALSHA", self._shas[name], len(keys), *keys, *args)
        try:
            return self._pipeline(script, *then, end=end)
        except redis.exceptions.NoScriptError:
            self._call("SCRIPT", "LOAD", getattr(lua, name), end=end)  # a new server
            return self._pipeline(script, *then, end=end)

    def _run(
        self,
        fn: Callable[[], R],
        *,
        lost: Callable[[], None] | None = None,
        end: float | None = None,
    ) -> R:
        """``fn()``, retried while the server cannot be reached, for ``retry_window`` seconds
        (or until ``end`` plus ``LATE``, a call's timeout, if sooner); every redis-py error
        becomes a queuekit one. ``fn`` must be safe to repeat."""
        give_up = time.monotonic() + self._retry_window
        if end is not None:
            give_up = min(give_up, end + LATE)
        pause = 0.02
        while True:
            try:
                return fn()
            except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
                raise BackendUnavailable(f"{self._shown}: the server refused us: {exc}") from exc
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    raise BackendUnavailable(
                        f"{self._shown}: the server's TLS certificate was refused ({exc}); "
                        "give the CA that signed it as ssl_ca_certs=FILE"
                    ) from exc
                if lost is not None:
                    lost()
                if self._closed:
                    raise QueueClosed(f"{self!r} was closed during the call") from exc
                if time.monotonic() + pause > give_up:
                    waited = (
                        "before the call's timeout ran out"
                        if end is not None and give_up == end + LATE
                        else f"for {self._retry_window:g}s"
                    )
                    raise BackendUnavailable(
                        f"{self._shown}: no answer from the Redis server {waited} ({exc}); "
                        "check that it runs and is reachable, or raise retry_window"
                    ) from exc
                time.sleep(pause)
                pause = min(2 * pause, 0.5)
            except redis.ResponseError as exc:
                if str(exc).startswith("WRONGTYPE"):
                    raise InvalidURL(
                        f"{self._shown}: key {self._keys.key!r} holds something that is not a "
                        "queuekit queue; choose another key="
                    ) from exc
                raise BackendUnavailable(f"{self._shown}: the Redis server said: {exc}") from exc
            except redis.RedisError as exc:
                raise BackendUnavailable(f"{self._shown}: {exc}") from exc

    def _ready(self) -> None:
        self._check_open()
        if os.getpid() != self._pid:
            # A forked child: the parent's connections, consumer and threads are not ours.
            self._fresh_process()

    # --- put ------------------------------------------------------------------------

    def _envelopes(self, payloads: list[bytes]) -> list[bytes]:
        n = len(payloads)
        if n and max(map(len, payloads)) > MAX_MESSAGE_SIZE:
            raise MessageTooLarge(
                f"an item of {max(map(len, payloads))} bytes serialized is over Redis's limit "
                f"of {MAX_MESSAGE_SIZE} bytes for one message; split it"
            )
        with self._lock:
            first = self._next_id
            self._next_id = first + n
        pack, prefix = _HEAD.pack, self._id_prefix
        ids = range(first, first + n)
        return [pack(prefix, i, 1) + p for i, p in zip(ids, payloads, strict=True)]

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        self._ready()
        self._push(self._envelopes([self._serializer.dumps(item)]), block, timeout)

    def put_many(
        self, items: Iterable[T], block: bool = True, timeout: float | None = None
    ) -> None:
        self._ready()
        envelopes = self._envelopes(dumps_many(self._serializer, list(items)))
        if sum(map(len, envelopes)) > MAX_MESSAGE_SIZE:
            raise MessageTooLarge(
                f"a batch of {len(envelopes)} items is over {MAX_MESSAGE_SIZE} bytes serialized, "
                "more than one Redis command carries; split it"
            )
        self._push(envelopes, block, timeout)

    def _refuse_negative(self, block: bool, timeout: float | None, getting: bool) -> None:
        """The contract's order: ShutDown before a negative timeout's ValueError."""
        if block and timeout is not None and timeout < 0:
            n, _, shut = self._sizes()
            if shut and (n == 0 or not getting):
                raise ShutDown
            deadline(block, timeout)

    def _push(self, envelopes: list[bytes], block: bool, timeout: float | None) -> None:
        self._refuse_negative(block, timeout, getting=False)
        end = deadline(block, timeout)
        k, n = self._keys, len(envelopes)
        mine = self._seqs.__dict__
        if "producer" not in mine:
            # Per thread, not per thread id: ids are reused once a thread ends.
            mine["producer"] = k.seq(f"{self._producer}-{secrets.token_hex(4)}")
        mine["n"] = seq = mine.get("n", 0) + 1
        producer = mine["producer"]
        keys = [k.queue, k.meta, producer, k.putters]
        facts = [seq, self._seq_ms, self._maxsize, self._marker_ms]
        if n < NATIVE_PUSH:
            put = partial(self._script, "PUT", keys, [*facts, *envelopes], end)
        else:
            put = partial(
                self._exec,
                ("LPUSH", k.queue, *envelopes),
                ("EVAL", lua.PUSHED, len(keys), *keys, *facts, n),
                end=end,
            )
        while True:
            pushed = self._run(put, end=end)
            if isinstance(pushed, list):
                pushed = pushed[1]
            if pushed >= 0:
                return
            if pushed == -1:
                raise ShutDown
            check_batch_fits(n, self._maxsize)
            wait = remaining(end)
            if wait == 0.0:
                raise Full
            self._wait_on(k.room, wait, end)

    def _wait_on(self, wake_list: str, wait: float | None, end: float | None) -> None:
        seconds = self._slice if wait is None else max(0.001, min(wait, self._slice))
        self._run(lambda: self._call("BLPOP", wake_list, seconds, blocks=seconds), end=end)

    # --- get ------------------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        batch = self._take(1, block, timeout)
        return self._load(batch)[0]

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[T]:
        check_max_items(max_items)
        return self._load(self._take(max_items, block, timeout))

    def get_message(self, block: bool = True, timeout: float | None = None) -> Message[T]:
        """As ``get``, with the message's id and how many times it has been delivered."""
        batch = self._take(1, block, timeout)
        (item,) = self._load(batch)
        envelope = batch[1][0]
        ident = envelope[len(lua.MAGIC) : lua.HEADER - 1].hex()
        return Message(item, ident, envelope[lua.HEADER - 1])

    def _load(self, batch: list[Any]) -> list[T]:
        envelopes: list[bytes] = batch[1]
        header = lua.HEADER
        if len(envelopes) == 1:
            envelope = envelopes[0]
            if envelope[:3] == lua.MAGIC and len(envelope) >= header:
                try:
                    return [self._serializer.loads(envelope[header:])]
                except Exception:
                    pass
        # A batch: one check of them all, then the serializer's batch call.
        elif min(map(len, envelopes)) >= header and all(
            map(bytes.startswith, envelopes, repeat(lua.MAGIC))
        ):
            payloads = list(map(_PAYLOAD, envelopes))
            if self._raw:  # raw's loads is bytes(), and the slices are bytes already
                return payloads
            try:
                return loads_many(self._serializer, payloads)
            except Exception:
                pass
        items: list[T] = []
        loads = self._serializer.loads
        for envelope in envelopes:
            if envelope[:3] != lua.MAGIC or len(envelope) < header:
                break
            try:
                items.append(loads(envelope[header:]))
            except Exception:
                break
        else:  # each loads alone: the serializer's batch call refused them together
            return items
        error = self._settle(batch, len(items))
        if error is not None:
            raise error
        return items

    def _unreadable(self, envelope: bytes) -> CorruptMessage | None:
        """Why ``envelope`` cannot be read, as the error to raise; None if it can."""
        where = (
            f"It was moved to the dead-letter list {self._keys.dead!r}; its bytes are in this "
            "error's .data"
        )
        if not envelope.startswith(lua.MAGIC) or len(envelope) < lua.HEADER:
            return CorruptMessage(
                f"{self._shown}: a {len(envelope)}-byte value in queue {self._keys.key!r} is not "
                f"a queuekit message: something other than queuekit pushed it. {where}",
                data=envelope,
            )
        try:
            self._serializer.loads(envelope[lua.HEADER :])
        except AuthenticationError as exc:
            error: CorruptMessage = AuthenticationError(
                f"{self._shown}: a message in queue {self._keys.key!r} does not carry this "
                "queue's HMAC tag: it was put without the authkey, with another one, or changed "
                f"on the way. It was not deserialized. {where}",
                data=envelope,
            )
            error.__cause__ = exc
        except Exception as exc:
            error = CorruptMessage(
                f"{self._shown}: a message in queue {self._keys.key!r} cannot be read by "
                f"serializer {self._serializer.name!r} ({exc}). {where}",
                data=envelope,
            )
            error.__cause__ = exc
        else:
            return None
        return error

    def _settle(self, batch: list[Any], good: int) -> CorruptMessage | None:
        """What a get took holds an unreadable message after ``good`` readable ones: it and
        the rest go back to the front of the queue; or, if it is the first, it goes to the
        dead-letter list and the rest go back. The error to raise, if it was the first."""
        envelopes: list[bytes] = batch[1]
        with self._lock:
            batch[1] = envelopes[:good]
            if batch[2] >= good:
                for i, held in enumerate(self._pending):
                    if held is batch:
                        del self._pending[i]
                        break
        bad: list[bytes] = []
        error: CorruptMessage | None = None
        if not good:
            error = self._unreadable(envelopes[0])
            if error is None:  # a load failed once and not when tried again (out of memory?)
                error = CorruptMessage(
                    f"{self._shown}: a message failed to load and then loaded when tried "
                    f"again; the {len(envelopes)} messages taken went back to the front of the "
                    "queue"
                )
            else:
                bad = envelopes[:1]
        back = envelopes[good + len(bad) :]
        k, proc, listed = self._keys, batch[0], batch[3]
        name, ref = listed or (proc, b"")
        while True:
            members = self._members()
            keys = [k.queue, k.meta, k.consumers, k.dead, proc, k.joiners, k.joined, name]
            keys.append(k.held(proc.rpartition(":proc:")[2]))
            for cid in members:
                keys += [k.proc(cid), k.held(cid)]
            args = [self._marker_ms, lua.SENTINEL, len(members), *members, ref]
            args += [len(bad), *bad, *back]
            if self._run(partial(self._script, "DEAD_LETTER", keys, args)) >= 0:
                break
        if error is not None and bad and back:
            error.args = (
                f"{error.args[0]}. The {len(back)} messages this get_many took after it went "
                "back to the front of the queue",
            )
        return error

    def _consumer(self, end: float | None = None) -> str:
        """This handle's processing list, registering it as a consumer on first use."""
        # Registered outside the lock: a thread waiting for a stalled server must not hold
        # the handle's other threads past their own timeouts.
        cid = f"{self._producer}-{secrets.token_hex(2)}"
        k = self._keys
        # The heartbeat first: a member without one would be taken for dead.
        ttl = int(self._visibility * 1000)
        self._run(partial(self._call, "SET", k.heartbeat(cid), 1, "PX", ttl, end=end), end=end)
        self._run(partial(self._call, "SADD", k.consumers, cid, end=end), end=end)
        with self._lock:
            if self._cid is not None:
                # Another thread registered one meanwhile; this one lapses, holding nothing.
                self._retired.append(cid)
                return self._keys.proc(self._cid)
            self._cid = cid
            self._proc = k.proc(cid)
            if self._beater is None:
                self._beater = threading.Thread(
                    target=_beat,
                    args=(weakref.ref(self), self._beat_stop, self._visibility),
                    name="queuekit-redis-heartbeat",
                    daemon=True,
                )
                self._beater.start()
            return self._proc

    def _give_up_consumer(self) -> None:
        # A move whose reply was lost may have put a message in our list that we do not know
        # of: a new consumer id lets the old one lapse, and its messages come back.
        with self._lock:
            if self._cid is not None:
                self._retired.append(self._cid)
            self._cid = self._proc = None

    def _take(self, max_items: int, block: bool, timeout: float | None) -> list[Any]:
        """What a get took, as held for task_done: [processing list, envelopes, acknowledged]."""
        self._ready()
        self._refuse_negative(block, timeout, getting=True)
        end = deadline(block, timeout)
        k = self._keys
        bounded = "1" if self._maxsize > 0 else "0"
        lost = self._give_up_consumer
        self._recover(end=end)
        while True:
            proc = self._proc or self._consumer(end)
            keys = [k.queue, proc, k.meta, k.putters, k.room]
            args = [max_items, lua.SENTINEL, bounded, self._marker_ms, 0]
            if max_items >= BATCH_LIST:
                taken = partial(self._take_batch, proc, max_items, bounded, end)
                got = self._run(taken, lost=lost, end=end)
            else:
                got = self._run(partial(self._script, "GET", keys, args, end), lost=lost, end=end)
            if isinstance(got, list):
                return self._hold(proc, got)
            if isinstance(got, tuple):
                return self._hold(proc, *got)
            if got == 2:
                # Drained, unless a dead consumer's messages are due to come back.
                if self._recover(now=True, end=end):
                    continue
                raise ShutDown
            wait = remaining(end)
            if wait == 0.0:
                raise Empty
            seconds = self._slice if wait is None else max(0.001, min(wait, self._slice))
            if max_items >= BATCH_LIST:
                # Wait for a message without taking it (moved from the front to the front): the
                # batch is taken whole by the loop's next try, not one by this and the rest
                # through a script.
                peek = partial(self._call, "BLMOVE", k.queue, k.queue, "RIGHT", "RIGHT", seconds)
                if self._run(partial(peek, blocks=seconds), end=end) is None:
                    self._recover(end=end)
                continue
            blmove = partial(self._call, "BLMOVE", k.queue, proc, "RIGHT", "LEFT", seconds)
            moved = self._run(partial(blmove, blocks=seconds), lost=lost, end=end)
            if moved is None:
                self._recover(end=end)
                continue
            if moved == lua.SENTINEL:
                back = partial(
                    self._script, "RETURN_SENTINEL", [k.queue, proc, k.meta], [moved], end
                )
                if self._run(back, end=end):
                    raise ShutDown
            batch = self._hold(proc, [moved])
            if max_items > 1:
                args[0], args[4] = max_items - 1, 1  # and wake a putter for `moved` too
                more = self._run(partial(self._script, "GET", keys, args, end), end=end)
                if isinstance(more, list):
                    self._hold(proc, more, batch)
            elif self._maxsize > 0:
                moved_args = [self._marker_ms]
                self._run(partial(self._script, "MOVED", [k.putters, k.room], moved_args, end))
            return batch

    def _take_batch(
        self, proc: str, max_items: int, bounded: str, end: float | None
    ) -> tuple[list[bytes], None, tuple[str, bytes]] | int:
        """Up to ``max_items`` into a new batch list: (envelopes, no batch, the list and its
        REF); or 1 (empty), or 2 (shut down and drained)."""
        k, cid = self._keys, proc.rpartition(":proc:")[2]
        with self._lock:  # a new list each try: a try whose reply was lost may have filled one
            number = self._batches = self._batches + 1
        name = k.batch(cid, number)
        ref = lua.REF + name.encode()
        keys = [k.queue, proc, k.meta, k.putters, k.room, name, k.held(cid)]
        args = [max_items, lua.SENTINEL, bounded, self._marker_ms, ref]
        # Not in a transaction: between the two, only another getter recovering this consumer
        # (its heartbeat lapsed) can touch the list, and then the batch may come twice.
        read = ("LRANGE", name, 0, -1)
        count, envelopes = self._script_then("GET_MANY", keys, args, read, end=end)
        if count < 0:
            return -int(count)
        return envelopes, None, (name, ref)

    def _members(self, end: float | None = None) -> list[str]:
        found = self._run(partial(self._call, "SMEMBERS", self._keys.consumers, end=end), end=end)
        return [m.decode() for m in found]

    def _hold(
        self,
        proc: str,
        envelopes: list[bytes],
        batch: list[Any] | None = None,
        listed: tuple[str, bytes] | None = None,
    ) -> list[Any]:
        # One entry a batch, not one a message: a get_many of 1000 is one append.
        with self._lock:
            if batch is None:
                batch = [proc, envelopes, 0, listed]
                self._pending.append(batch)
            else:
                batch[1] += envelopes
        if self._closed:
            # close() ran while this call waited: what it took goes back like the rest.
            with contextlib.suppress(BackendUnavailable, QueueClosed):
                self._recover(mine=[proc.rpartition(":proc:")[2]])
            self._client.close()
            raise QueueClosed(f"{self!r} was closed while a get waited; its message went back")
        return batch

    def _recover(
        self, now: bool = False, mine: list[str] | None = None, end: float | None = None
    ) -> int:
        """Give back the messages of consumers whose heartbeat lapsed (at most every few
        seconds, unless ``now``), or those of this handle's consumers ``mine``; how many."""
        started = time.monotonic()
        if mine is None and not now and started - self._last_recover < self._recover_every:
            return 0
        self._last_recover = started
        k = self._keys
        force = mine is not None
        if mine is not None:
            dead = mine
        else:
            members = self._members(end)
            others = [m for m in members if m != self._cid]
            if not others:
                return 0
            beats = [k.heartbeat(cid) for cid in others]
            alive = self._run(partial(self._call, "MGET", *beats, end=end), end=end)
            dead = [cid for cid, a in zip(others, alive, strict=True) if a is None]
        moved = 0
        for cid in dead:
            keys = [k.queue, k.meta, k.consumers, k.heartbeat(cid), k.proc(cid), k.joiners]
            keys += [k.joined, k.held(cid)]
            args = [cid, lua.SENTINEL, "1" if force else "0", self._marker_ms]
            while True:
                # The batch lists its processing list names: a script takes its keys as KEYS.
                held = self._run(partial(self._call, "LRANGE", k.proc(cid), 0, -1, end=end))
                skip = len(lua.REF)
                named = [m[skip:].decode() for m in held if m.startswith(lua.REF)]
                back = partial(self._script, "RECOVER", [*keys, *named], args, end)
                done = self._run(back, end=end)
                if done != -3:  # -3: it named another batch list meanwhile
                    break
            moved += max(0, done)
        return moved

    # --- Tasks, sizes, shutdown -------------------------------------------------------

    def task_done(self) -> None:
        self._ready()
        with self._lock:
            entry = None
            if self._pending:
                batch = self._pending[0]
                proc, envelopes, acked, listed = batch
                entry = proc, envelopes[acked], listed
                batch[2] = acked = acked + 1
                if acked >= len(envelopes):
                    self._pending.popleft()
        k = self._keys
        proc, envelope, listed = entry or (k.proc("-"), b"", None)
        keys = [proc, k.meta, k.joiners, k.joined]
        if listed is None:
            ack = partial(self._script, "ACK", keys, [envelope, self._marker_ms])
        else:
            keys += [listed[0], k.held(proc.rpartition(":proc:")[2])]
            ack = partial(self._script, "ACK_BATCH", keys, [listed[1], self._marker_ms])
        try:
            left = self._run(ack)
        except BaseException:
            if entry is not None:
                with self._lock:
                    self._pending.appendleft([proc, [envelope], 0, listed])
            raise
        if left == -1:
            raise ValueError("task_done() called more times than there were items put")

    def join(self, timeout: float | None = None) -> None:
        self._ready()
        end = deadline(True, timeout)
        k = self._keys
        while True:
            left = self._run(
                lambda: self._script("UNFINISHED", [k.meta, k.joiners], [self._marker_ms], end),
                end=end,
            )
            if left <= 0:
                return
            wait = remaining(end)
            if wait == 0.0:
                raise JoinTimeout(f"join() timed out with {left} unfinished tasks")
            self._wait_on(k.joined, wait, end)

    def _sizes(self) -> tuple[int, int, int]:
        k = self._keys
        n, u, s = self._run(lambda: self._script("SIZES", [k.queue, k.meta], [lua.SENTINEL]))
        return int(n), int(u), int(s)

    def qsize(self) -> int:
        self._ready()
        return self._sizes()[0]

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            qsize="exact",
            ordering="fifo",
            cross_process=True,
            start_methods=tuple(multiprocessing.get_all_start_methods()),
            cross_host=True,
            durable=self._durable,
            serializes=True,
            max_message_size=MAX_MESSAGE_SIZE,
        )

    def shutdown(self, immediate: bool = False) -> None:
        self._ready()
        k = self._keys
        keys = [k.queue, k.meta, k.room, k.joined]
        args = ["1" if immediate else "0", lua.SENTINEL, self._marker_ms]
        self._run(lambda: self._script("SHUTDOWN", keys, args))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._pid:
            return  # a forked copy: the parent's connection and consumer are the parent's
        self._beat_stop.set()
        if self._beater is not None:
            self._beater.join(1.0)
        mine = [*self._retired, *([self._cid] if self._cid else [])]
        if mine:
            # What this handle got and did not acknowledge goes back to the queue now.
            self._retry_window = min(self._retry_window, 1.0)
            with contextlib.suppress(BackendUnavailable, QueueClosed):
                self._recover(mine=mine)
        self._pending.clear()
        self._client.close()

    def unlink(self) -> bool:
        """Remove every key of the queue from the server: its messages (queued, in flight and
        dead-lettered), counts, shutdown flag, consumers, heartbeats and wake-ups. Whether
        there was any.

        For a queue that nobody uses any more. This handle stays open, and forgets what it got
        and had not acknowledged (task_done() has nothing left to count for it). Any handle
        used afterwards, this one or another, here or on another host, works on a new, empty
        queue under the same key and writes its keys again; another handle's unacknowledged
        messages are gone, and if it dies holding new ones nobody gives them back, as it is
        no longer a registered consumer: close the other handles first.

        A closed handle can still unlink (close first, then unlink, as with shared memory):
        close() has given back what it held, and unlink() opens a connection for the call.
        """
        if not self._closed:
            self._ready()
        elif os.getpid() != self._pid:
            self._fresh_process()
        with self._beat_lock, self._lock:
            # No heartbeat or consumer of ours may write a key again behind the scan.
            self._cid = self._proc = None
            self._retired.clear()
            self._pending.clear()
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._keys.queue) + "*"
        removed, cursor = 0, 0
        while True:
            scan = partial(self._call, "SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            cursor, names = self._run(scan)
            if names:
                removed += self._run(partial(self._call, "UNLINK", *names))
            if int(cursor) == 0:
                return removed > 0

    def info(self) -> dict[str, Any]:
        """Facts for ``queuekit info``: sizes, and each consumer's messages in flight."""
        self._ready()
        k = self._keys
        n, u, s = self._sizes()
        members = sorted(self._members())
        pipe = self._client.pipeline(transaction=True)
        pipe.llen(k.dead)
        for cid in members:
            pipe.exists(k.heartbeat(cid))
            pipe.llen(k.proc(cid))
            pipe.hmget(k.held(cid), "n", "refs")  # batch lists: messages, and names in proc
        dead, *facts = self._run(pipe.execute)
        in_flight = {}
        for i, cid in enumerate(members):
            alive, listed, (held, refs) = facts[3 * i : 3 * i + 3]
            in_flight[cid] = {
                "alive": bool(alive),
                "in_flight": listed + int(held or 0) - int(refs or 0),
            }
        return {
            "key": k.key,
            "maxsize": self._maxsize,
            "qsize": n,
            "unfinished": u,
            "shutdown": {0: False, 1: "graceful", 2: "immediate"}.get(s, s),
            "consumers_alive": sum(c["alive"] for c in in_flight.values()),
            "consumers": in_flight,
            "dead_letters": dead,
            "visibility_timeout": self._visibility,
            "durable": self._durable,
            "serializer": self._serializer.name,
        }


def _beat(handle: weakref.ref[RedisQueue[Any]], stop: threading.Event, ttl: float) -> None:
    """Keep the handle's consumer alive; by a weak reference, so that a handle nobody closed
    can still be collected (its heartbeat then lapses and its messages come back)."""
    while not stop.wait(ttl / 3):
        q = handle()
        if q is None:
            return
        with q._beat_lock:
            cid = q._cid
            if cid is not None:
                with contextlib.suppress(redis.RedisError):
                    q._client.set(q._keys.heartbeat(cid), 1, px=int(ttl * 1000))
        del q


def _reopen(url: QueueURL, options: dict[str, Any]) -> RedisQueue[Any]:
    return RedisQueue(url, **options)

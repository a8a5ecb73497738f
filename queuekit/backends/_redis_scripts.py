"""Key names and Lua scripts of the ``redis://`` backend.

Every key of the queue ``K`` carries the hash tag ``{K}``, so a cluster keeps them in one slot,
and every script receives all the keys it touches through ``KEYS``. The list ``{K}`` holds the
queued messages, newest on the left: puts push on the left, gets move from the right.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["MAGIC", "SENTINEL", "Keys", "check_key", "sha1"]

SENTINEL = b"queuekit:shutdown"
"""Pushed at the back of a shut-down queue, so getters blocked on the list wake at once; a
getter that takes it puts it back and raises ShutDown. Never an envelope (no MAGIC)."""

MAGIC = b"qk\x01"
"""An envelope: MAGIC, a 16-byte message id, one byte of delivery count (1 to 255), payload."""
HEADER = len(MAGIC) + 16 + 1
_MAGIC_LUA = "qk\\1"  # MAGIC as a Lua string literal

REF = b"queuekit:batch:"
"""In a processing list, REF + the name of a batch list: a get_many's messages, oldest first,
copied there by the server (SORT ... STORE) rather than through a script's values. Never an
envelope (no MAGIC)."""
_REF_LUA = REF.decode()

WAKE_TOKENS = 64
"""Most wake-up tokens kept in a wake list: enough for the waiters of one queue."""

_KEY = re.compile(r"[^{}\s]{1,200}")


def sha1(script: str) -> str:
    """The name EVALSHA knows ``script`` by."""
    return hashlib.sha1(script.encode()).hexdigest()


def check_key(key: str) -> str | None:
    """Why ``key`` cannot name a queue, or None."""
    if not _KEY.fullmatch(key):
        return "a key is 1 to 200 characters without spaces, '{' or '}'"
    return None


class Keys:
    """The names of queue ``key``'s keys, made once (they are on every call's path)."""

    def __init__(self, key: str) -> None:
        tag = "{" + key + "}"
        self.key = key
        self.queue = tag
        self.meta = tag + ":meta"  # hash: maxsize, unfinished, shutdown (1 graceful, 2 immediate)
        self.consumers = tag + ":consumers"
        self.room = tag + ":wake:room"
        self.joined = tag + ":wake:join"
        self.putters = tag + ":waiting:put"
        self.joiners = tag + ":waiting:join"
        self.dead = tag + ":dead"  # messages no getter could read, newest on the left

    def proc(self, consumer: str) -> str:
        return self.queue + ":proc:" + consumer

    def held(self, consumer: str) -> str:
        """Hash: ``n`` messages in the consumer's batch lists, ``refs`` of them in its proc."""
        return self.queue + ":held:" + consumer

    def batch(self, consumer: str, number: int) -> str:
        return f"{self.queue}:batch:{consumer}:{number}"

    def heartbeat(self, consumer: str) -> str:
        return self.queue + ":hb:" + consumer

    def seq(self, producer: str) -> str:
        return self.queue + ":seq:" + producer


# Wake-up tokens: a bounded list that expires, so tokens nobody took do not pile up.
_WAKE = f"""
local function wake(list, n, ttl)
  for i = 1, math.min(n, {WAKE_TOKENS}) do redis.call('LPUSH', list, 't') end
  redis.call('LTRIM', list, 0, {WAKE_TOKENS - 1})
  redis.call('PEXPIRE', list, ttl)
end
"""

# KEYS: meta. ARGV: maxsize ('' = not given). Returns the queue's maxsize.
ATTACH = """
local m = redis.call('HGET', KEYS[1], 'maxsize')
if m then return tonumber(m) end
local want = ARGV[1] == '' and 0 or tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'maxsize', want)
redis.call('HSETNX', KEYS[1], 'unfinished', 0)
return want
"""

# KEYS: queue, meta, seq, putters. ARGV: seq, seq ttl ms, maxsize, marker ttl ms, envelopes...
# Returns the count pushed (or already pushed by an earlier try of the same call), -1 shut down,
# -2 full.
PUT = """
if redis.call('HGET', KEYS[2], 'shutdown') then return -1 end
local last = redis.call('GET', KEYS[3])
local n = #ARGV - 4
if last and tonumber(last) >= tonumber(ARGV[1]) then return n end
local maxsize = tonumber(ARGV[3])
if maxsize > 0 and redis.call('LLEN', KEYS[1]) + n > maxsize then
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
  return -2
end
for i = 5, #ARGV, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('HINCRBY', KEYS[2], 'unfinished', n)
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
return n
"""

# After a native LPUSH of n envelopes in the same MULTI/EXEC (so nobody sees them before
# this runs): keep them, or take them off again. Redis passes a batch through a script's
# arguments at several times the cost of a native push (0.7 against 0.2 us an item).
# KEYS: queue, meta, seq, putters. ARGV: seq, seq ttl ms, maxsize, marker ttl ms, n.
# Returns what PUT returns.
PUSHED = """
local n = tonumber(ARGV[5])
local verdict = n
if redis.call('HGET', KEYS[2], 'shutdown') then
  verdict = -1
else
  local last = redis.call('GET', KEYS[3])
  if last and tonumber(last) >= tonumber(ARGV[1]) then
    redis.call('LTRIM', KEYS[1], n, -1)  -- an earlier try of the same call pushed them
    return n
  end
  local maxsize = tonumber(ARGV[3])
  if maxsize > 0 and redis.call('LLEN', KEYS[1]) > maxsize then
    redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
    verdict = -2
  end
end
if verdict < 0 then
  redis.call('LTRIM', KEYS[1], n, -1)
  return verdict
end
redis.call('HINCRBY', KEYS[2], 'unfinished', n)
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
return n
"""

# KEYS: queue, proc, meta, putters, room.
# ARGV: max items, sentinel, bounded (0/1), ttl ms, messages the caller took just before.
# Returns the messages taken, front first; or 1 (empty), or 2 (shut down and drained). The
# sentinel, when there, is at the back, behind every message: a pop that takes it puts it back.
# Bytes equal to it in a queue not shut down were pushed by some other program: a message.
GET = (
    _WAKE
    + """
local got = redis.call('RPOP', KEYS[1], ARGV[1])
if got and got[#got] == ARGV[2] and redis.call('HGET', KEYS[3], 'shutdown') then
  redis.call('LPUSH', KEYS[1], ARGV[2])
  got[#got] = nil
end
local n = (got and #got or 0) + tonumber(ARGV[5])
if n > 0 and ARGV[3] == '1' and redis.call('EXISTS', KEYS[4]) == 1 then
  wake(KEYS[5], n, ARGV[4])
end
if not got or #got == 0 then
  if redis.call('HGET', KEYS[3], 'shutdown') then return 2 end
  return 1
end
for i = 1, #got, 1000 do
  redis.call('LPUSH', KEYS[2], unpack(got, i, math.min(i + 999, #got)))
end
return got
"""
)

# A get_many's batch, copied by the server: passing messages through a script's values costs
# Redis several times a native copy (0.8 against 0.3 us a message). The caller reads the batch
# list with LRANGE in the same MULTI/EXEC.
# KEYS: queue, proc, meta, putters, room, batch, held. ARGV: max items, sentinel, bounded (0/1),
# ttl ms, the batch list's REF.
# Returns the count taken into the batch list; or -1 (empty), or -2 (shut down and drained).
GET_MANY = (
    _WAKE
    + """
local len = redis.call('LLEN', KEYS[1])
local n = len
if len > 0 and redis.call('LINDEX', KEYS[1], 0) == ARGV[2]
    and redis.call('HGET', KEYS[3], 'shutdown') then
  n = n - 1
end
n = math.min(n, tonumber(ARGV[1]))
if n <= 0 then
  if redis.call('HGET', KEYS[3], 'shutdown') then return -2 end
  return -1
end
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[4]) == 1 then wake(KEYS[5], n, ARGV[4]) end
redis.call('SORT', KEYS[1], 'BY', 'nosort', 'DESC', 'LIMIT', 0, n, 'STORE', KEYS[6])
redis.call('LTRIM', KEYS[1], 0, -n - 1)
redis.call('LPUSH', KEYS[2], ARGV[5])
redis.call('HINCRBY', KEYS[7], 'n', n)
redis.call('HINCRBY', KEYS[7], 'refs', 1)
return n
"""
)

# A getter that took the sentinel with BLMOVE puts it back at the back of the queue, where it
# wakes the next blocked getter; 0 if the queue is not shut down (a message some other program
# pushed, which the getter keeps). KEYS: queue, proc, meta. ARGV: sentinel.
RETURN_SENTINEL = """
if not redis.call('HGET', KEYS[3], 'shutdown') then return 0 end
redis.call('LREM', KEYS[2], 1, ARGV[1])
redis.call('LPUSH', KEYS[1], ARGV[1])
return 1
"""

# After a blocking move took one message: wake a waiting putter. KEYS: putters, room. ARGV: ttl.
MOVED = (
    _WAKE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then wake(KEYS[2], 1, ARGV[1]) end
return 1
"""
)

_DONE = """
local u = tonumber(redis.call('HGET', KEYS[2], 'unfinished') or '0')
if u <= 0 then return -1 end
u = redis.call('HINCRBY', KEYS[2], 'unfinished', -1)
if u == 0 and redis.call('EXISTS', KEYS[3]) == 1 then wake(KEYS[4], 64, ARGV[2]) end
return u
"""

# KEYS: proc, meta, joiners, joined. ARGV: envelope ('' for none), ttl ms.
# Returns unfinished left; -1 none were unfinished; -2 the message had been requeued.
ACK = (
    _WAKE
    + """
if ARGV[1] ~= '' and redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return -2 end
"""
    + _DONE
)

# The oldest message of a batch list, acknowledged. KEYS: proc, meta, joiners, joined, batch,
# held. ARGV: the batch list's REF, ttl ms. Returns as ACK.
ACK_BATCH = (
    _WAKE
    + """
if not redis.call('LPOP', KEYS[5]) then return -2 end
redis.call('HINCRBY', KEYS[6], 'n', -1)
if redis.call('EXISTS', KEYS[5]) == 0 then
  redis.call('LREM', KEYS[1], -1, ARGV[1])
  redis.call('HINCRBY', KEYS[6], 'refs', -1)
end
"""
    + _DONE
)

# KEYS: meta, joiners. ARGV: ttl ms. Returns unfinished (marking a joiner as waiting if any).
UNFINISHED = """
local u = tonumber(redis.call('HGET', KEYS[1], 'unfinished') or '0')
if u > 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[1]) end
return u
"""

# KEYS: queue, meta. ARGV: sentinel. Returns {qsize, unfinished, shutdown}.
SIZES = """
local n = redis.call('LLEN', KEYS[1])
local s = tonumber(redis.call('HGET', KEYS[2], 'shutdown') or '0')
if n > 0 and s > 0 and redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then n = n - 1 end
local u = tonumber(redis.call('HGET', KEYS[2], 'unfinished') or '0')
return {n, u, s}
"""

# KEYS: queue, meta, room, joined. ARGV: immediate (0/1), sentinel, ttl ms.
SHUTDOWN = (
    _WAKE
    + """
redis.call('LREM', KEYS[1], 0, ARGV[2])
local u = tonumber(redis.call('HGET', KEYS[2], 'unfinished') or '0')
if ARGV[1] == '1' then
  local n = redis.call('LLEN', KEYS[1])
  redis.call('DEL', KEYS[1])
  u = math.max(0, u - n)
  redis.call('HSET', KEYS[2], 'shutdown', 2, 'unfinished', u)
elseif not redis.call('HGET', KEYS[2], 'shutdown') then
  redis.call('HSET', KEYS[2], 'shutdown', 1)
end
redis.call('LPUSH', KEYS[1], ARGV[2])
wake(KEYS[3], 64, ARGV[3])
if u == 0 then wake(KEYS[4], 64, ARGV[3]) end
return u
"""
)

# Give a consumer's unacknowledged messages back, oldest at the front, each with its delivery
# count raised; after an immediate shutdown they are discarded and count as done instead.
# KEYS: queue, meta, consumers, heartbeat, proc, joiners, joined, held, the batch lists its
# proc list names. ARGV: consumer id, sentinel, force (1: even with a live heartbeat), ttl ms.
# Returns the number of messages given back (or discarded); -1 the consumer is alive; -3 its
# proc list names a batch list not given (read it again).
RECOVER = (
    _WAKE
    + f"""
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
local declared = {{}}
for i = 9, #KEYS do declared[KEYS[i]] = true end
for _, m in ipairs(redis.call('LRANGE', KEYS[5], 0, -1)) do
  local named = string.sub(m, {len(REF) + 1})
  if string.sub(m, 1, {len(REF)}) == '{_REF_LUA}' and not declared[named] then return -3 end
end
local discard = redis.call('HGET', KEYS[2], 'shutdown') == '2'
local moved = 0
local function give(m)
  moved = moved + 1
  if discard then return end
  if string.sub(m, 1, {len(MAGIC)}) == '{_MAGIC_LUA}' then
    local d = math.min(string.byte(m, {HEADER}) + 1, 255)
    m = string.sub(m, 1, {HEADER - 1}) .. string.char(d) .. string.sub(m, {HEADER + 1})
  end
  redis.call('RPUSH', KEYS[1], m)
end
while true do
  local m = redis.call('LPOP', KEYS[5])
  if not m then break end
  if string.sub(m, 1, {len(REF)}) == '{_REF_LUA}' then
    local batch = string.sub(m, {len(REF) + 1})
    while true do
      local e = redis.call('RPOP', batch)
      if not e then break end
      give(e)
    end
  elseif m ~= ARGV[2] then
    give(m)
  end
end
if discard and moved > 0 then
  local u = math.max(0, tonumber(redis.call('HGET', KEYS[2], 'unfinished') or '0') - moved)
  redis.call('HSET', KEYS[2], 'unfinished', u)
  if u == 0 then wake(KEYS[7], 64, ARGV[4]) end
end
redis.call('DEL', KEYS[4], KEYS[8])
redis.call('SREM', KEYS[3], ARGV[1])
return moved
"""
)

# What a getter took and will not return: the unreadable messages go to the dead-letter list,
# the others back to the front of the queue, as they were. A message pushed by something other
# than queuekit was never counted as unfinished, one a queuekit handle put was: which one this
# is cannot be told, but the count can never be above what is queued and in flight, so it is
# cut down to that (exact once no unread foreign message is left anywhere).
# KEYS: queue, meta, consumers, dead, proc, joiners, joined, batch list (or proc again), held,
# then the proc list and held hash of every consumer.
# ARGV: ttl ms, sentinel, consumers n, their ids..., REF of the batch list ('' for none), bad n,
# bad..., back (front first)... In a batch list they are its newest messages.
# Returns the number dead-lettered; -1 the consumers changed meanwhile (ask again).
DEAD_LETTER = (
    _WAKE
    + """
local n = tonumber(ARGV[3])
if redis.call('SCARD', KEYS[3]) ~= n then return -1 end
for i = 4, 3 + n do
  if redis.call('SISMEMBER', KEYS[3], ARGV[i]) == 0 then return -1 end
end
local ref = ARGV[4 + n]
local first = 6 + n
local last_bad = first + tonumber(ARGV[5 + n]) - 1
local moved = 0
if ref ~= '' then
  local taken = 0
  for i = #ARGV, last_bad + 1, -1 do
    local m = redis.call('RPOP', KEYS[8])
    if m then redis.call('RPUSH', KEYS[1], m); taken = taken + 1 end
  end
  for i = first, last_bad do
    local m = redis.call('RPOP', KEYS[8])
    if m then redis.call('LPUSH', KEYS[4], m); taken = taken + 1; moved = moved + 1 end
  end
  if taken > 0 then redis.call('HINCRBY', KEYS[9], 'n', -taken) end
  if redis.call('EXISTS', KEYS[8]) == 0 and redis.call('LREM', KEYS[5], -1, ref) == 1 then
    redis.call('HINCRBY', KEYS[9], 'refs', -1)
  end
else
  for i = first, last_bad do
    if redis.call('LREM', KEYS[5], -1, ARGV[i]) == 1 then
      redis.call('LPUSH', KEYS[4], ARGV[i])
      moved = moved + 1
    end
  end
  for i = #ARGV, last_bad + 1, -1 do
    if redis.call('LREM', KEYS[5], -1, ARGV[i]) == 1 then redis.call('RPUSH', KEYS[1], ARGV[i]) end
  end
end
local held = redis.call('LLEN', KEYS[1])
if held > 0 and redis.call('LINDEX', KEYS[1], 0) == ARGV[2]
    and redis.call('HGET', KEYS[2], 'shutdown') then
  held = held - 1
end
for i = 10, #KEYS, 2 do
  local h = redis.call('HMGET', KEYS[i + 1], 'n', 'refs')
  held = held + redis.call('LLEN', KEYS[i]) + tonumber(h[1] or '0') - tonumber(h[2] or '0')
end
local u = tonumber(redis.call('HGET', KEYS[2], 'unfinished') or '0')
if u > held then
  redis.call('HSET', KEYS[2], 'unfinished', held)
  if held == 0 and redis.call('EXISTS', KEYS[6]) == 1 then wake(KEYS[7], 64, ARGV[1]) end
end
return moved
"""
)

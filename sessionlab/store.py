"""The session store: a session is ONE Redis hash, so it expires and is evicted whole.

Layout of one session with id ``abc`` under the prefix ``session``::

    session:{abc}        hash   p:<name> -> JSON of that top-level profile value
                                c:<sku>  -> quantity (an integer, changed with HINCRBY)
                                _c created (epoch s), _a absolute deadline (epoch ms),
                                _i idle timeout (s), _u user id (only if linked)
                         expiry min(last load/touch + idle timeout, absolute deadline)
    session:user:{U001}  zset   the user's session ids, each scored by its session's current
                                expiry (epoch ms, what PEXPIRETIME says); expires with the
                                highest score, so it never outlives the sessions it lists

Why one hash: profile and cart live and die together (expiry, eviction, DEL), a profile field
or a cart item changes alone (no lost update between concurrent requests), and measured with
``MEMORY USAGE`` (43-character id, seed profile + 3-item cart) it takes 296 bytes on Redis 7.0
and 272 on Valkey 9.1, against 264 / 256 for the same data as one JSON string (1.12x / 1.06x),
and nothing else: no second key per session.

Every write is one short Lua script on one key's hash slot (the ``{abc}`` hash tag), so it is
atomic and runs unchanged on Redis Cluster. Redis's clock decides every expiry: ``create``
reads ``TIME`` once to set the absolute deadline; a load or touch slides the expiry with
``PEXPIRE`` (idle timeout) then ``PEXPIREAT ... LT`` (never past the deadline). Nothing is
written to remember the last visit: ``last_seen_at`` is the expiry minus the idle timeout.
Writes are applied at most once because the clients sessionlab hands out never send a command
again once it may have reached Redis (:mod:`sessionlab.retry`); a write whose reply is lost
raises :class:`~sessionlab.errors.WriteOutcomeUnknown` instead of being sent twice.

A user's index is kept exact by the same scripts: whatever sets a linked session's expiry
(create, load, touch, rotate) scores it with that expiry and sets the index's expiry to the
highest score; whatever ends one (delete, logout_everywhere, the per-user limit) removes it and
does the same, and an index with no member left is gone. So once the last session has expired,
by idle timeout or deadline, no index key is left, with no SCAN and no keyspace notification;
entries of sessions that died meanwhile (score < now) are pruned when the user logs in or lists
their sessions. On Redis Cluster a user's sessions are drawn in the hash slot of the user's
index (``store.new_id(user_id=...)``; ``create`` refuses an id of another slot), so the session
and its index change in one script on one slot; only a login that moves an anonymous session
into the user's slot takes three resumable steps (:meth:`SessionStore.rotate`). Anonymous
sessions pay nothing for any of it.
"""

from __future__ import annotations

import binascii
import hashlib
import inspect
import json
import math
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.exceptions as rex
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster

from .errors import (
    CorruptSession,
    InvalidCartItem,
    InvalidSessionId,
    InvalidStoreSetting,
    InvalidTTL,
    InvalidUserId,
    StoreFull,
    StoreReadOnly,
    UnserializableData,
    UnsupportedClient,
    WriteOutcomeUnknown,
)
from .retry import NotSent

DEFAULT_TTL = 3600  # the seed's create_session(..., expiration_seconds=3600)
IDLE_TTL = 1800
ABSOLUTE_TTL = 8 * 3600
MAX_TTL = 2**31 - 1
MAX_QUANTITY = 1_000_000
MAX_DEPTH = 64  # nesting levels of a profile value; checked without recursion
MAX_INT_DIGITS = 4000  # below Python's int <-> str limit (4300), so every int reads back
SESSION_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
USER_ID = SESSION_ID
SKU = re.compile(r"[A-Za-z0-9_.:@#/+-]{1,64}")
PLAIN_NAME = re.compile(r"[A-Za-z0-9_ .:@-]*")  # profile keys that JSON needs no escape for
PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
CHUNK = 1000  # arguments per HSET/HDEL in a script (Lua's unpack has a stack limit); even

# -- Lua -------------------------------------------------------------------------------------
# Every script is as short as its job allows: a script's cost inside Redis is mostly its calls.
# A script declares the keys it is called for; the user index of a linked session (found in its
# _u field) and the sessions an index lists are built from the key names, in the script. On Redis
# Cluster those keys are in the same hash slot by construction (a user's sessions are drawn in
# the slot of the user's index: ``new_id(user_id=...)``), and a ``#!lua`` script may touch an
# undeclared key of its own slot (a key of another slot is refused, on Redis 7.0 and Valkey 9.1).
#
# A session's key without _a: one moved away by a cross-slot rotate (see MARK) has a _m field and
# is gone; anything else was not written by the store, which refuses it (CORRUPT).
NOT_OURS = "redis.call('EXISTS', KEYS[1]) == 1 and redis.call('HEXISTS', KEYS[1], '_m') == 0"
NO_DEADLINE = "redis.error_reply('CORRUPT the hash has no _a (deadline) field')"
#
# Helpers, put in front of the scripts that call them (each costs a closure per call, so the
# load path, the hot one, inlines what it needs instead). Is the session KEYS[1] live (one
# HEXISTS)? For scripts that find out midway, after reading other fields.
ALIVE = f"""
local function alive()
  if redis.call('HEXISTS', KEYS[1], '_a') == 1 then return true end
  if {NOT_OURS} then error({NO_DEADLINE}) end
  return false
end
"""
# The same check inlined at the top of the writes that begin with it (a closure costs ~1 us a
# call in Redis, measured on add to cart): returns GONE if the session is gone.
UNLESS_ALIVE = f"""
if redis.call('HEXISTS', KEYS[1], '_a') == 0 then
  if {NOT_OURS} then return {NO_DEADLINE} end
  return GONE
end
"""
# ... HSET/HDEL of many arguments in chunks (Lua's unpack has a stack limit) ...
EACH = """
local function each(command, key, list, first, last)
  for i = first, last, CHUNK do
    redis.call(command, key, unpack(list, i, math.min(i + CHUNK - 1, last)))
  end
end
"""
# ... a session key 'P:{id}' -> its user's index 'P:user:{U}', the id, the prefix ...
INDEX_OF = """
local function index_of(key, user)
  local prefix, id = string.match(key, '^(.*):{(.*)}$')
  return prefix .. ':user:{' .. user .. '}', id, prefix
end
"""
# ... the index expires with the latest expiry it lists (its highest score). Set, not raised:
# PEXPIREAT ... GT would do nothing on a key without expiry. An index whose last member is gone
# is gone too (Redis deletes an empty sorted set).
SETTLE = """
local function settle(index)
  local top = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', index, top[2]) end
end
"""
UNLIST = """
local function unlist(key, user)
  local index, id = index_of(key, user)
  redis.call('ZREM', index, id)
  settle(index)
end
"""
# ... and after a session joined an index: drop the entries of dead sessions (score < now), end
# the oldest-created live sessions beyond ``most`` ('' for no limit), never ``keep``. Cost: the
# user's sessions, read only when there are more than the limit.
TRIM = """
local function trim(index, keep, most, now)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. now)
  local ids = redis.call('ZRANGE', index, 0, -1)
  if most ~= '' and #ids > tonumber(most) then
    local prefix = string.match(index, '^(.*):user:{')
    local live = {}
    for _, id in ipairs(ids) do
      local m = redis.pcall('HMGET', prefix .. ':{' .. id .. '}', '_c', '_a')
      if type(m) == 'table' and m[2] then
        live[#live + 1] = {tonumber(m[1]) or 0, tonumber(m[2]) or 0, id}
      else
        redis.call('ZREM', index, id)
      end
    end
    table.sort(live, function(x, y)
      if x[1] ~= y[1] then return x[1] < y[1] end
      if x[2] ~= y[2] then return x[2] < y[2] end
      return x[3] < y[3]
    end)
    local over = #live - tonumber(most)
    for _, s in ipairs(live) do
      if over <= 0 then break end
      if s[3] ~= keep then
        redis.call('DEL', prefix .. ':{' .. s[3] .. '}')
        redis.call('ZREM', index, s[3])
        over = over - 1
      end
    end
  end
  settle(index)
end
"""
HELPERS = {
    "alive": ALIVE,
    "each": EACH,
    "index_of": INDEX_OF,
    "settle": SETTLE,
    "unlist": UNLIST,
    "trim": TRIM,
}

# Inlined where a linked session's expiry changed (load, touch): its index entry is scored with
# the new expiry, and the index expires with the latest. ``user`` is the session's _u field.
RESCORE = """
if user then
  local prefix, id = string.match(KEYS[1], '^(.*):{(.*)}$')
  local index = prefix .. ':user:{' .. user .. '}'
  local expiry = redis.call('PEXPIRETIME', KEYS[1])
  if expiry < 0 then redis.call('ZREM', index, id) else redis.call('ZADD', index, expiry, id) end
  local top = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', index, top[2]) end
end
"""

# KEYS[1] session, KEYS[2] its user's index (linked only). ARGV: idle s, absolute s, user id or
# '', max sessions per user or '', pairs... The server's clock (TIME) sets the absolute deadline
# once; every later expiry is relative to it or capped by it. A session this replaces leaves the
# index of the user it had.
CREATE = """
local old = redis.pcall('HGET', KEYS[1], '_u')
redis.call('DEL', KEYS[1])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local deadline = now + ARGV[2] * 1000
local fields = {'_c', t[1], '_a', deadline, '_i', ARGV[1]}
if ARGV[3] ~= '' then fields[7], fields[8] = '_u', ARGV[3] end
local last = math.min(#ARGV, 4 + CHUNK)  -- CHUNK is even: whole field/value pairs
for i = 5, last do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
each('HSET', KEYS[1], ARGV, last + 1, #ARGV)
local expiry = math.min(now + ARGV[1] * 1000, deadline)
redis.call('PEXPIREAT', KEYS[1], expiry)
if type(old) == 'string' and old ~= ARGV[3] then unlist(KEYS[1], old) end
if ARGV[3] ~= '' then
  local id = string.match(KEYS[1], ':{(.*)}$')
  redis.call('ZADD', KEYS[2], expiry, id)
  trim(KEYS[2], id, ARGV[4], now)
end
return deadline
"""

# KEYS[1] session. Slides the idle expiry without reading the clock: PEXPIRE to the idle
# timeout, then PEXPIREAT ... LT caps it at the absolute deadline (and deletes the key once the
# deadline has passed). Returns {ms left, expiry (epoch ms), HGETALL's flat array}: the client
# parses the fields (faster than building JSON in Lua); now = expiry - ms left. The meta fields
# come from that same HGETALL (a loop over the names is cheaper than one more HMGET, whose miss
# on _u would scan an anonymous session's whole hash): an anonymous session costs less than it
# did before the index followed expiries (measured: python -m sessionlab.bench).
LOAD = (
    """
local f = redis.call('HGETALL', KEYS[1])
local deadline, idle, user
for i = 1, #f, 2 do
  local name = f[i]
  if name == '_a' then
    deadline = f[i + 1]
  elseif name == '_i' then
    idle = f[i + 1]
  elseif name == '_u' then
    user = f[i + 1]
  end
end
if not deadline then
  if #f > 0 and redis.call('HEXISTS', KEYS[1], '_m') == 0 then return """
    + NO_DEADLINE
    + """ end
  return false
end
idle = tonumber(idle)
if not idle then return redis.error_reply('CORRUPT the _i (idle timeout) field is not a number') end
redis.call('PEXPIRE', KEYS[1], idle * 1000)
redis.call('PEXPIREAT', KEYS[1], deadline, 'LT')
"""
    + RESCORE
    + """
local left = redis.call('PTTL', KEYS[1])
if left < 0 then return false end
return {left, redis.call('PEXPIRETIME', KEYS[1]), f}
"""
)

# KEYS[1] session. The same reply as LOAD, changing nothing (get, get_cart). A moved session
# (_m, no _a) is answered as gone by the client's parser.
READ = """
local f = redis.call('HGETALL', KEYS[1])
if #f == 0 then return false end
return {redis.call('PTTL', KEYS[1]), redis.call('PEXPIRETIME', KEYS[1]), f}
"""

# KEYS[1] session. ARGV[1] seconds, or '' for the session's own idle timeout.
TOUCH = (
    """
local m = redis.call('HMGET', KEYS[1], '_a', '_i', '_u')
if not m[1] then
  alive()
  return 0
end
local user = m[3]
local idle = tonumber(m[2])
if ARGV[1] ~= '' then idle = tonumber(ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], idle * 1000)
redis.call('PEXPIREAT', KEYS[1], m[1], 'LT')
"""
    + RESCORE
    + """
return redis.call('EXISTS', KEYS[1])
"""
)

# KEYS[1] session. ARGV: p:<name>/JSON pairs.
UPDATE = (
    UNLESS_ALIVE.replace("GONE", "0")
    + """
local old = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, 1, 2) == 'p:' then old[#old + 1] = name end
end
each('HDEL', KEYS[1], old, 1, #old)
each('HSET', KEYS[1], ARGV, 1, #ARGV)
return 1
"""
)

# ARGV: number n of fields to remove, the n fields, then p:<name>/JSON pairs to set.
PATCH = (
    UNLESS_ALIVE.replace("GONE", "0")
    + """
local n = tonumber(ARGV[1])
each('HDEL', KEYS[1], ARGV, 2, 1 + n)
each('HSET', KEYS[1], ARGV, 2 + n, #ARGV)
return 1
"""
)

# ARGV: c:<sku>, quantity to add. A value that is not a number stops the script before it
# writes anything; an add past MAX_QUANTITY is undone (the limit is part of the text).
ADD_TO_CART = (
    UNLESS_ALIVE.replace("GONE", "false")
    + """
local q = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if q > MAX_QUANTITY then
  q = redis.call('HINCRBY', KEYS[1], ARGV[1], -ARGV[2])
  if q == 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
  return redis.error_reply('QUANTITY ' .. q)
end
return q
"""
)

# ARGV: c:<sku>, quantity to remove or '' for all of it.
REMOVE_FROM_CART = (
    UNLESS_ALIVE.replace("GONE", "false")
    + """
if ARGV[2] ~= '' then
  local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -ARGV[2])
  if left > 0 then return left end
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 0
"""
)

# ARGV: c:<sku>, quantity (0 removes the item).
SET_QUANTITY = (
    UNLESS_ALIVE.replace("GONE", "false")
    + """
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return tonumber(ARGV[2])
"""
)

# KEYS[1] session. Deletes it and its entry in its user's index; 1 if there was a session (a
# moved one, see MARK, is deleted but was gone already: 0).
DELETE = """
local m = redis.pcall('HMGET', KEYS[1], '_u', '_m')
local deleted = redis.call('DEL', KEYS[1])
if type(m) ~= 'table' then return deleted end
if m[1] then unlist(KEYS[1], m[1]) end
if m[2] then return 0 end
return deleted
"""

# KEYS[1] old session, KEYS[2] the new one (a fresh random id in the same slot), KEYS[3] the
# index of ARGV[1], a user id to link the session to ('': keep its link, if any); ARGV[2] max
# sessions per user or ''. RENAME keeps every field (profile, cart, user, created, deadline) and
# the expiry; the index entry moves to the new id with the same score. If the old id is gone but
# the new one exists, this ran already: done.
ROTATE = """
local m = redis.call('HMGET', KEYS[1], '_a', '_u')
if not m[1] then
  alive()
  return redis.call('EXISTS', KEYS[2])
end
redis.call('RENAME', KEYS[1], KEYS[2])
local user = m[2]
if ARGV[1] ~= '' then
  user = ARGV[1]
  redis.call('HSET', KEYS[2], '_u', user)
end
if m[2] then
  local index, id = index_of(KEYS[1], m[2])
  redis.call('ZREM', index, id)
  if m[2] ~= user then settle(index) end
end
if user then
  local index, id = index_of(KEYS[2], user)
  redis.call('ZADD', index, redis.call('PEXPIRETIME', KEYS[2]), id)
  if user == m[2] then
    settle(index)
  else
    local t = redis.call('TIME')
    trim(index, id, ARGV[2] or '', t[1] * 1000 + math.floor(t[2] / 1000))
  end
end
return 1
"""

# A login rotate on Redis Cluster whose new id must live in another slot (the user's) than the
# old one: three steps, each one script on one slot (see SessionStore.rotate).
# Step 1, KEYS[1] the old session. ARGV: a fresh id in the user's slot, the user id. Marks the
# session moved: _a (its deadline) becomes _d, _m names the new id, _t the user; from then on
# every read and write finds it gone. Leaves the index of the user it had. Returns {new id,
# expiry, the new session's fields}; run again (a resume), it returns the id recorded first.
MARK = """
local m = redis.call('HMGET', KEYS[1], '_a', '_u', '_m', '_t')
if m[1] then
  redis.call('HDEL', KEYS[1], '_a', '_u')
  redis.call('HSET', KEYS[1], '_m', ARGV[1], '_t', ARGV[2], '_d', m[1])
  if m[2] then unlist(KEYS[1], m[2]) end
elseif not m[3] then
  alive()
  return false
elseif m[4] ~= ARGV[2] then
  return false
end
local f = redis.call('HGETALL', KEYS[1])
local fields, id = {'_u', ARGV[2]}, false
for i = 1, #f, 2 do
  if f[i] == '_m' then
    id = f[i + 1]
  elseif f[i] == '_d' then
    fields[#fields + 1], fields[#fields + 2] = '_a', f[i + 1]
  elseif f[i] ~= '_t' then
    fields[#fields + 1], fields[#fields + 2] = f[i], f[i + 1]
  end
end
return {id, redis.call('PEXPIRETIME', KEYS[1]), fields}
"""

# Step 2, KEYS[1] the new session, KEYS[2] its user's index. ARGV: expiry (epoch ms), max
# sessions per user or '', field/value pairs. Writes the session (unless it is there: a resume)
# with the old one's expiry, lists it, trims. 0 if that expiry has passed meanwhile.
MOVE_IN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if tonumber(ARGV[1]) <= now then return 0 end
each('HSET', KEYS[1], ARGV, 3, #ARGV)
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
local id = string.match(KEYS[1], ':{(.*)}$')
redis.call('ZADD', KEYS[2], ARGV[1], id)
trim(KEYS[2], id, ARGV[2], now)
return 1
"""

# Step 3, KEYS[1] the old session. ARGV[1] the new id: deletes the old key if it still records
# that move.
FINISH = """
if redis.pcall('HGET', KEYS[1], '_m') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] a user's index. For each session it lists: {id, _c, _i, _a, ms left, expiry}; the
# entries of sessions that are gone are dropped, a score that drifted from its session's expiry
# is set again, and the index expires with the latest.
LIST = """
local prefix = string.match(KEYS[1], '^(.*):user:{')
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local live = {}
for i = 1, #entries, 2 do
  local id = entries[i]
  local key = prefix .. ':{' .. id .. '}'
  local m = redis.pcall('HMGET', key, '_c', '_i', '_a')
  local expiry = redis.call('PEXPIRETIME', key)
  if type(m) == 'table' and m[1] and m[2] and m[3] and expiry >= 0 then
    if tonumber(entries[i + 1]) ~= expiry then redis.call('ZADD', KEYS[1], expiry, id) end
    live[#live + 1] = {id, m[1], m[2], m[3], redis.call('PTTL', key), expiry}
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
settle(KEYS[1])
return live
"""

# KEYS[1] a user's index. ARGV[1] a session id to keep, or ''. Ends every other session it
# lists; the index keeps only ``keep`` (and expires with it) or is gone. How many were ended.
LOGOUT = """
local prefix = string.match(KEYS[1], '^(.*):user:{')
local ended = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if id ~= ARGV[1] then
    ended = ended + redis.call('DEL', prefix .. ':{' .. id .. '}')
    redis.call('ZREM', KEYS[1], id)
  end
end
settle(KEYS[1])
return ended
"""


# Declared flags (Redis 7.0+): a write script is refused whole, before it runs, when Redis is
# out of memory or cannot save to disk; reads run then, and so do deletes, which free memory
# (and the index upkeep that goes with them: ZREM, PEXPIREAT).
_DELETES = "#!lua flags=allow-oom"
FLAGS = {
    "read": "#!lua flags=no-writes",
    "delete": _DELETES,
    "finish": _DELETES,
    "list": _DELETES,
    "logout": _DELETES,
}


def _lua(name: str, body: str) -> str:
    """The script's full text: its flags, the helpers it calls (and those they call), its
    body."""
    needed = body
    helpers = []
    for helper, source in reversed(HELPERS.items()):  # a helper calls only those before it
        if re.search(rf"\b{helper}\(", needed):
            helpers.insert(0, source)
            needed += source
    text = FLAGS.get(name, "#!lua") + "\n" + "".join(helpers) + body
    return text.replace("CHUNK", str(CHUNK)).replace("MAX_QUANTITY", str(MAX_QUANTITY))


def random_id() -> str:
    """A fresh, unguessable session id: 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Session:
    """One session as :meth:`SessionStore.load` read it, in one round trip."""

    session_id: str
    profile: dict[str, Any]
    cart: dict[str, int]
    ttl: int  # seconds left
    user_id: str | None
    created_at: int  # epoch seconds (server clock)
    last_seen_at: int  # epoch seconds: this load, for load(); the last load/touch, for get


@dataclass(frozen=True)
class SessionInfo:
    """One entry of :meth:`SessionStore.sessions_of`: a user's device list."""

    session_id: str
    created_at: int
    last_seen_at: int
    ttl: int


class SessionStore:
    """Sessions (profile + cart) in Redis, each one hash that expires as a whole.

    A session expires ``idle_ttl`` seconds after its last :meth:`load`/:meth:`touch`, and at
    the latest ``absolute_ttl`` seconds after it was created, whatever happens: Redis enforces
    it (the key's expiry never reaches past the deadline). ``default_ttl`` is an alias of
    ``idle_ttl``. ``client`` may be a ``redis.Redis`` or ``redis.cluster.RedisCluster``, with or
    without ``decode_responses``; asyncio clients are refused.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "session",
        idle_ttl: int = IDLE_TTL,
        absolute_ttl: int = ABSOLUTE_TTL,
        max_sessions_per_user: int | None = None,
        *,
        default_ttl: int | None = None,
    ) -> None:
        check_client(client)
        if not isinstance(prefix, str) or not PREFIX.fullmatch(str.__str__(prefix)):
            raise InvalidStoreSetting(
                f"prefix={prefix!r:.80}: use 1-64 letters, digits or - _ . : "
                "(no braces or spaces), e.g. 'session'."
            )
        if max_sessions_per_user is not None and (
            isinstance(max_sessions_per_user, bool)
            or not isinstance(max_sessions_per_user, int)
            or not 1 <= max_sessions_per_user <= 10_000
        ):
            raise InvalidStoreSetting(
                f"max_sessions_per_user={max_sessions_per_user!r:.40}: use a whole number "
                "from 1 to 10000, or None for no limit."
            )
        self.client = client
        self.prefix = str.__str__(prefix)
        self.idle_ttl = check_ttl(idle_ttl if default_ttl is None else default_ttl)
        self.absolute_ttl = check_ttl(absolute_ttl)
        self.max_sessions_per_user = (
            None if max_sessions_per_user is None else int.__int__(max_sessions_per_user)
        )
        self._limit = "" if self.max_sessions_per_user is None else str(self.max_sessions_per_user)
        self._cluster = isinstance(client, RedisCluster)
        scripts = {
            "create": CREATE,
            "read": READ,
            "load": LOAD,
            "touch": TOUCH,
            "update": UPDATE,
            "patch": PATCH,
            "add": ADD_TO_CART,
            "remove": REMOVE_FROM_CART,
            "set": SET_QUANTITY,
            "delete": DELETE,
            "rotate": ROTATE,
            "mark": MARK,
            "move_in": MOVE_IN,
            "finish": FINISH,
            "list": LIST,
            "logout": LOGOUT,
        }
        self._scripts = {
            name: client.register_script(_lua(name, source)) for name, source in scripts.items()
        }
        self._execute = client.execute_command
        self._pipeline = isinstance(client, Pipeline | ClusterPipeline)

    @property
    def default_ttl(self) -> int:
        """Alias of :attr:`idle_ttl` (the seed-era name)."""
        return self.idle_ttl

    def __repr__(self) -> str:
        return (
            f"SessionStore(prefix={self.prefix!r}, idle_ttl={self.idle_ttl}, "
            f"absolute_ttl={self.absolute_ttl}, "
            f"max_sessions_per_user={self.max_sessions_per_user})"
        )

    # -- keys --------------------------------------------------------------------------

    def key(self, session_id: str) -> str:
        """The session's key, e.g. ``session:{abc}``."""
        return f"{self.prefix}:{{{check_session_id(session_id)}}}"

    def user_key(self, user_id: str) -> str:
        """The key listing a user's sessions, e.g. ``session:user:{U001}``."""
        return f"{self.prefix}:user:{{{check_user_id(user_id)}}}"

    def new_id(self, user_id: str | None = None) -> str:
        """A fresh, unguessable session id: 256 random bits, URL-safe (43 characters).

        On Redis Cluster, an id for a session of ``user_id`` is drawn in the hash slot of that
        user's index (still 240 random bits, 43 characters), so that one script keeps both; a
        session created with a user needs such an id there. On one server any id works, and
        :func:`random_id` makes one without a store.
        """
        if user_id is None or not self._cluster:
            if user_id is not None:
                check_user_id(user_id)
            return random_id()
        return _id_in_slot(_tag_slot(check_user_id(user_id)))

    def load_scripts(self) -> None:
        """Send every script of the store to Redis now (``SCRIPT LOAD``).

        Optional: a script Redis does not know yet is answered NOSCRIPT (not run) and loaded on
        first use. Loading them up front, e.g. after a restart or failover, saves those round
        trips, and a write whose reply is then lost was run, not refused as NOSCRIPT.
        """
        for script in self._scripts.values():
            script.sha = self.client.script_load(script.script)

    # -- CRUD --------------------------------------------------------------------------

    def create(
        self,
        session_id: str,
        data: Mapping[str, Any],
        ttl: int | None = None,
        user_id: str | None = None,
    ) -> bool:
        """Store a new session (replacing any old one, cart included).

        ``ttl`` is this session's idle timeout (default: the store's ``idle_ttl``); the absolute
        deadline is ``absolute_ttl`` from now. ``user_id`` links it to a user
        (:meth:`sessions_of`, :meth:`logout_everywhere`, ``max_sessions_per_user``) in the same
        script: the user's index lists it, and the oldest sessions beyond the limit end.
        On Redis Cluster a linked session's id must be in its user's hash slot: make it with
        ``store.new_id(user_id=...)``.
        """
        key = self.key(session_id)
        fields = profile_fields(data)
        seconds = self.idle_ttl if ttl is None else check_ttl(ttl)
        keys = [key]
        user = ""
        if user_id is not None:
            user = check_user_id(user_id)
            keys.append(self.user_key(user))
            if self._cluster and _tag_slot(str.__str__(session_id)) != _tag_slot(user):
                raise InvalidSessionId(
                    f"session id {fingerprint(str.__str__(session_id))} is in hash slot "
                    f"{_tag_slot(str.__str__(session_id))}, but on Redis Cluster the sessions of "
                    f"user {user!r} live in slot {_tag_slot(user)}, with the index that lists "
                    f"them; nothing was written. Make the id with store.new_id(user_id={user!r})."
                )
        args = (seconds, self.absolute_ttl, user, self._limit, *fields)
        self._run("create", len(keys), *keys, *args, write="creation")
        return True

    def get(self, session_id: str) -> dict[str, Any] | None:
        """The session's profile, or ``None`` if it does not exist; does not slide the expiry."""
        session = self._read(session_id, slide=False)
        return None if session is None else session.profile

    def load(self, session_id: str) -> Session | None:
        """The whole session (profile, cart, TTL, user, times) in ONE round trip, sliding its
        idle expiry (never past its absolute deadline); ``None`` if it does not exist."""
        return self._read(session_id, slide=True)

    def update(self, session_id: str, data: Mapping[str, Any]) -> bool:
        """Replace the whole profile (the cart stays), keeping the TTL; ``False`` if gone.

        Concurrent requests that change different fields should use :meth:`patch`.
        """
        key = self.key(session_id)
        fields = profile_fields(data)
        return bool(self._run("update", 1, key, *fields, write="profile update"))

    def patch(
        self, session_id: str, changes: Mapping[str, Any], remove: Iterable[str] = ()
    ) -> bool:
        """Set the top-level profile fields in ``changes`` and delete those in ``remove``, in
        one atomic step that keeps the TTL; other fields are untouched. ``False`` if gone."""
        key = self.key(session_id)
        fields = profile_fields(changes)
        if isinstance(remove, str | bytes):
            raise UnserializableData(
                f"remove={remove!r:.40} must be a list of field names, not one string: "
                f"write remove=[{remove!r:.40}]."
            )
        gone = [f"p:{_field_name(name, 'remove')}" for name in remove]
        return bool(self._run("patch", 1, key, len(gone), *gone, *fields, write="profile change"))

    def delete(self, session_id: str) -> bool:
        """Delete the session (profile and cart); ``False`` if there was nothing to delete."""
        key = self.key(session_id)
        return bool(self._run("delete", 1, key, write="deletion"))

    # -- expiry ------------------------------------------------------------------------

    def ttl(self, session_id: str) -> int | None:
        """Seconds until the session expires; ``None`` if absent, ``-1`` if it never expires."""
        key = self.key(session_id)
        try:
            if not self._cluster:
                seconds = self.client.ttl(key)
            else:  # only there can a session be half-way through a move (rotate): then gone
                pipe = self.client.pipeline(transaction=False)
                pipe.ttl(key)
                pipe.hexists(key, "_m")
                seconds, moved = pipe.execute()
                seconds = -2 if moved else seconds
        except _FAILURES as error:
            raise _translated(error, key)  # noqa: B904 (_translated sets the chaining)
        return None if seconds == -2 else seconds

    def touch(self, session_id: str, ttl: int | None = None) -> bool:
        """Restart the idle clock (``ttl`` seconds, default the session's idle timeout), never
        past the absolute deadline; ``False`` if the session is gone."""
        key = self.key(session_id)
        seconds = "" if ttl is None else check_ttl(ttl)
        return bool(self._run("touch", 1, key, seconds, write="touch"))

    # -- cart --------------------------------------------------------------------------

    def add_to_cart(self, session_id: str, sku: str, quantity: int = 1) -> int | None:
        """Add ``quantity`` of ``sku``; the new quantity, or ``None`` if the session is gone."""
        key = self.key(session_id)
        field = "c:" + check_sku(sku)
        amount = check_quantity(quantity)
        result = self._run("add", 1, key, field, amount, write="cart add", sku=sku)
        return None if result is None else int(result)

    def remove_from_cart(
        self, session_id: str, sku: str, quantity: int | None = None
    ) -> int | None:
        """Remove ``quantity`` of ``sku`` (all of it if ``None``).

        Returns the quantity left (0 once the item is gone), or ``None`` if the session is gone.
        """
        key = self.key(session_id)
        field = "c:" + check_sku(sku)
        amount = "" if quantity is None else check_quantity(quantity)
        result = self._run("remove", 1, key, field, amount, write="cart removal", sku=sku)
        return None if result is None else int(result)

    def set_quantity(self, session_id: str, sku: str, quantity: int) -> int | None:
        """Set the quantity of ``sku`` (0 removes it); ``quantity``, or ``None`` if gone."""
        key = self.key(session_id)
        field = "c:" + check_sku(sku)
        amount = check_quantity(quantity, lowest=0)
        result = self._run("set", 1, key, field, amount, write="quantity change", sku=sku)
        return None if result is None else int(result)

    def get_cart(self, session_id: str) -> dict[str, int]:
        """The cart as ``{sku: quantity}``; empty when the session has no cart or is gone."""
        session = self._read(session_id, slide=False)
        return {} if session is None else session.cart

    # -- security: rotation, a user's sessions -------------------------------------------

    def rotate(self, session_id: str, user_id: str | None = None) -> str | None:
        """Move the session (profile, cart, user link, absolute deadline, expiry) to a fresh id,
        e.g. at login; the old id is dead when this returns. ``None`` if the session is gone.

        ``user_id`` links the new id to that user in the same step (login: the anonymous cart
        is kept, a planted id is dead), counted against ``max_sessions_per_user``.

        On one server, and on Redis Cluster whenever the new id can live in the old id's hash
        slot (no ``user_id``, or the session is in that user's slot already), the move is one
        script: RENAME, and the user's index drops the old id and lists the new one (the oldest
        sessions beyond the limit end), atomically; the old and new id never both live.

        A login on Redis Cluster whose session is not in the user's slot yet (an anonymous
        one) moves it there in three steps, each one script on one slot:

        1. on the old id: the session is marked moved (its fields ``_m`` = the new id, ``_t``
           = the user) and its fields and expiry are read; from then on every read and write
           of the old id finds it gone;
        2. on the user's slot: the new id is written with the same fields (``_u`` = the user),
           absolute deadline and expiry, and listed in the user's index (limit applied);
        3. the old key is deleted.

        A caller that dies between the steps leaves the session safe in the old key (dead for
        every use) until it expires. Calling ``rotate(old_id, user_id)`` again with the same user
        resumes the move from the recorded new id and returns it; with another user, or none, the
        old id is gone (``None``). One case is not undone: if the caller died between steps 2
        and 3 and the new id has ended since (deleted, logged out), a resume writes it again,
        as it was at login.
        """
        old_key = self.key(session_id)
        linked = None if user_id is None else check_user_id(user_id)
        if not self._cluster:
            new_id = random_id()
        elif linked is not None and _tag_slot(str.__str__(session_id)) != _tag_slot(linked):
            return self._move(old_key, linked)
        else:
            new_id = _id_in_slot(_tag_slot(str.__str__(session_id)))
        keys = [old_key, self.key(new_id)]
        if linked is not None:
            keys.append(self.user_key(linked))
        moved = self._run("rotate", len(keys), *keys, linked or "", self._limit, write="rotation")
        return new_id if moved else None

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first (a device list). Dead entries are pruned.

        One script on the user's index: its cost is that user's sessions, whatever the total
        number of sessions.
        """
        index = self.user_key(user_id)
        rows = self._run("list", 1, index)
        live = []
        for member, created, idle, deadline, left, expiry in rows:
            started, idle_s, ends = int(created), int(idle), int(deadline)
            seen = _last_seen(started, idle_s, expiry)
            info = SessionInfo(_text(member, index), started, seen, _seconds(left))
            live.append((started, ends, info.session_id, info))
        return [info for *_, info in sorted(live)]

    def logout_everywhere(self, user_id: str, keep: str | None = None) -> int:
        """End every session of the user (but ``keep``, if given); how many were ended.

        One script on the user's index (atomic; its cost is that user's sessions): each listed
        session is deleted and unlisted, and the index is left listing only ``keep`` or gone.
        """
        index = self.user_key(user_id)
        spared = "" if keep is None else check_session_id(keep)
        return int(self._run("logout", 1, index, spared, write="logout"))

    # -- internals -----------------------------------------------------------------------

    def _run(
        self, name: str, numkeys: int, *keys_and_args: Any, write: str = "", sku: str = ""
    ) -> Any:
        """Run one of the store's scripts, given ``numkeys`` keys then the arguments as EVALSHA
        takes them: sent directly (redis-py's ``Script`` object costs ~3 us more per call, and
        lists of keys and arguments cost too), loading the script if Redis lacks it.

        What Redis refuses becomes the store's errors (:func:`_translated`), about the first
        key; ``write`` says what the call writes ("cart add"; "" for a read).
        """
        script = self._scripts[name]
        try:
            if self._pipeline:  # a pipeline loads its scripts itself before it runs
                return script(keys=keys_and_args[:numkeys], args=keys_and_args[numkeys:])
            try:
                return self._execute("EVALSHA", script.sha, numkeys, *keys_and_args)
            except rex.NoScriptError:  # refused before running: safe to send again
                script.sha = self.client.script_load(script.script)
                return self._execute("EVALSHA", script.sha, numkeys, *keys_and_args)
        except _FAILURES as error:  # an except clause costs nothing until it catches
            raise _translated(error, keys_and_args[0], sku, write)  # noqa: B904 (as above)

    def _read(self, session_id: str, slide: bool) -> Session | None:
        key = self.key(session_id)
        reply = self._run("load" if slide else "read", 1, key)
        if reply is None:
            return None
        left, expiry, flat = reply
        names: list[str] = []
        try:
            if flat and type(flat[0]) is bytes:
                flat = [item.decode() for item in flat]
            names, texts = flat[::2], flat[1::2]
            user = None
            if "_u" in names:  # a linked session: its user id is the one value that is not JSON
                where = names.index("_u")
                del names[where]
                user = texts.pop(where)
            # Every other value is JSON (profile values, quantities, numbers): one parse for all.
            values = _DECODER.decode("[" + ",".join(texts) + "]")
            if len(values) != len(names):
                raise ValueError("a value holds more or less than one JSON value")
            data: dict[str, Any] = {}
            cart: dict[str, int] = {}
            meta: dict[str, Any] = {}
            for name, value in zip(names, values, strict=True):  # one pass: the hot path
                if name[0] == "p":
                    data[_unescape(name) if "\\" in name else name[2:]] = value
                elif name[0] == "c":
                    cart[name[2:]] = value
                else:
                    meta[name] = value
            created, idle, deadline = meta["_c"], meta["_i"], meta["_a"]
            for number in (created, idle, deadline, *cart.values()):
                if type(number) is not int or number < 0:
                    raise ValueError(number)
        except (ValueError, KeyError, IndexError):  # JSONDecodeError, UnicodeDecodeError too
            if "_m" in names and "_a" not in names:
                return None  # moved to another id by a rotate (see rotate): gone
            raise CorruptSession(
                f"{key} holds a field that is not JSON, not a quantity, or no meta fields "
                "(_a, _c, _i); it was not written by sessionlab: delete the session and create "
                "it again."
            ) from None
        now = expiry - left  # both read in the same script: Redis's clock, frozen
        seen = now // 1000 if slide else _last_seen(created, idle, expiry)
        return Session(str.__str__(session_id), data, cart, _seconds(left), user, created, seen)

    def _move(self, old_key: str, user: str) -> str | None:
        """A login rotate across hash slots: the three steps described in :meth:`rotate`."""
        found = self._run("mark", 1, old_key, self.new_id(user_id=user), user, write="rotation")
        if found is None:
            return None
        recorded, expiry, fields = found
        new_id = _text(recorded, old_key)
        new_key = self.key(new_id)
        written = self._run(
            "move_in",
            2,
            new_key,
            self.user_key(user),
            expiry,
            self._limit,
            *fields,
            write="rotation",
        )
        self._run("finish", 1, old_key, new_id, write="rotation")
        return new_id if written else None


# -- checks and encoding -----------------------------------------------------------------


def fingerprint(session_id: str) -> str:
    """A log-safe stand-in for a session id: the same id always gives the same short tag,
    but the tag cannot be turned back into the id (SHA-256, first 48 bits)."""
    return "sid#" + hashlib.sha256(session_id.encode()).hexdigest()[:12]


def check_client(client: object) -> None:
    """Refuse what the store cannot drive: asyncio clients (their calls would never run)."""
    execute = getattr(client, "execute_command", None)
    if execute is None or not hasattr(client, "register_script"):
        raise UnsupportedClient(
            f"SessionStore needs a redis-py client (redis.Redis or RedisCluster), not "
            f"{type(client).__name__}; e.g. sessionlab.connect()."
        )
    if inspect.iscoroutinefunction(execute):
        raise UnsupportedClient(
            f"{type(client).__module__}.{type(client).__name__} is an asyncio client: "
            "SessionStore would get coroutines that never run and write nothing. Pass a "
            "synchronous client (redis.Redis, or sessionlab.connect()), and call the store from "
            "a thread (asyncio.to_thread) in async code."
        )


def check_session_id(session_id: object) -> str:
    """Return ``session_id`` as a plain ``str`` if it is a usable id, else raise
    :class:`InvalidSessionId`."""
    return _check_name(session_id, "session id", SESSION_ID, InvalidSessionId)


def check_user_id(user_id: object) -> str:
    """Return ``user_id`` as a plain ``str`` if it is a usable id, else raise
    :class:`InvalidUserId`."""
    return _check_name(user_id, "user id", USER_ID, InvalidUserId)


def _check_name(value: object, what: str, pattern: re.Pattern[str], error: type) -> str:
    if type(value) is str and pattern.fullmatch(value):
        return value  # the common case, on every call: a plain str that fits
    if not isinstance(value, str):
        raise error(f"{what} must be a str, not {type(value).__name__}: {value!r:.60}")
    text = str.__str__(value)  # a str subclass may change its own formatting: use the chars
    if not pattern.fullmatch(text):
        shown = ascii(text if len(text) <= 40 else text[:40] + "...")
        raise error(
            f"{what} {shown} ({len(text)} characters) is not valid: use 1-128 "
            "letters, digits or - _ . : @ (no spaces, braces or control characters)"
            + ("; store.new_id() makes a good one." if what == "session id" else ".")
        )
    return text


def check_ttl(ttl: object) -> int:
    """Return ``ttl`` as a plain ``int`` if it is a whole number of seconds > 0, else raise
    :class:`InvalidTTL`."""
    return _whole_number(ttl, "TTL", " of seconds", 1, MAX_TTL, InvalidTTL)


def check_sku(sku: object) -> str:
    if type(sku) is str and SKU.fullmatch(sku):
        return sku  # the common case: a plain str that fits
    if not isinstance(sku, str) or not SKU.fullmatch(str.__str__(sku)):
        raise InvalidCartItem(
            f"SKU {sku!r:.80} is not valid: use 1-64 letters, digits or - _ . : @ # / + "
            "(no spaces)."
        )
    return str.__str__(sku)


def check_quantity(quantity: object, lowest: int = 1) -> int:
    if type(quantity) is int and lowest <= quantity <= MAX_QUANTITY:
        return quantity  # the common case: a plain int in range
    return _whole_number(quantity, "quantity", "", lowest, MAX_QUANTITY, InvalidCartItem)


def _whole_number(
    value: object, name: str, unit: str, lowest: int, highest: int, error: type[Exception]
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(
            f"{name} must be a whole number{unit} (int), not {type(value).__name__}: {value!r:.60}"
        )
    number = int.__int__(value)  # an IntEnum is its number; redis-py would send its repr
    if not lowest <= number <= highest:
        shown = number if number.bit_length() < 100 else f"of {number.bit_length()} bits"
        raise error(
            f"{name} {shown} is out of range: use {lowest} to {highest}{unit.replace(' of', '')}."
        )
    return number


def profile_fields(data: object) -> list[str]:
    """The hash fields for a profile: ``p:<name>``, compact JSON of its value, alternating.

    :class:`UnserializableData` names any value JSON cannot hold, before anything is sent.
    """
    if type(data) is not dict and not isinstance(data, Mapping):
        raise UnserializableData(
            f"session data must be a dict, not {type(data).__name__}: {data!r:.60}"
        )
    fields: list[str] = []
    for name, value in data.items():
        fields.append("p:" + _field_name(name, "user_data"))
        if _plain(value):
            fields.append(_ENCODER.encode(value))  # the common case, nothing to check
        else:
            fields.append(_encode(value, (name,)))
    return fields


def _scalar(value: object) -> bool:
    """An ASCII str, an int under 64 bits, a finite float, True, False or None: JSON holds it
    as it is, with nothing to check (no lone surrogate, no giant int, no NaN)."""
    kind = type(value)
    if kind is str:
        return value.isascii()  # type: ignore[union-attr]
    if kind is int:
        return value.bit_length() < 64  # type: ignore[union-attr]
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    return value is None or kind is bool


def _plain(value: object) -> bool:
    """A :func:`_scalar`, or a dict with ASCII str keys or a list of them (e.g. a profile's
    preferences): flat, so no cycle or depth to check either. Cheaper than the full walk."""
    kind = type(value)
    if kind is list:
        return all(map(_scalar, value))  # type: ignore[call-overload]
    if kind is not dict:
        return _scalar(value)
    try:
        ascii_keys = all(map(str.isascii, value))  # type: ignore[call-overload]
    except TypeError:  # a key that is not a str: the full walk names it
        return False
    return ascii_keys and all(map(_scalar, value.values()))  # type: ignore[attr-defined]


def dump(value: object) -> str:
    """Compact JSON for a session value (what the store writes), checked like every write."""
    if not isinstance(value, Mapping):
        raise UnserializableData(
            f"session data must be a dict, not {type(value).__name__}: {value!r:.60}"
        )
    for name in value:
        _field_name(name, "user_data")
    return _encode(value, ())


def _field_name(name: object, where: str) -> str:
    """A profile key as its hash field stores it: JSON-escaped, without the quotes (so the read
    script can paste it into JSON); a plain name such as ``user_id`` stays as it is."""
    if type(name) is str and PLAIN_NAME.fullmatch(name):
        return name  # the common case
    if not isinstance(name, str):
        raise UnserializableData(
            f"{where} has the key {name!r:.60} ({type(name).__name__}): JSON keys must be str."
        )
    text = str.__str__(name)
    if PLAIN_NAME.fullmatch(text):
        return text
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise UnserializableData(
                f"{where} has the key {text!r:.60} with a lone surrogate, which UTF-8 cannot "
                "hold: decode the text it came from with errors='replace'."
            ) from None
    return _ENCODER.encode(text)[1:-1]


def _encode(value: object, steps: tuple[object, ...]) -> str:
    """Compact JSON of ``value`` (at ``user_data[steps...]``) once :func:`_check_json` passed."""
    _check_json(value, steps)
    return _ENCODER.encode(value)


# Made once: json.dumps with any option builds a new encoder on every call.
_ENCODER = json.JSONEncoder(
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,  # _check_json has refused cycles already
    default=dict,  # only ever called for a Mapping that is not a dict (checked above)
)


def _check_json(value: object, root: tuple[object, ...]) -> None:
    """Raise :class:`UnserializableData` for the first value JSON cannot hold as it is.

    A loop over an explicit stack, not recursion: the nesting limit (:data:`MAX_DEPTH`) is the
    same whatever the caller's stack depth, and so is what can be read back.
    """
    path = "user_data"
    stack: list[tuple[object, int, tuple[object, ...]]] = [(value, 1, root)]
    parents: dict[int, int] = {}  # id of a container on the current path -> its depth
    while stack:
        item, depth, steps = stack.pop()
        kind = type(item)
        if kind is str:
            if not item.isascii():  # type: ignore[union-attr]
                _check_text(item, path, steps)  # type: ignore[arg-type]
            continue
        if kind is bool or item is None:
            continue
        if kind is int:
            if item.bit_length() > 13_000 and abs(item) >= _TOO_BIG:  # type: ignore[union-attr]
                _unfit(path, steps, _TOO_BIG_TEXT)
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                _unfit(path, steps, f"is {item!r}: JSON has no NaN or infinity.")
            continue
        if isinstance(item, Mapping | list):
            if depth > MAX_DEPTH:
                _unfit(
                    path,
                    steps,
                    f"is nested more than {MAX_DEPTH} levels deep: flatten it (e.g. store a "
                    "path string) or keep it as a JSON text.",
                )
            for seen in [k for k, d in parents.items() if d >= depth]:
                del parents[seen]  # leaving a branch: containers at this depth are done
            if id(item) in parents:
                _unfit(path, steps, "contains itself: JSON cannot hold a cycle.")
            parents[id(item)] = depth
            if isinstance(item, list):
                for index in range(len(item) - 1, -1, -1):
                    stack.append((item[index], depth + 1, (*steps, index)))
            else:
                for key, child in reversed(list(item.items())):
                    if not isinstance(key, str):
                        _unfit(
                            path,
                            steps,
                            f"has the key {key!r:.60} ({type(key).__name__}): "
                            "JSON keys must be str.",
                        )
                    if not key.isascii():
                        _check_text(key, path, (*steps, key))
                    stack.append((child, depth + 1, (*steps, key)))
            continue
        if isinstance(item, str):  # subclasses such as StrEnum
            _check_text(str.__str__(item), path, steps)
            continue
        if isinstance(item, int):  # subclasses such as IntEnum
            if abs(int.__int__(item)) >= _TOO_BIG:
                _unfit(path, steps, _TOO_BIG_TEXT)
            continue
        _unfit(
            path,
            steps,
            f"= {item!r:.60} (type {type(item).__name__}): JSON cannot represent it; "
            "store it as a str, number, bool, None, list or dict (e.g. a date as an ISO string).",
        )


_TOO_BIG = 10**MAX_INT_DIGITS
_TOO_BIG_TEXT = (
    f"is an int of more than {MAX_INT_DIGITS} digits, which Python will not read back from "
    "JSON: store it as a str."
)


def _check_text(text: str, path: str, steps: tuple[object, ...]) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        _unfit(
            path,
            steps,
            "holds a lone surrogate, which UTF-8 cannot hold: decode the text it came from "
            "with errors='replace' (or 'surrogateescape' and back).",
        )


def _unfit(path: str, steps: tuple[object, ...], problem: str) -> None:
    where = path + "".join(f"[{step!r}]" for step in steps)
    raise UnserializableData(f"{where} {problem}")


_DECODER = json.JSONDecoder()


def _unescape(field: str) -> str:
    """A profile key from its field name (``p:`` + the key JSON-escaped, without quotes)."""
    return _DECODER.decode('"' + field[2:] + '"')


def _seconds(left_ms: int) -> int:
    """PTTL in whole seconds, rounded (``-1``: no expiry)."""
    return -1 if left_ms == -1 else (left_ms + 500) // 1000


def _last_seen(created: int, idle: int, expiry_ms: int) -> int:
    """When the session was last loaded or touched (epoch s), from its expiry: nothing is
    written on a load to remember it. The expiry is that moment plus the idle timeout,
    unless capped by the absolute deadline; then this is the earliest the moment can be."""
    if expiry_ms < 0:
        return created
    return max(created, (expiry_ms - idle * 1000) // 1000)


def _tag_slot(name: str) -> int:
    """The hash slot of the keys whose hash tag is ``name``: a session id (``P:{id}``) or a user
    id (``P:user:{uid}``); neither can hold braces, nor can the prefix."""
    return binascii.crc_hqx(name.encode(), 0) % 16384


def _id_in_slot(slot: int) -> str:
    """A fresh id whose key lands in ``slot``: 40 random URL-safe characters (240 bits), then
    the first 3-character suffix, counted from a random start, that makes CRC16 hit the slot."""
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    head = secrets.token_urlsafe(30)
    state = binascii.crc_hqx(head.encode(), 0)
    start = secrets.randbelow(64**3)
    for step in range(64**3):
        n = (start + step) % 64**3
        suffix = bytes((alphabet[n >> 12], alphabet[(n >> 6) & 63], alphabet[n & 63]))
        if binascii.crc_hqx(suffix, state) % 16384 == slot:
            return head + suffix.decode()
    raise AssertionError("unreachable: every slot has suffixes")  # pragma: no cover


def _text(value: str | bytes, key: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise CorruptSession(f"{key} holds bytes that are not UTF-8; delete the session.") from None


_FAILURES = (rex.RedisError, UnicodeDecodeError)


def _translated(error: BaseException, key: str, sku: str = "", write: str = "") -> BaseException:
    """The error to raise for ``error``, met on ``key``: the store's own for what Redis answers
    for a session that is not ours, a server that refuses writes, or a write whose reply was
    lost (``write`` says what it wrote: "cart add"; "" for a read); else ``error`` itself."""
    if (
        write
        and isinstance(error, rex.ConnectionError | rex.TimeoutError)
        and not isinstance(error, NotSent | rex.AuthenticationError)
    ):
        lost = WriteOutcomeUnknown(
            f"{key}: the {write} was sent, but no reply came ({error}), so it may or may not "
            "have been applied. It was not sent again, since that could apply it twice: read "
            "the session (load, get_cart) to see, and repeat it only if it is missing."
        )
        lost.__cause__ = error  # raise ... from error
        return lost
    if isinstance(error, UnicodeDecodeError):
        return _instead(
            CorruptSession(f"{key} holds bytes that are not UTF-8; delete the session.")
        )
    if not isinstance(error, rex.ResponseError):
        return error
    text = str(error).split(" script: ")[0]  # without Redis's "script: <sha>, on @user..."
    if isinstance(error, rex.OutOfMemoryError) or "OOM command not allowed" in text:
        return _instead(
            StoreFull(
                f"Redis is out of memory and its maxmemory-policy frees nothing, so {key} was "
                "not written. Raise maxmemory, or use allkeys-lru (lesson 04)."
            )
        )
    if "MISCONF" in text:
        return _instead(
            StoreReadOnly(
                f"Redis refuses every write because its last save to disk failed (MISCONF), so "
                f"{key} was not written. Free disk space (or fix the data directory's "
                "permissions) and run BGSAVE; see the server's log."
            )
        )
    if isinstance(error, rex.ReadOnlyError) or text.startswith("READONLY"):
        return _instead(
            StoreReadOnly(
                f"this Redis is a read-only replica, so {key} was not written: connect to the "
                "master (or use a RedisCluster client)."
            )
        )
    if "QUANTITY" in text or "increment or decrement would overflow" in text:
        return _instead(
            InvalidCartItem(
                f"{key}: the quantity of {sku} would pass {MAX_QUANTITY:,}; nothing was added. "
                "Use set_quantity() for an exact amount."
            )
        )
    if "CORRUPT" in text or "WRONGTYPE" in text or "not an integer" in text:
        return _instead(
            CorruptSession(
                f"{key} holds data of the wrong type or shape ({text}); it was not written by "
                "sessionlab: delete the session and create it again."
            )
        )
    return error


def _instead(error: BaseException) -> BaseException:
    """``error``, raised as ``raise error from None``: Redis's own error is not shown with it."""
    error.__suppress_context__ = True
    return error

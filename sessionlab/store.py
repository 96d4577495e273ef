"""The session store: the seed notebook's CRUD, atomic, TTL-safe and cluster-safe.

Layout of one session with id ``abc`` under the prefix ``session``::

    session:{abc}        string  the profile, as compact JSON          EX = the session's TTL
    session:{abc}:cart   hash    sku -> quantity                        same TTL as the profile

The ``{abc}`` hash tag puts both keys in the same cluster hash slot, so every operation
is one single-slot command or Lua script and works unchanged on Redis Cluster.

Why a JSON string for the profile: it is read and replaced whole, it nests (preferences),
and measured with ``MEMORY USAGE`` it is as small as a hash of the same fields (152 vs 156
bytes for the seed's profile on Redis 6.2). The cart is a hash because items change one at
a time: ``HINCRBY`` is atomic, so concurrent adds never lose an update.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Mapping
from typing import Any

import redis
import redis.exceptions as rex

from .errors import (
    CorruptSession,
    InvalidCartItem,
    InvalidSessionId,
    InvalidTTL,
    StoreFull,
    UnserializableData,
)

DEFAULT_TTL = 3600
MAX_TTL = 2**31 - 1
MAX_QUANTITY = 1_000_000
SESSION_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
SKU = re.compile(r"[A-Za-z0-9_.:@#/+-]{1,64}")

# KEYS[1] profile, KEYS[2] cart. Each script is one atomic step on one hash slot.
CREATE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""

TOUCH = """
if redis.call('EXPIRE', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""

ADD_TO_CART = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return false end
local quantity = redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) else redis.call('PERSIST', KEYS[2]) end
return quantity
"""

REMOVE_FROM_CART = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
local quantity = redis.call('HINCRBY', KEYS[2], ARGV[1], -tonumber(ARGV[2]))
if quantity <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
return quantity
"""


class SessionStore:
    """Sessions (profile + cart) in Redis, each expiring as a whole.

    ``client`` may be a ``redis.Redis`` or a ``redis.cluster.RedisCluster``, with or
    without ``decode_responses``.
    """

    def __init__(
        self, client: redis.Redis, prefix: str = "session", default_ttl: int = DEFAULT_TTL
    ) -> None:
        if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", prefix):
            raise ValueError(
                f"prefix={prefix!r}: use 1-64 letters, digits or - _ . : (no braces or spaces)."
            )
        self.client = client
        self.prefix = prefix
        self.default_ttl = check_ttl(default_ttl)
        self._create = client.register_script(CREATE)
        self._touch = client.register_script(TOUCH)
        self._add_to_cart = client.register_script(ADD_TO_CART)
        self._remove_from_cart = client.register_script(REMOVE_FROM_CART)

    def __repr__(self) -> str:
        return f"SessionStore(prefix={self.prefix!r}, default_ttl={self.default_ttl})"

    # -- keys --------------------------------------------------------------------------

    def key(self, session_id: str) -> str:
        """The profile key, e.g. ``session:{abc}``."""
        return f"{self.prefix}:{{{check_session_id(session_id)}}}"

    def cart_key(self, session_id: str) -> str:
        """The cart key, in the same hash slot as the profile: ``session:{abc}:cart``."""
        return f"{self.key(session_id)}:cart"

    def _keys(self, session_id: str) -> list[str]:
        profile = self.key(session_id)
        return [profile, f"{profile}:cart"]

    @staticmethod
    def new_id() -> str:
        """A fresh, unguessable session id: 256 random bits, URL-safe (43 characters)."""
        return secrets.token_urlsafe(32)

    # -- CRUD --------------------------------------------------------------------------

    def create(self, session_id: str, user_data: Mapping[str, Any], ttl: int | None = None) -> bool:
        """Store a new session (replacing any old one, cart included) that expires in ``ttl``."""
        keys = self._keys(session_id)
        payload = dump(user_data)
        seconds = self.default_ttl if ttl is None else check_ttl(ttl)
        with _translated_errors(keys[0]):
            self._create(keys=keys, args=[payload, seconds])
        return True

    def get(self, session_id: str) -> dict[str, Any] | None:
        """The session's profile, or ``None`` if it does not exist or has expired."""
        key = self.key(session_id)
        with _translated_errors(key):
            raw = self.client.get(key)
        return None if raw is None else load(raw, key)

    def update(self, session_id: str, new_user_data: Mapping[str, Any]) -> bool:
        """Replace the profile, keeping the remaining TTL; ``False`` if the session is gone.

        One ``SET ... XX KEEPTTL``: no check-then-act, so an expired session never comes back.
        """
        key = self.key(session_id)
        payload = dump(new_user_data)
        with _translated_errors(key):
            return bool(self.client.set(key, payload, xx=True, keepttl=True))

    def delete(self, session_id: str) -> bool:
        """Delete the session and its cart; ``False`` if there was nothing to delete."""
        return bool(self.client.delete(*self._keys(session_id)))

    # -- expiry ------------------------------------------------------------------------

    def ttl(self, session_id: str) -> int | None:
        """Seconds until the session expires; ``None`` if absent, ``-1`` if it never expires."""
        seconds = self.client.ttl(self.key(session_id))
        return None if seconds == -2 else seconds

    def touch(self, session_id: str, ttl: int | None = None) -> bool:
        """Restart the session's clock (sliding expiry); ``False`` if the session is gone."""
        seconds = self.default_ttl if ttl is None else check_ttl(ttl)
        return bool(self._touch(keys=self._keys(session_id), args=[seconds]))

    # -- cart --------------------------------------------------------------------------

    def add_to_cart(self, session_id: str, sku: str, quantity: int = 1) -> int | None:
        """Add ``quantity`` of ``sku``; the new quantity, or ``None`` if the session is gone."""
        keys = self._keys(session_id)
        check_sku(sku)
        check_quantity(quantity)
        with _translated_errors(keys[1]):
            result = self._add_to_cart(keys=keys, args=[sku, quantity])
        return None if result is None else int(result)

    def remove_from_cart(
        self, session_id: str, sku: str, quantity: int | None = None
    ) -> int | None:
        """Remove ``quantity`` of ``sku`` (all of it if ``None``).

        Returns the quantity left (0 once the item is gone), or ``None`` if the session is gone.
        """
        keys = self._keys(session_id)
        check_sku(sku)
        if quantity is not None:
            check_quantity(quantity)
        with _translated_errors(keys[1]):
            result = self._remove_from_cart(
                keys=keys, args=[sku, "" if quantity is None else quantity]
            )
        return None if result is None else int(result)

    def get_cart(self, session_id: str) -> dict[str, int]:
        """The cart as ``{sku: quantity}``; empty when the session has no cart or is gone."""
        key = self.cart_key(session_id)
        with _translated_errors(key):
            raw = self.client.hgetall(key)
        cart = {}
        for sku, quantity in raw.items():
            sku = _text(sku, key)
            try:
                cart[sku] = int(quantity)
            except ValueError:
                raise CorruptSession(
                    f"{key} holds {quantity!r} for {sku!r}, not a quantity; delete the session."
                ) from None
        return cart


# -- checks and encoding -----------------------------------------------------------------


def check_session_id(session_id: object) -> str:
    """Return ``session_id`` if it is a usable id, else raise :class:`InvalidSessionId`."""
    if not isinstance(session_id, str):
        raise InvalidSessionId(
            f"session id must be a str, not {type(session_id).__name__}: {session_id!r}"
        )
    if not SESSION_ID.fullmatch(session_id):
        shown = session_id if len(session_id) <= 40 else session_id[:40] + "..."
        raise InvalidSessionId(
            f"session id {shown!r} ({len(session_id)} characters) is not valid: use 1-128 "
            "letters, digits or - _ . : @ (no spaces, braces or control characters); "
            "SessionStore.new_id() makes a good one."
        )
    return session_id


def check_ttl(ttl: object) -> int:
    """Return ``ttl`` if it is a whole number of seconds > 0, else raise :class:`InvalidTTL`."""
    return _whole_number(ttl, "TTL", " of seconds", MAX_TTL, InvalidTTL)


def check_sku(sku: object) -> str:
    if not isinstance(sku, str) or not SKU.fullmatch(sku):
        raise InvalidCartItem(
            f"SKU {sku!r} is not valid: use 1-64 letters, digits or - _ . : @ # / + (no spaces)."
        )
    return sku


def check_quantity(quantity: object) -> int:
    return _whole_number(quantity, "quantity", "", MAX_QUANTITY, InvalidCartItem)


def _whole_number(value: object, name: str, unit: str, highest: int, error: type[Exception]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(
            f"{name} must be a whole number{unit} (int), not {type(value).__name__}: {value!r}"
        )
    if not 0 < value <= highest:
        raise error(f"{name} {value} is out of range: use 1 to {highest}{unit.replace(' of', '')}.")
    return value


def dump(user_data: object) -> str:
    """Compact JSON for ``user_data``; :class:`UnserializableData` names any bad value."""
    if not isinstance(user_data, Mapping):
        raise UnserializableData(
            f"session data must be a dict, not {type(user_data).__name__}: {user_data!r:.60}"
        )
    try:
        _check_json(user_data, set())
    except _Unfit as unfit:
        path = "user_data" + "".join(reversed(unfit.steps))
        raise UnserializableData(f"{path} {unfit.problem}") from None
    except RecursionError:
        raise UnserializableData("user_data is nested too deeply to store.") from None
    return _ENCODER.encode(user_data)


# Made once: json.dumps with any option builds a new encoder on every call.
_ENCODER = json.JSONEncoder(
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,  # _check_json has refused cycles already
    default=dict,  # only ever called for a Mapping that is not a dict (checked above)
)


class _Unfit(Exception):
    """What JSON cannot hold, and the path to it, collected as the walk unwinds."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        self.steps: list[str] = []


def _check_json(value: object, parents: set[int]) -> None:
    """Raise :class:`_Unfit` for the first value JSON cannot hold as it is.

    Every session write walks its data, so the common types are tested first and the path
    is only built when something is wrong.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return
    if kind is float or isinstance(value, float):
        if not math.isfinite(value):
            raise _Unfit(f"is {value!r}: JSON has no NaN or infinity.")
        return
    if kind is dict or kind is list or isinstance(value, (Mapping, list)):
        if id(value) in parents:
            raise _Unfit("contains itself: JSON cannot hold a cycle.")
        parents.add(id(value))
        if isinstance(value, list):
            for index, item in enumerate(value):
                try:
                    _check_json(item, parents)
                except _Unfit as unfit:
                    unfit.steps.append(f"[{index}]")
                    raise
        else:
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _Unfit(
                        f"has the key {key!r} ({type(key).__name__}): JSON keys must be str."
                    )
                try:
                    _check_json(item, parents)
                except _Unfit as unfit:
                    unfit.steps.append(f"[{key!r}]")
                    raise
        parents.discard(id(value))
        return
    if isinstance(value, (str, int)):  # subclasses such as IntEnum and StrEnum
        return
    raise _Unfit(
        f"= {value!r:.60} (type {type(value).__name__}): JSON cannot represent it; "
        "store it as a str, number, bool, None, list or dict (e.g. a date as an ISO string)."
    )


def load(raw: str | bytes, key: str) -> dict[str, Any]:
    """Decode a stored profile; :class:`CorruptSession` if it is not one this store wrote."""
    try:
        data = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        raise CorruptSession(
            f"{key} does not hold JSON (starts with {raw[:30]!r}); it was not written by "
            "sessionlab: delete the session and create it again."
        ) from None
    if not isinstance(data, dict):
        raise CorruptSession(
            f"{key} holds a JSON {type(data).__name__}, not a session object; delete it."
        )
    return data


def _text(value: str | bytes, key: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise CorruptSession(f"{key} holds bytes that are not UTF-8; delete the session.") from None


class _translated_errors:  # lower case: used like a function: ``with _translated_errors(key):``
    """Turn WRONGTYPE, non-integer and non-UTF-8 replies for ``key`` into CorruptSession, and
    Redis's OOM refusal (a plain ``ResponseError`` from a script on 6.2) into StoreFull.

    A class rather than ``@contextmanager``: it wraps every read, and this is ~10x cheaper.
    """

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: object, _tb: object) -> None:
        if kind is None:
            return
        if issubclass(kind, UnicodeDecodeError):
            raise CorruptSession(
                f"{self.key} holds bytes that are not UTF-8; delete the session."
            ) from None
        if issubclass(kind, rex.OutOfMemoryError) or (
            issubclass(kind, rex.ResponseError) and "OOM command not allowed" in str(error)
        ):
            raise StoreFull(
                f"Redis is out of memory and its maxmemory-policy frees nothing, so {self.key} "
                "was not written. Raise maxmemory, or use allkeys-lru (lesson 04)."
            ) from None
        if issubclass(kind, rex.ResponseError) and (
            "WRONGTYPE" in str(error) or "not an integer" in str(error)
        ):
            raise CorruptSession(
                f"{self.key} holds data of the wrong type or shape ({error}); it was not written "
                "by sessionlab: delete the session and create it again."
            ) from None

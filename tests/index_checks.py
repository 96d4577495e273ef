"""Checks of a user's index (``session:user:{uid}``) that run on one server and on LabCluster.

The index lists the user's session ids, each scored with its session's current expiry (what
``PEXPIRETIME`` says), and expires with the highest score: it never outlives the sessions it
lists, whether they end by idle timeout, absolute deadline, delete or logout. Plain functions
(the test modules call them with their own store), on a ``decode_responses=True`` client.
"""

from __future__ import annotations

import time

from helpers import wait_until

from sessionlab import SessionStore
from sessionlab.sample import PROFILE


def assert_index_follows_its_sessions(store: SessionStore, user: str) -> None:
    """Every listed live session is scored with its expiry; the index expires with the latest."""
    client = store.client
    index = store.user_key(user)
    scores = dict(client.zrange(index, 0, -1, withscores=True))
    expiries = {member: client.pexpiretime(store.key(member)) for member in scores}
    live = {member: expiry for member, expiry in expiries.items() if expiry >= 0}
    assert {m: int(scores[m]) for m in live} == live, "each score is its session's expiry"
    if live:
        assert client.pexpiretime(index) == max(live.values())
    else:
        assert client.exists(index) == 0, "no live session listed: no index"


def index_dies_with_its_sessions(store: SessionStore, user: str) -> None:
    """Three sessions (idle 1 s, absolute far away): one left alone, one loaded, one touched for
    2 s. While any lives, the index exists and lists it; once the last one idled out, the
    index is gone at the same moment, though every absolute deadline is an hour away."""
    assert store.idle_ttl == 1 and store.absolute_ttl >= 3600
    client = store.client
    index = store.user_key(user)
    alone, loaded, touched = ids = [store.new_id(user_id=user) for _ in range(3)]
    for session_id in ids:
        store.create(session_id, PROFILE, user_id=user)
    assert_index_follows_its_sessions(store, user)
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        assert store.load(loaded) is not None
        assert store.touch(touched) is True
        assert client.exists(index) == 1
        assert {loaded, touched} <= set(client.zrange(index, 0, -1))
        assert_index_follows_its_sessions(store, user)
        time.sleep(0.2)
    assert store.get(alone) is None  # idle for 2 s: gone after 1 s
    assert {s.session_id for s in store.sessions_of(user)} == {loaded, touched}
    assert set(client.zrange(index, 0, -1)) == {loaded, touched}  # listing pruned the dead one
    assert wait_until(lambda: client.exists(index) == 0, timeout=5, step=0.05)
    assert client.exists(*(store.key(i) for i in ids)) == 0
    assert store.sessions_of(user) == [] and store.logout_everywhere(user) == 0
    assert client.exists(index) == 0


def index_expiry_follows_every_change(store: SessionStore, user: str) -> None:
    """After each call that sets or ends a linked session's expiry (create, load, touch,
    delete, rotate, logout), the index's expiry is exactly the latest expiry it lists, up or
    down."""
    client = store.client
    index = store.user_key(user)
    a, b, c = (store.new_id(user_id=user) for _ in range(3))
    store.create(a, PROFILE, ttl=300, user_id=user)
    assert_index_follows_its_sessions(store, user)
    store.create(b, PROFILE, ttl=50, user_id=user)
    assert_index_follows_its_sessions(store, user)
    assert client.pexpiretime(index) == client.pexpiretime(store.key(a))
    store.touch(b, 600)  # b is now the latest: the index's expiry goes up
    assert_index_follows_its_sessions(store, user)
    assert client.pexpiretime(index) == client.pexpiretime(store.key(b))
    store.touch(b, 10)  # and down again, to a's
    assert_index_follows_its_sessions(store, user)
    assert client.pexpiretime(index) == client.pexpiretime(store.key(a))
    store.load(b)  # slides b to its own idle timeout (50 s)
    assert_index_follows_its_sessions(store, user)
    store.create(c, PROFILE, ttl=20, user_id=user)
    assert_index_follows_its_sessions(store, user)
    store.delete(a)  # the latest ends: the index now expires with b
    assert_index_follows_its_sessions(store, user)
    assert client.pexpiretime(index) == client.pexpiretime(store.key(b))
    new = store.rotate(b)
    assert set(client.zrange(index, 0, -1)) == {new, c}
    assert_index_follows_its_sessions(store, user)
    assert client.pexpiretime(index) == client.pexpiretime(store.key(new))
    assert store.logout_everywhere(user, keep=c) == 1
    assert client.zrange(index, 0, -1) == [c]
    assert_index_follows_its_sessions(store, user)
    assert client.pexpiretime(index) == client.pexpiretime(store.key(c))
    assert store.logout_everywhere(user) == 1
    assert client.exists(index) == 0

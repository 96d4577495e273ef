"""A real Redis Cluster on 127.0.0.1, for lessons and tests: :class:`LabCluster`.

Every node is a :class:`~sessionlab.server.LabServer` in cluster mode. The cluster is built
with the raw commands an operator (or ``redis-cli --cluster create``) would send:

1. ``CLUSTER ADDSLOTS``: each master takes a contiguous range of the 16384 hash slots,
2. ``CLUSTER SET-CONFIG-EPOCH``: a distinct epoch per node, so no epoch collision to resolve,
3. ``CLUSTER MEET``: the nodes learn about each other (gossip does the rest),
4. ``CLUSTER REPLICATE``: each replica follows its master.

Doing it from Python rather than through ``redis-cli --cluster create`` needs no second
binary of the same version, sleeps for no fixed second per step (we poll), and lets a lesson
show each step. Moving slots (:meth:`LabCluster.move_slots`) likewise uses ``CLUSTER SETSLOT
IMPORTING/MIGRATING``, ``MIGRATE`` and ``CLUSTER SETSLOT NODE``, exactly what ``redis-cli
--cluster reshard`` does.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import PRIMARY, ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .errors import InvalidServerOption, ServerError
from .retry import NotSent, NotSentTimeout, may_resend, safe_connection_class
from .server import (
    DRIVER_INFO,
    HOST,
    LabServer,
    check_directives,
    find_redis_server,
    free_port,
    server_version,
    wait_until,
)

SLOTS = 16384
NODE_TIMEOUT_MS = 1000
WAIT_TIMEOUT = 15.0
MIGRATE_BATCH = 200  # keys per MIGRATE
#: What a cluster answers while it is not ok yet: worth waiting for, then asking again.
#: (redis-py strips the CLUSTERDOWN/TRYAGAIN code from the message: match the class.)
TRANSIENT_ERRORS = (ClusterDownError, TryAgainError)
#: The same answers from a MIGRATE's target, which the source relays as a plain error.
TRANSIENT_FROM_TARGET = ("replied with error: CLUSTERDOWN", "replied with error: TRYAGAIN")
SLOT_BATCH = 1024  # slots moved per round of pipelined commands
#: Connections per node for the ``CLUSTER SETSLOT`` steps of a batch. Valkey 8+ makes each
#: SETSLOT wait until the node's replicas have it (1-4 ms a slot here, one slot at a time per
#: connection; Redis 7.0 answers in 0.2 ms), so a batch's slots are spread over this many
#: connections, one thread each: 4096 slots moved in ~3 s instead of ~19 s (measured).
SETSLOT_LANES = 16


@dataclass(frozen=True)
class NodeInfo:
    """One row of :meth:`LabCluster.cluster_map`: what a node says about itself now."""

    name: str  # "node 1" ... in start order; stable across failovers
    shard: str  # "A", "B", ...: a master and its replicas; stable when roles swap inside it
    port: int
    role: str  # "master", "replica" or "down"
    slots: tuple[tuple[int, int], ...]  # inclusive ranges this node serves (masters)
    keys: int | None  # DBSIZE (None when down)
    master: str | None  # the name of the master a replica follows
    link_up: bool | None  # a replica's master_link_status is "up"

    @property
    def slot_count(self) -> int:
        return sum(last - first + 1 for first, last in self.slots)

    def slot_text(self) -> str:
        """``0-5460`` or ``0-1364,5461-6825``; ``-`` for none."""
        return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in self.slots) or "-"

    def __str__(self) -> str:
        """A line: ``node 1  shard A  master   slots 0-5460 (5461 slots), 0 keys``."""
        if self.role == "master":
            detail = f"slots {self.slot_text()} ({self.slot_count} slots), {self.keys} keys"
        elif self.role == "replica":
            detail = f"follows {self.master}, link {'up' if self.link_up else 'down'}"
        else:
            detail = "not running"
        return f"{self.name}  shard {self.shard}  {self.role:<7}  {detail}"


class LabCluster:
    """A Redis Cluster of real ``redis-server`` nodes owned by this process.

    ``LabCluster(masters=3, replicas=1)`` starts 3 masters that share the 16384 slots and
    one replica per master; any other keyword is a directive for every node (e.g.
    ``maxmemory="8mb"``). Use it as a context manager, or call :meth:`start` and
    :meth:`close`. Like a :class:`LabServer`, every node dies with this process.
    """

    def __init__(
        self, masters: int = 3, replicas: int = 1, *, binary: str | None = None, **directives: Any
    ) -> None:
        if isinstance(masters, bool) or not isinstance(masters, int) or masters < 3:
            raise InvalidServerOption(
                f"masters={masters!r}: a cluster needs at least 3 masters (a majority of them "
                "must agree to fail over a dead one); pass masters=3 or more."
            )
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ServerError(f"replicas={replicas!r}: pass a whole number >= 0 per master.")
        check_directives(directives)
        if "requirepass" in directives:
            raise InvalidServerOption(
                "LabCluster makes its own random password for every node (client() uses it): "
                "remove requirepass."
            )
        # One password for every node: replicas authenticate to their master with it
        # (masterauth), MIGRATE to the target node, clients to any node.
        self._password = secrets.token_urlsafe(32)
        self.binary = find_redis_server(binary)
        self.masters_at_start = masters
        self.replicas_per_master = replicas
        self.directives = {**self._cluster_directives(), **directives}
        self.nodes: list[LabServer] = []
        self._ids: dict[LabServer, str] = {}
        self._names: dict[LabServer, str] = {}
        self._shards: dict[LabServer, str] = {}

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> LabCluster:
        """Start the nodes, build the cluster, and wait until it serves every slot."""
        if self.nodes:
            return self
        try:
            count = self.masters_at_start * (1 + self.replicas_per_master)
            for _ in range(count):
                self._start_node()
            masters = self.nodes[: self.masters_at_start]
            for node, (first, last) in zip(masters, slot_ranges(len(masters)), strict=True):
                self._raw(node).execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
            for epoch, node in enumerate(self.nodes, start=1):
                self._raw(node).execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
            for node in self.nodes[1:]:
                self._raw(self.nodes[0]).execute_command("CLUSTER", "MEET", HOST, node.port)
            self._wait(self._everyone_known, "every node to know every other node")
            for index, master in enumerate(masters):
                self._shards[master] = shard_letter(index)
            for index, replica in enumerate(self.nodes[self.masters_at_start :]):
                master = masters[index % len(masters)]
                self._raw(replica).execute_command("CLUSTER", "REPLICATE", self.node_id(master))
                self._shards[replica] = self._shards[master]
            self.wait_until_ok()
        except redis.RedisError as error:
            self.close()
            raise ServerError(
                f"Building the cluster failed: {self._hidden(error)}. Check the directives "
                "passed to LabCluster (cluster mode must stay enabled)."
            ) from error
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every node and delete their data directories."""
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            node.close()
        self._ids.clear()
        self._names.clear()
        self._shards.clear()

    def __enter__(self) -> LabCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        up = sum(node.running for node in self.nodes)
        return f"<LabCluster {len(self.nodes)} nodes, {up} running>"

    # -- clients -----------------------------------------------------------------------

    def client(self, failover_timeout: float = 10.0, **kwargs: Any) -> RedisCluster:
        """A ``RedisCluster`` client (``decode_responses=True``) that waits out a failover.

        While a dead master's replica is being promoted (about 2 s with this lab's
        ``cluster-node-timeout 1000``), every command on its slots fails with
        ``ConnectionError``. This client retries such a command with a short backoff for up
        to ``failover_timeout`` seconds, so a read is slow instead of failing.
        ``failover_timeout=0`` keeps redis-py's own retry settings: plain redis-py 8.1 gives
        up within about 0.1 s of a master's death.
        """
        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("driver_info", DRIVER_INFO)
        kwargs.setdefault("socket_connect_timeout", 1.0)
        kwargs.setdefault("socket_timeout", 5.0)
        if failover_timeout:
            kwargs.setdefault("retry", Retry(NoBackoff(), 3))
        kwargs.setdefault("connection_class", safe_connection_class(redis.Connection))
        startup = [ClusterNode(HOST, node.port) for node in self.nodes if node.running]
        if not startup:
            raise ServerError("No node of the cluster is running: start() one first.")
        kwargs.setdefault("password", self._password)
        kwargs.setdefault("url", f"redis://{HOST}:{startup[0].port}")  # so nodes take the class
        return FailoverTolerantCluster(
            startup_nodes=startup, failover_timeout=failover_timeout, **kwargs
        )

    # -- who holds what ----------------------------------------------------------------

    def node_id(self, node: LabServer) -> str:
        """The node's 40-hex cluster id (kept in its ``nodes.conf`` across restarts)."""
        if node not in self._ids:
            self._ids[node] = self._raw(node).execute_command("CLUSTER", "MYID")
        return self._ids[node]

    def name(self, node: LabServer) -> str:
        """``node 1``, ``node 2``, ... in start order."""
        return self._names[node]

    def shard(self, node: LabServer) -> str:
        """The node's shard letter: ``A`` for the master that started with the lowest slots
        and its replicas, ...; a master added later gets the next letter. Roles may swap
        inside a shard (a failover); the letter stays."""
        return self._shards[node]

    @staticmethod
    def slot(key: str) -> int:
        """The hash slot of ``key`` (what ``CLUSTER KEYSLOT key`` answers)."""
        return key_slot(key.encode())

    def master_of(self, key_or_slot: str | int) -> LabServer:
        """The master that serves the slot of a key (or a slot number) now."""
        slot = key_or_slot if isinstance(key_or_slot, int) else self.slot(key_or_slot)
        for node_id, ranges in self._slot_map(self._any_running()).items():
            if any(first <= slot <= last for first, last in ranges):
                return self._by_id(node_id)
        raise ServerError(f"No master serves slot {slot}: wait_until_ok() first.")

    def replicas_of(self, master: LabServer) -> list[LabServer]:
        """The running replicas that follow ``master`` (asked via ``INFO replication``)."""
        found = []
        for node in self.nodes:
            if node is master or not node.running:
                continue
            info = self._raw(node).info("replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                found.append(node)
        return found

    def replica_of(self, key_or_slot: str | int) -> LabServer:
        """A replica of the master that holds a key (or a slot)."""
        master = self.master_of(key_or_slot)
        replicas = self.replicas_of(master)
        if not replicas:
            raise ServerError(f"{self.name(master)} has no running replica.")
        return replicas[0]

    @property
    def masters(self) -> list[LabServer]:
        """Running masters (with or without slots), in start order."""
        return [node for node in self.nodes if node.running and self._role(node) == "master"]

    @property
    def replicas(self) -> list[LabServer]:
        """Running replicas, in start order."""
        return [node for node in self.nodes if node.running and self._role(node) == "replica"]

    def cluster_map(self) -> list[NodeInfo]:
        """Every node in start order: role, slot ranges and key count, as each reports it."""
        rows = []
        for node in self.nodes:
            name, shard = self.name(node), self.shard(node)
            if not node.running:
                rows.append(NodeInfo(name, shard, node.port, "down", (), None, None, None))
                continue
            raw = self._raw(node)
            me = _myself(_node_lines(raw))
            info = raw.info("replication")
            role = "master" if "master" in me[2] else "replica"
            master = link = None
            if role == "replica":
                master = self._name_by_port(int(info.get("master_port", 0)))
                link = info.get("master_link_status") == "up"
            rows.append(
                NodeInfo(name, shard, node.port, role, _ranges(me[8:]), raw.dbsize(), master, link)
            )
        return rows

    def shard_counts(self, keys: Iterable[str]) -> dict[str, int]:
        """How many of ``keys`` each shard serves now, by shard letter (sorted).

        One ``CLUSTER NODES`` for the slot map, then CRC16 locally per key, as a cluster
        client routes them: no round trip per key.
        """
        owner: dict[int, str] = {}
        for node_id, ranges in self._slot_map(self._any_running()).items():
            letter = self.shard(self._by_id(node_id))
            for first, last in ranges:
                owner.update(dict.fromkeys(range(first, last + 1), letter))
        counts: dict[str, int] = {}
        for key in keys:
            letter = owner.get(self.slot(key), "-")  # "-": no master serves the slot now
            counts[letter] = counts.get(letter, 0) + 1
        return dict(sorted(counts.items()))

    # -- waiting -----------------------------------------------------------------------

    def wait_until_ok(self, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait until the running nodes agree on who serves every slot, all of them running.

        That is: every running node says ``cluster_state:ok``, all see the same slot map,
        every slot's master is a running node, and every replica's link is up. Right after
        a master is killed this waits for its replica to be promoted.
        """
        self._wait(
            self._healthy, "the cluster to be ok (every slot served, replicas linked)", timeout
        )

    def heal(self) -> LabCluster:
        """Start every stopped node again (its port, data directory and ``nodes.conf``), finish
        any slot move left half-done, and wait until the cluster is ok; build it anew if it
        was closed.

        A lesson section begins with it, so it runs on a whole cluster whatever ran before
        (a crashed node, a re-run cell, a move that failed). A master restarted without
        persistence comes back empty: its keys survive only if a replica took over while it
        was down. Not while another thread moves slots: their move would be finished twice.
        """
        if not self.nodes:
            return self.start()
        for node in self.nodes:
            node.start()
        self._wait(self._masters_settled, "every slot to have one master, known to every node")
        self._finish_moves()
        self.wait_until_ok()
        return self

    # -- scaling out -------------------------------------------------------------------

    def add_master(self) -> LabServer:
        """Start a new, empty master and join it (``CLUSTER MEET``); it serves no slot yet."""
        node = self._start_node()
        self._shards[node] = shard_letter(len(set(self._shards.values())))
        try:
            self._raw(self._any_running(but=node)).execute_command(
                "CLUSTER", "MEET", HOST, node.port
            )
            self._wait(self._everyone_known, "the new node to join")
            self.wait_until_ok()  # a new master refuses commands (CLUSTERDOWN) for ~2 s
        except BaseException:
            self.nodes.remove(node)
            self._shards.pop(node, None)
            node.close()
            raise
        return node

    def move_slots(
        self,
        slots: Iterable[int],
        to: LabServer,
        *,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        """Move slots (with their keys) to the master ``to``; returns the keys moved.

        Per slot, as ``redis-cli --cluster reshard`` does: ``SETSLOT IMPORTING`` on the
        target, ``SETSLOT MIGRATING`` on the source, ``MIGRATE`` its keys in batches, then
        ``SETSLOT NODE`` on every master. Meanwhile a key still on the source is served
        there and one already moved answers ``ASK``, which cluster clients follow: reads
        keep working during the move. ``on_batch(slots_done)`` runs after each batch.
        """
        wanted = sorted(set(slots))
        if not wanted or not all(isinstance(s, int) and 0 <= s < SLOTS for s in wanted):
            raise ServerError(f"slots must be numbers 0-{SLOTS - 1}; got {wanted[:5]!r}...")
        if to not in self._names or not to.running:
            raise ServerError("move_slots(to=...) must be a running node of this cluster.")
        if self._role(to) != "master":
            raise ServerError(f"{self.name(to)} is a replica: move slots to a master.")
        owners = self._slot_map(to)
        by_source: dict[str, list[int]] = {}
        for slot in wanted:
            owner = next(
                (nid for nid, ranges in owners.items() if any(a <= slot <= b for a, b in ranges)),
                None,
            )
            if owner is None:
                raise ServerError(f"Slot {slot} has no master: wait_until_ok() first.")
            if owner != self.node_id(to):
                by_source.setdefault(owner, []).append(slot)
        moved_keys = done = 0
        for source_id, source_slots in by_source.items():
            source = self._by_id(source_id)
            for start in range(0, len(source_slots), SLOT_BATCH):
                batch = source_slots[start : start + SLOT_BATCH]
                moved_keys += self._count_keys(batch, source)
                self._move(batch, source, to)
                done += len(batch)
                if on_batch is not None:
                    on_batch(done)
        return moved_keys

    def reshard(
        self,
        to: LabServer,
        count: int | None = None,
        *,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        """Move ``count`` slots to ``to``, taken evenly from the other masters.

        The default gives ``to`` an equal share (16384 / number of masters). Returns the
        number of keys moved; ``on_batch`` as in :meth:`move_slots` (for a progress bar).
        """
        holders = {  # masters that serve slots now (not ``to``, not a dead one without slots)
            nid: ranges
            for nid, ranges in self._slot_map(to).items()
            if ranges and nid != self.node_id(to)
        }
        if count is None:
            count = SLOTS // (len(holders) + 1)
        held = {nid: _slots(ranges) for nid, ranges in holders.items()}
        total = sum(len(v) for v in held.values())
        if not 0 < count <= total:
            raise ServerError(f"count={count}: pass 1 to {total} slots to move.")
        chosen: list[int] = []
        for index, (_nid, owned) in enumerate(sorted(held.items(), key=lambda kv: kv[1][0])):
            share = (
                count - len(chosen) if index == len(held) - 1 else round(count * len(owned) / total)
            )
            chosen += owned[:share]
        return self.move_slots(chosen, to, on_batch=on_batch)

    # -- internals ---------------------------------------------------------------------

    def _cluster_directives(self) -> dict[str, Any]:
        directives: dict[str, Any] = {
            "cluster_enabled": True,
            "cluster_config_file": "nodes.conf",
            "cluster_node_timeout": NODE_TIMEOUT_MS,
        }
        if server_version(self.binary) >= (7, 0, 0):
            # 7.0 makes diskless replication the default and waits 5 s for more replicas
            # before the first full sync; we have them all at once.
            directives["repl_diskless_sync_delay"] = 0
        return directives

    def _start_node(self) -> LabServer:
        """Start one node on a port whose bus port (+10000) is free, and no other node's."""
        taken = {p for node in self.nodes for p in (node.port, node.port + 10000)}
        last_error: ServerError | None = None
        for _ in range(5):
            port = free_port()
            if port in taken or port + 10000 in taken:
                continue
            node = LabServer(
                port=port, binary=self.binary, requirepass=self._password, **self.directives
            )
            try:
                node.start()
            except ServerError as error:
                node.close()
                last_error = error
                continue
            self.nodes.append(node)
            self._names[node] = f"node {len(self.nodes)}"
            return node
        raise last_error or ServerError("Found no free port pair for a cluster node.")

    def _hidden(self, error: Exception) -> str:
        """``error``'s message with the cluster's password masked: redis-py quotes a failed
        pipeline command with its arguments, and MIGRATE's include ``AUTH <password>``."""
        return str(error).replace(self._password, "***")

    def _raw(self, node: LabServer) -> redis.Redis:
        return node.client(socket_timeout=5.0, socket_connect_timeout=1.0)

    def _any_running(self, but: LabServer | None = None) -> LabServer:
        for node in self.nodes:
            if node.running and node is not but:
                return node
        raise ServerError("No node of the cluster is running.")

    def _by_id(self, node_id: str) -> LabServer:
        for node in self.nodes:
            if self._ids.get(node) == node_id:
                return node
        for node in self.nodes:
            if node.running and self.node_id(node) == node_id:
                return node
        raise ServerError(f"Node {node_id} is not one of this cluster's nodes.")

    def _name_by_port(self, port: int) -> str | None:
        return next((self.name(n) for n in self.nodes if n.port == port), None)

    def _role(self, node: LabServer) -> str:
        me = _myself(_node_lines(self._raw(node)))
        return "master" if "master" in me[2] else "replica"

    def _slot_map(self, node: LabServer) -> dict[str, tuple[tuple[int, int], ...]]:
        """``{master_id: slot ranges}`` as ``node`` sees the cluster."""
        return {
            line[0]: _ranges(line[8:])
            for line in _node_lines(self._raw(node))
            if "master" in line[2] and len(line) > 8
        }

    def _everyone_known(self) -> bool:
        running = [node for node in self.nodes if node.running]
        for node in running:
            lines = _node_lines(self._raw(node))
            known = [
                line for line in lines if "handshake" not in line[2] and "noaddr" not in line[2]
            ]
            if len(known) < len(self.nodes):
                return False
        return True

    def _healthy(self) -> bool:
        running = [node for node in self.nodes if node.running]
        running_ids = {self.node_id(node) for node in running}
        maps = []
        for node in running:
            raw = self._raw(node)
            if "cluster_state:ok" not in raw.execute_command("CLUSTER", "INFO"):
                return False
            lines = _node_lines(raw)
            me = _myself(lines)
            if "slave" in me[2] and raw.info("replication").get("master_link_status") != "up":
                return False
            # Who serves which slots, and whom each running replica follows: clients build
            # their map from any node's view, so every view must be complete and the same.
            maps.append(
                sorted(
                    (line[0], "master" in line[2], line[3], _ranges(line[8:]))
                    for line in lines
                    if line[0] in running_ids or _ranges(line[8:])
                )
            )
        if not maps or any(view != maps[0] for view in maps):
            return False
        served = [(nid, ranges) for nid, is_master, _m, ranges in maps[0] if is_master and ranges]
        if sum(b - a + 1 for _nid, ranges in served for a, b in ranges) != SLOTS:
            return False
        return all(nid in running_ids for nid, _ranges_ in served)

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float = WAIT_TIMEOUT) -> None:
        wait_until(
            ready,
            what,
            timeout,
            hint=" cluster_map() shows each node's view; a master without a running replica "
            "cannot be replaced: start() it again.",
            retry_on=(redis.RedisError, StopIteration),  # a node busy or restarting
        )

    def _own_lines(self) -> dict[LabServer, list[str]]:
        """Each running node's own line of ``CLUSTER NODES`` (flags, the slots it claims)."""
        return {node: _myself(_node_lines(self._raw(node))) for node in self.nodes if node.running}

    def _masters_settled(self) -> bool:
        """Every slot claimed by exactly one running master, each asked about itself, and every
        running node knows those masters as masters. (A restarted old master claims its slots
        until it hears of its promoted replica; another node may not have heard of it yet.)"""
        views = [_node_lines(self._raw(node)) for node in self.nodes if node.running]
        own = [_myself(view) for view in views]
        masters = {me[0] for me in own if "master" in me[2]}
        claimed = [slot for me in own if me[0] in masters for slot in _slots(_ranges(me[8:]))]
        return len(claimed) == SLOTS == len(set(claimed)) and all(
            masters <= {line[0] for line in view if "master" in line[2]} for view in views
        )

    def _finish_moves(self) -> None:
        """Finish every slot move left open (a move that failed, a source that died during
        one), as ``redis-cli --cluster fix`` does: a slot some master imports goes on to it,
        with the keys its owner still holds; a slot only migrating, to a node that is no
        longer a master, stays with its owner (``SETSLOT STABLE``).

        Until then a client can be sent between the two nodes, and after a failover the
        importing node never takes the promoted replica's word for that slot: the nodes'
        maps differ and :meth:`wait_until_ok` would wait forever.
        """
        lines = self._own_lines()
        masters = [node for node, me in lines.items() if "master" in me[2]]
        owner = {slot: node for node in masters for slot in _slots(_ranges(lines[node][8:]))}
        targets: dict[int, LabServer | None] = {}
        open_on: dict[int, list[LabServer]] = {}
        for node in masters:  # (Valkey 8+ copies the state to replicas: they follow)
            for slot, importing, other_id in _open_slots(lines[node][8:]):
                open_on.setdefault(slot, []).append(node)
                if importing:
                    targets[slot] = node
                else:
                    to = next((m for m in masters if self.node_id(m) == other_id), None)
                    targets.setdefault(slot, to)
        moves: dict[tuple[LabServer, LabServer], list[int]] = {}
        for slot, target in sorted(targets.items()):
            if target is not None and target is not owner[slot]:
                moves.setdefault((owner[slot], target), []).append(slot)
            else:
                for node in open_on[slot]:
                    self._raw(node).execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
        for (source, target), slots in moves.items():
            # After a failover the importing node may still name the old master as the owner
            # (or nobody): tell it who owns the slots now, or it refuses their keys.
            self._set_slots(target, slots, "NODE", self.node_id(source))
            self._move(slots, source, target)

    def _count_keys(self, slots: Sequence[int], node: LabServer) -> int:
        pipe = self._raw(node).pipeline(transaction=False)
        for slot in slots:
            pipe.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
        return sum(pipe.execute())

    def _move(self, slots: Sequence[int], source: LabServer, target: LabServer) -> None:
        """Move one batch of slots with :meth:`_move_batch`, again if the cluster was not ok."""
        for attempt in range(1, 4):
            try:
                self._move_batch(slots, source, target)
                return
            except redis.RedisError as error:
                # On a busy machine a node can miss heartbeats for a node timeout, and the
                # cluster says CLUSTERDOWN until it is heard again. Every step of a batch can
                # be repeated, so wait for the cluster, then repeat it.
                if attempt < 3 and _transient(error):
                    self.wait_until_ok()
                    continue
                raise ServerError(
                    f"Moving slots {slots[0]}-{slots[-1]} from {self.name(source)} to "
                    f"{self.name(target)} failed: {self._hidden(error)}. Some may be left "
                    "half-moved (MIGRATING/IMPORTING): heal() finishes their move."
                ) from error

    def _move_batch(self, slots: Sequence[int], source: LabServer, target: LabServer) -> None:
        src = self._raw(source)
        source_id, target_id = self.node_id(source), self.node_id(target)
        self._set_slots(target, slots, "IMPORTING", source_id)
        self._set_slots(source, slots, "MIGRATING", target_id)
        pending = list(slots)
        while pending:  # one round trip per step for the whole batch, not one per slot
            pipe = src.pipeline(transaction=False)
            for slot in pending:
                pipe.execute_command("CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_BATCH)
            keys_per_slot = dict(zip(pending, pipe.execute(), strict=True))
            pending = [slot for slot, keys in keys_per_slot.items() if keys]
            pipe = src.pipeline(transaction=False)
            for slot in pending:  # MIGRATE takes keys of one slot at a time
                keys = keys_per_slot[slot]
                pipe.execute_command(
                    "MIGRATE", HOST, target.port, "", 0, 5000, "AUTH", self._password, "KEYS", *keys
                )
            pipe.execute()
        others = [n for n in self.masters if n not in (source, target)]  # replicas refuse
        for node in [target, source, *others]:
            self._set_slots(node, slots, "NODE", target_id)

    def _set_slots(self, node: LabServer, slots: Sequence[int], state: str, node_id: str) -> None:
        """``CLUSTER SETSLOT <slot> <state> <node_id>`` on ``node`` for every slot, pipelined on
        :data:`SETSLOT_LANES` connections at once; done when every slot is."""
        client = self._raw(node)

        def lane(share: Sequence[int]) -> None:
            pipe = client.pipeline(transaction=False)
            for slot in share:
                pipe.execute_command("CLUSTER", "SETSLOT", slot, state, node_id)
            pipe.execute()

        try:
            with ThreadPoolExecutor(SETSLOT_LANES) as pool:
                list(pool.map(lane, [slots[i::SETSLOT_LANES] for i in range(SETSLOT_LANES)]))
        finally:
            client.close()


#: What a cluster answers while a master is dead and before its replica takes over.
FAILOVER_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
)


class FailoverTolerantCluster(RedisCluster):
    """``RedisCluster`` that retries a command through a failover, with backoff.

    redis-py already retries a failed command a few times and refreshes its slot map in
    between, but without waiting, so all retries fail within milliseconds of a master's
    death. Here each round of retries is repeated after 50-250 ms until
    ``failover_timeout`` seconds have passed. Unlike redis-py's own retries, a write is sent
    again only if it never reached a node (connecting failed, or the cluster refused it): one
    whose reply was lost may have run, and is not run twice (:mod:`sessionlab.retry`).
    """

    # redis-py's own loop (exact types): only what never ran; reads are resent below (retry.py)
    ERRORS_ALLOW_RETRY = (NotSent, NotSentTimeout, ClusterDownError, SlotNotCoveredError)

    def __init__(self, *args: Any, failover_timeout: float = 10.0, **kwargs: Any) -> None:
        self.failover_timeout = failover_timeout  # set first: __init__ already sends commands
        super().__init__(*args, **kwargs)

    def get_node(
        self, host: str | None = None, port: int | None = None, node_name: str | None = None
    ) -> ClusterNode | None:
        """Also a node the client has not met yet, when an ``ASK`` redirect names it.

        redis-py 8.1 follows ``ASK host:port`` by looking the node up in its slot map; a
        master that serves no slot yet (just added, importing its first slots) is not in
        it, and the command dies with ``AttributeError``. Here such a node is added.
        """
        node = super().get_node(host, port, node_name)
        if node is None and node_name and host is None and port is None:
            node_host, _, node_port = node_name.rpartition(":")
            node = ClusterNode(node_host, int(node_port), server_type=PRIMARY)
            self.nodes_manager.nodes_cache[node.name] = node
        return node

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.failover_timeout
        delay = 0.05
        while True:
            try:
                return super().execute_command(*args, **kwargs)
            except FAILOVER_ERRORS as error:
                if time.monotonic() + delay > deadline or not may_resend(error, args[0]):
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.25)


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """Split the 16384 slots into ``masters`` contiguous ranges, as ``redis-cli`` does."""
    per_node = SLOTS / masters
    ranges, first, cursor = [], 0, 0.0
    for index in range(masters):
        last = SLOTS - 1 if index == masters - 1 else round(cursor + per_node - 1)
        ranges.append((first, last))
        first, cursor = last + 1, cursor + per_node
    return ranges


def shard_letter(index: int) -> str:
    """``A``, ``B``, ... ``Z``, then ``S27``, ``S28``, ... (shard names for people)."""
    return chr(ord("A") + index) if index < 26 else f"S{index + 1}"


def _transient(error: redis.RedisError) -> bool:
    """Whether ``error`` is the cluster being not ok for a moment, at the source or the target."""
    if isinstance(error, TRANSIENT_ERRORS):
        return True
    return isinstance(error, redis.ResponseError) and any(
        text in str(error) for text in TRANSIENT_FROM_TARGET
    )


def _node_lines(raw: redis.Redis) -> list[list[str]]:
    """``CLUSTER NODES``, one list of fields per node: id, address, flags, master, ..., slots."""
    text = raw.execute_command("CLUSTER", "NODES")
    return [line.split() for line in str(text).splitlines() if line.strip()]


def _myself(lines: Sequence[list[str]]) -> list[str]:
    """The line of ``CLUSTER NODES`` (split, as :func:`_node_lines` gives it) of the node asked."""
    return next(line for line in lines if "myself" in line[2])


def _slots(ranges: Iterable[tuple[int, int]]) -> list[int]:
    """``((0, 2), (5, 5))`` -> ``[0, 1, 2, 5]``."""
    return [slot for first, last in ranges for slot in range(first, last + 1)]


def _open_slots(fields: Sequence[str]) -> list[tuple[int, bool, str]]:
    """``["0-9", "[5->-id1]", "[7-<-id2]"]`` -> ``[(5, False, "id1"), (7, True, "id2")]``:
    slots being migrated to, or imported (True) from, another node."""
    found = []
    for field in fields:
        if field.startswith("["):
            importing = "-<-" in field
            slot, _, node_id = field[1:-1].partition("-<-" if importing else "->-")
            found.append((int(slot), importing, node_id))
    return found


def _ranges(fields: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """``["0-5460", "5462", "[5461->-id]"]`` -> ``((0, 5460), (5462, 5462))`` (merged)."""
    ranges: list[tuple[int, int]] = []
    for field in fields:
        if field.startswith("["):  # a slot being imported or migrated
            continue
        first, _, last = field.partition("-")
        a, b = int(first), int(last or first)
        if ranges and ranges[-1][1] + 1 == a:
            ranges[-1] = (ranges[-1][0], b)
        else:
            ranges.append((a, b))
    return tuple(ranges)

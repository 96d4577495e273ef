"""The cluster map: who serves which slots, how many keys each node holds, live.

Crash a node (SIGKILL: a process crash, the machine stays up), refresh, and watch its replica
become master; restart it and watch it come back as a replica. Every part is an attribute, so
tests drive it kernel-side.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from ..cluster import LabCluster, NodeInfo
from ..errors import InvalidInput
from ..server import LabServer
from .base import Panel

ROLE_COLORS = {"master": "#1a7f37", "replica": "#0969da", "down": "#cf222e"}


class ClusterMapPanel(Panel):
    """A table of the cluster's nodes with Crash / Restart / Refresh buttons."""

    css_class = "sl-cluster-map"

    def __init__(self, cluster: LabCluster) -> None:
        self.cluster = cluster
        self.rows: list[NodeInfo] = []
        self.table = widgets.HTML()
        self.table.add_class("sl-cluster-table")
        self.node = widgets.Dropdown(description="node", layout=widgets.Layout(width="14em"))
        self.node.add_class("sl-node")
        self.crash_button = widgets.Button(description="Crash (SIGKILL)", button_style="danger")
        self.crash_button.add_class("sl-crash")
        self.restart_button = widgets.Button(description="Restart")
        self.restart_button.add_class("sl-restart")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.refresh_button.add_class("sl-refresh")
        buttons = widgets.HBox(
            [self.node, self.crash_button, self.restart_button, self.refresh_button]
        )
        super().__init__([self.table, buttons], title="Cluster map")
        self.crash_button.on_click(self.action(self.crash))
        self.restart_button.on_click(self.action(self.restart))
        self.refresh_button.on_click(self.action(self.refresh))
        self.action(self.refresh)()

    # -- actions -------------------------------------------------------------------------

    def refresh(self) -> None:
        """Ask every node about itself again and redraw the table."""
        self.rows = self.cluster.cluster_map()
        names = [row.name for row in self.rows]
        if list(self.node.options) != names:
            chosen = self.node.value
            self.node.options = names
            self.node.value = chosen if chosen in names else names[0]
        self.table.value = render(self.rows)

    def crash(self) -> None:
        """SIGKILL the chosen node: a process crash (the OOM killer, a segfault), not a power
        cut; the machine and its page cache stay up (lesson 03 shows the difference)."""
        node = self._chosen()
        name = self.cluster.name(node)
        if not node.running:
            self.fail(f"{name} is already down: Restart it first.")
            return
        was_master = self._row(name).role == "master"
        heirs = self.cluster.replicas_of(node) if was_master else []
        node.crash()
        self.say(f"SIGKILL {name}")
        self.refresh()
        if was_master and heirs:
            self.ok(
                f"{name} killed. Its replica takes over in about 2 s (cluster-node-timeout "
                "1000 here; 15000 by default): press Refresh."
            )
        elif was_master:
            self.ok(
                f"{name} killed. It had no running replica: once the other masters agree it "
                "is dead (a few seconds), the WHOLE cluster refuses commands (CLUSTERDOWN: "
                "cluster-require-full-coverage is yes) until you Restart it."
            )
        else:
            self.ok(f"{name} killed. It was a replica: its master goes on serving alone.")

    def restart(self) -> None:
        """Start the chosen node again on its port and data directory (its nodes.conf)."""
        node = self._chosen()
        name = self.cluster.name(node)
        if node.running:
            self.fail(f"{name} is running: Crash it first.")
            return
        node.start()
        self.say(f"redis-server restarted: {name}")
        self.refresh()
        self.ok(f"{name} is back. It rejoins as a replica once it syncs: press Refresh.")

    # -- internals -----------------------------------------------------------------------

    def _chosen(self) -> LabServer:
        for node in self.cluster.nodes:
            if self.cluster.name(node) == self.node.value:
                return node
        raise InvalidInput(f"No node named {self.node.value!r}: press Refresh.")

    def _row(self, name: str) -> NodeInfo:
        return next(row for row in self.rows if row.name == name)


def render(rows: list[NodeInfo]) -> str:
    """The map as an HTML table: node, role, slot ranges, slot count, keys, replication."""
    head = "".join(
        f"<th style='padding:0 .8em;text-align:left'>{h}</th>"
        for h in ("node", "shard", "port", "role", "slots", "# slots", "keys", "replicates")
    )
    body = []
    for row in rows:
        color = ROLE_COLORS.get(row.role, "inherit")
        follows = ""
        if row.role == "replica":
            follows = f"{row.master} ({'link up' if row.link_up else 'link down'})"
        cells = [
            row.name,
            row.shard,
            str(row.port),
            f"<span class='sl-role-{row.role}' style='color:{color}'>{row.role}</span>",
            html.escape(row.slot_text()),
            str(row.slot_count) if row.role == "master" else "",
            "" if row.keys is None else str(row.keys),
            html.escape(follows),
        ]
        body.append(
            "<tr>" + "".join(f"<td style='padding:0 .8em'>{c}</td>" for c in cells) + "</tr>"
        )
    return f"<table class='sl-cluster-rows'><tr>{head}</tr>{''.join(body)}</table>"

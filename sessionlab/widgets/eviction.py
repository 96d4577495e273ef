"""Lesson 04's playground: pick an eviction policy and a memory limit, fill a server, see who
survived."""

from __future__ import annotations

import html

import ipywidgets as widgets

from ..errors import InvalidSetting
from ..eviction import POLICIES, SESSION_TTL, EvictionResult, experiment
from ..memory import parse_memory
from .base import Panel

MAX_LIMIT = 8 * 2**20  # more memory means more sessions to write: keep a run to seconds
HISTORY = 8


class EvictionPanel(Panel):
    """Run the hot/cold experiment on a fresh server with the chosen policy and maxmemory.

    Every run adds a bar to the chart (hot sessions kept, of those that came back), so runs
    with different settings can be compared side by side. ``result`` holds the last run.
    """

    css_class = "sl-eviction"

    def __init__(
        self, policy: str = "allkeys-lru", maxmemory: str = "2mb", binary: str | None = None
    ) -> None:
        self.binary = binary
        self.policy = widgets.Dropdown(options=POLICIES, value=policy, description="Policy")
        self.maxmemory = widgets.Text(value=maxmemory, description="maxmemory")
        self.ttl = widgets.Checkbox(value=True, description="sessions have a TTL")
        self.run = widgets.Button(description="Run experiment", button_style="primary")
        self.chart = widgets.HTML("")
        for part, name in [
            (self.policy, "policy"),
            (self.maxmemory, "maxmemory"),
            (self.ttl, "ttl"),
            (self.run, "run"),
            (self.chart, "chart"),
        ]:
            part.add_class(f"sl-eviction-{name}")
        self.result: EvictionResult | None = None
        self.history: list[EvictionResult] = []
        self.run.on_click(self.action(self.start))
        super().__init__(
            [widgets.HBox([self.policy, self.maxmemory, self.ttl]), self.run, self.chart],
            "Eviction playground: who survives a full server?",
        )

    def start(self) -> None:
        """Run the experiment once with the form's settings; show counts and the chart."""
        self.status.value = ""
        limit = parse_memory(self.maxmemory.value.strip())
        if limit > MAX_LIMIT:
            raise InvalidSetting(
                f"maxmemory {self.maxmemory.value.strip()!r} is more than this playground "
                "fills in a few seconds: use at most 8mb."
            )
        # Without a TTL the sessions are written the seed's way (plain SET): the store has none.
        ttl, layout = (SESSION_TTL, "store") if self.ttl.value else (None, "two-keys")
        self.say(f"CONFIG SET maxmemory {limit}")
        self.say(f"CONFIG SET maxmemory-policy {self.policy.value}")
        (result,) = experiment(
            [self.policy.value], maxmemory=limit, ttl=ttl, layout=layout, binary=self.binary
        )
        self.result = result
        self.history = [*self.history, result][-HISTORY:]
        self.say(
            f"{result.sessions} sessions, {result.hot} came back, {result.sessions} more: "
            f"hot kept {result.hot_kept}, new kept {result.new_kept}, refused {result.refused}, "
            f"INFO stats evicted_keys {result.evicted_keys}"
        )
        self.chart.value = bar_chart(self.history)
        self.ok(
            f"{result.policy}: {result.hot_kept} of {result.hot} hot sessions kept, "
            f"{result.refused} logins refused, {result.evicted_keys} keys evicted."
        )


def bar_chart(results: list[EvictionResult]) -> str:
    """An HTML bar per run: the share of hot sessions kept, and refused logins beside it."""
    rows = []
    for result in results:
        label = f"{result.policy} @ {result.maxmemory / 2**20:.1f} MiB"
        if result.ttl is None:
            label += " (no TTL)"
        share = result.hot_kept_ratio
        color = "#1a7f37" if share >= 0.9 else "#bf8700" if share >= 0.5 else "#cf222e"
        rows.append(
            '<div class="sl-eviction-bar" style="display:flex;align-items:center;gap:.5em">'
            f'<span style="width:18em">{html.escape(label)}</span>'
            f'<span style="display:inline-block;height:1em;width:{share * 15:.2f}em;'
            f'background:{color}"></span>'
            f"<span>{result.hot_kept}/{result.hot} hot kept, {result.refused} refused</span>"
            "</div>"
        )
    return "".join(rows)

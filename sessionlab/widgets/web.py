"""Lesson 06's panel: fire N concurrent requests at both shops and count what each kept.

Each click starts its own :class:`~sessionlab.bench_web.WebLab` (a private server and both
shops on waitress) and stops it when the counts are in, so the panel works after Run All,
after the lesson's own servers are stopped, and leaves nothing running.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from ..bench_web import WebLab, cart_race, logout_race, profile_race
from .base import Panel

KINDS = ("cart adds", "profile changes", "logouts")


class LoadPanel(Panel):
    """Pick a kind of request and how many, click **Fire**, compare the two shops."""

    css_class = "sl-load-panel"

    def __init__(self, requests: int = 100) -> None:
        self.kind = widgets.ToggleButtons(options=KINDS, value="cart adds")
        self.kind.add_class("sl-kind")
        self.requests = widgets.IntSlider(
            value=requests, min=10, max=400, step=10, description="requests"
        )
        self.requests.add_class("sl-requests")
        self.fire = self.button("Fire", "sl-fire", self._fire, style="primary")
        self.results = widgets.HTML("")
        self.results.add_class("sl-results")
        #: The last counts: {shop name: (kept, sent)} (for logouts: (undone, trials)).
        self.last: dict[str, tuple[int, int]] = {}
        super().__init__(
            [self.kind, self.requests, self.fire, self.results],
            "Fire concurrent requests at both shops",
        )

    def _fire(self) -> None:
        kind, n = self.kind.value, self.requests.value
        counts: dict[str, tuple[int, int]] = {}
        with WebLab() as lab:
            for shop in lab.shops:
                if kind == "cart adds":
                    race = cart_race(shop.client, n)
                    counts[shop.name] = (race.landed, race.sent)
                elif kind == "profile changes":
                    race = profile_race(shop.client, n)
                    counts[shop.name] = (race.landed, race.sent)
                else:
                    trials = max(1, n // 20)
                    counts[shop.name] = (logout_race(shop.client, trials), trials)
        self.last = counts
        self.results.value = _table(kind, counts)
        summary = ", ".join(f"{name} {a}/{b}" for name, (a, b) in counts.items())
        what = "undone logouts" if kind == "logouts" else f"{kind} kept"
        self.say(f"{n} requests, {kind}: {what}: {summary}")
        self.ok(f"Fired {n} requests ({kind}) at both shops; {what} counted.")


def _table(kind: str, counts: dict[str, tuple[int, int]]) -> str:
    header = "undone logouts" if kind == "logouts" else f"{kind} kept"
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td style='text-align:right'>{a} / {b}</td></tr>"
        for name, (a, b) in counts.items()
    )
    return f"<table><tr><th>shop</th><th>{html.escape(header)}</th></tr>{rows}</table>"

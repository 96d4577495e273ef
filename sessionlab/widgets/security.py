"""Lesson 07's panel: a user's devices (live sessions) with a "log out" button for each.

What an account page offers after a password change or a lost phone. Every row comes from
``store.sessions_of(user)`` (the user's index, never a SCAN); ids are shown and logged only as
fingerprints (``sid#...``), because a session id is a password and panels have logs.
"""

from __future__ import annotations

import html
import time

import ipywidgets as widgets

from ..security import fingerprint
from ..store import SessionStore, check_session_id, check_user_id
from .base import Panel


class DevicePanel(Panel):
    """The live sessions of ``user_id``; ``current`` is the session of "this device"."""

    css_class = "sl-devices"

    def __init__(self, store: SessionStore, user_id: str, current: str | None = None) -> None:
        self.store = store
        self.user_id = check_user_id(user_id)
        self.current = None if current is None else check_session_id(current)
        self.rows = widgets.VBox([])
        self.rows.add_class("sl-device-rows")
        self.refresh = self.button("Refresh", "sl-refresh", self.show)
        self.logout_others = self.button(
            "Log out other devices", "sl-logout-others", self._logout_others, style="warning"
        )
        self.logout_all = self.button(
            "Log out everywhere", "sl-logout-all", self._logout_all, style="danger"
        )
        buttons = widgets.HBox([self.refresh, self.logout_others, self.logout_all])
        super().__init__([self.rows, buttons], title=f"Devices signed in as {self.user_id}")
        self.session_ids: list[str] = []
        self.action(self.show)()

    # -- what the panel shows ---------------------------------------------------------------

    def show(self) -> None:
        """Read the user's sessions again and draw one row (label + button) per device."""
        infos = self.store.sessions_of(self.user_id)
        self.say_command("ZRANGE", self.store.user_key(self.user_id), 0, -1, note="the index")
        now = time.time()
        named = [
            (info, str((self.store.get(info.session_id) or {}).get("device", "?")))
            for info in infos
        ]
        # by device name: creation times are whole seconds, so "oldest first" would reorder
        # devices signed in within one second whenever they straddle a second boundary
        named.sort(key=lambda pair: (pair[1], pair[0].created_at, pair[0].session_id))
        rows = []
        for info, device in named:
            here = " (this device)" if info.session_id == self.current else ""
            label = widgets.HTML(
                f"<b>{html.escape(device)}</b>{here} · {fingerprint(info.session_id)} · "
                f"signed in {_ago(now - info.created_at)} · last seen "
                f"{_ago(now - info.last_seen_at)} · expires in {info.ttl} s"
            )
            label.add_class("sl-device-label")
            button = self.button(
                "Log out", "sl-logout", lambda sid=info.session_id: self._logout(sid)
            )
            rows.append(widgets.HBox([button, label]))
        old, self.rows.children = self.rows.children, rows
        for row in old:  # the old rows' widgets would otherwise live on in the kernel
            for part in row.children:
                part.close()
            row.close()
        self.session_ids = [info.session_id for info, _ in named]
        self.ok(f"{len(infos)} device(s) signed in as {self.user_id}.")

    @property
    def devices(self) -> list[str]:
        """The device names the rows show, in order (what a test or a student reads)."""
        names = []
        for row in self.rows.children:
            text = row.children[1].value
            names.append(html.unescape(text.split("</b>")[0].removeprefix("<b>")))
        return names

    @property
    def logout_buttons(self) -> list[widgets.Button]:
        return [row.children[0] for row in self.rows.children]

    # -- actions ------------------------------------------------------------------------------

    def _logout(self, session_id: str) -> None:
        tag = fingerprint(session_id)
        self.say_command("DEL", f"{self.store.prefix}:{{{tag}}}", note="the id as its fingerprint")
        ended = self.store.delete(session_id)
        self.show()
        self.ok(f"Logged out {tag}." if ended else f"{tag} had already ended (expired or out).")

    def _logout_others(self) -> None:
        if self.current is None:
            self.fail("No current device: this panel was opened without current=; nothing kept.")
            return
        ended = self.store.logout_everywhere(self.user_id, keep=self.current)
        self.say(f"logout_everywhere({self.user_id!r}, keep=this device) -> {ended}")
        self.show()
        self.ok(f"Logged out {ended} other device(s); this device stays signed in.")

    def _logout_all(self) -> None:
        ended = self.store.logout_everywhere(self.user_id)
        self.say(f"logout_everywhere({self.user_id!r}) -> {ended}")
        self.show()
        self.ok(f"Logged out everywhere: {ended} session(s) ended.")


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"

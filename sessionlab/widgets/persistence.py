"""Lesson 03's panel: pick a persistence mode, write sessions, crash the server, count survivors."""

from __future__ import annotations

import html

import ipywidgets as widgets

from ..errors import InvalidPersistenceSetting
from ..persistence import (
    MODES,
    bgsave,
    check_count,
    check_mode,
    count_sessions,
    mode_directives,
    write_sessions,
)
from ..server import LabServer
from ..store import SessionStore
from .base import Panel

#: More than this would keep the kernel busy for many seconds per click.
MAX_PANEL_SESSIONS = 100_000


class PersistencePanel(Panel):
    """Write N sessions, optionally ``BGSAVE``, crash with SIGKILL, restart, see what survived.

    The panel owns one private :class:`~sessionlab.server.LabServer`, started in the chosen
    mode on the first write; choosing another mode throws it away. :meth:`close` stops it.
    """

    css_class = "sl-persistence"

    def __init__(self, mode: str = "none", sessions: int = 1000) -> None:
        self.server: LabServer | None = None
        self.ids: list[str] = []
        self.found: int | None = None
        check_mode(mode)
        self.mode = widgets.Dropdown(options=list(MODES), value=mode, description="Mode")
        self.sessions = widgets.IntText(value=sessions, description="Sessions")
        self.write_button = widgets.Button(description="Write sessions", button_style="primary")
        self.bgsave_button = widgets.Button(description="BGSAVE")
        self.crash_button = widgets.Button(description="Crash (SIGKILL)", button_style="danger")
        self.restart_button = widgets.Button(description="Restart")
        self.result = widgets.HTML("")
        parts = {
            "mode": self.mode,
            "sessions": self.sessions,
            "write": self.write_button,
            "bgsave": self.bgsave_button,
            "crash": self.crash_button,
            "restart": self.restart_button,
            "result": self.result,
        }
        for name, part in parts.items():
            part.add_class(f"sl-persistence-{name}")
        self.write_button.on_click(self.action(self.write))
        self.bgsave_button.on_click(self.action(self.snapshot))
        self.crash_button.on_click(self.action(self.crash))
        self.restart_button.on_click(self.action(self.restart))
        self.mode.observe(lambda _change: self.action(self.reset)(), names="value")
        buttons = widgets.HBox(
            [self.write_button, self.bgsave_button, self.crash_button, self.restart_button]
        )
        super().__init__(
            [widgets.HBox([self.mode, self.sessions]), buttons, self.result],
            "Persistence: what survives a crash?",
        )

    # -- actions -------------------------------------------------------------------------

    def write(self) -> None:
        """Write ``sessions`` more sessions (starting the server on the first click)."""
        count = check_count(self.sessions.value)
        if count > MAX_PANEL_SESSIONS:
            raise InvalidPersistenceSetting(
                f"number of sessions is {count:,}: the panel writes at most "
                f"{MAX_PANEL_SESSIONS:,} per click."
            )
        if self.server is None:
            self._start_server()
        elif not self.server.running:
            self.fail("The server is down (crashed): click Restart first, then write.")
            return
        store = self._store()
        self.ids += write_sessions(store, count, first=len(self.ids))
        self.say(f"SessionStore.create x {count}   # one atomic write each")
        keys = store.client.dbsize()
        self.say(f"DBSIZE -> {keys}")
        self.found = len(self.ids)
        self._show()
        self.ok(f"Wrote {count:,} sessions; {len(self.ids):,} written in all.")

    def snapshot(self) -> None:
        """``BGSAVE`` and wait until ``rdb_bgsave_in_progress:0``."""
        if not self._running("to snapshot"):
            return
        info = bgsave(self._store().client)
        self.say("BGSAVE -> Background saving started")
        self.say(
            f"INFO persistence -> rdb_bgsave_in_progress:{info['rdb_bgsave_in_progress']} "
            f"rdb_last_bgsave_status:{info['rdb_last_bgsave_status']}"
        )
        self.ok(f"Snapshot on disk (dump.rdb) with {len(self.ids):,} sessions.")

    def crash(self) -> None:
        """Kill the server with SIGKILL: nothing gets a chance to be saved."""
        if not self._running("to crash"):
            return
        assert self.server is not None
        self.server.crash()
        self.say("kill -9 redis-server   # SIGKILL: no shutdown, no final save")
        self.found = None
        self._show()
        self.ok("Crashed. Click Restart to start it again on the same data directory.")

    def restart(self) -> None:
        """Start the server again on the same data directory and count the sessions left."""
        if self.server is None:
            self.fail("No server yet: click Write sessions first.")
            return
        if self.server.running:
            self.ok("The server is already running: crash it first.")
            return
        self.server.start()
        store = self._store()
        self.say(f"redis-server (restarted on the same dir) -> DBSIZE {store.client.dbsize()}")
        self.found = count_sessions(store, self.ids)
        self._show()
        self.ok(f"Restarted: {self.found:,} of {len(self.ids):,} sessions survived.")

    def reset(self) -> None:
        """Throw the server away (a new mode starts a new one on the next write)."""
        self._stop_server()
        self.ids, self.found = [], None
        self.result.value = ""
        self.ok(f"Mode {self.mode.value}: {MODES[self.mode.value]}. Click Write sessions.")

    def close(self) -> None:
        """Stop the panel's server, then close the widget."""
        self._stop_server()
        super().close()

    # -- helpers -------------------------------------------------------------------------

    @property
    def written(self) -> int:
        return len(self.ids)

    @property
    def lost(self) -> int | None:
        return None if self.found is None else self.written - self.found

    def _start_server(self) -> None:
        directives = mode_directives(self.mode.value)
        self.server = LabServer(**directives).start()
        shown = " ".join(
            f"{name} {value!r}" if value == "" else f"{name} {value}"
            for name, value in self.server.client().config_get("save").items()
        )
        appendonly = self.server.client().config_get("appendonly")["appendonly"]
        self.say(
            f"redis-server started in mode {self.mode.value}: {shown}, appendonly {appendonly}"
        )

    def _stop_server(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def _store(self) -> SessionStore:
        assert self.server is not None
        return SessionStore(self.server.client())

    def _running(self, purpose: str) -> bool:
        if self.server is None:
            self.fail(f"No server {purpose}: click Write sessions first.")
            return False
        if not self.server.running:
            self.fail(f"The server is down: nothing {purpose}. Click Restart.")
            return False
        return True

    def _show(self) -> None:
        if self.found is None:
            text = f"written: {self.written:,} · server down"
        else:
            text = f"written: {self.written:,} · found: {self.found:,} · lost: {self.lost:,}"
        self.result.value = f'<span class="sl-persistence-counts">{html.escape(text)}</span>'

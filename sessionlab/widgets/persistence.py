"""Lesson 03's panel: pick a persistence mode, write sessions, crash the server, count survivors."""

from __future__ import annotations

import html

import ipywidgets as widgets

from ..crash import CrashLab, check_count
from ..errors import InvalidPersistenceSetting
from ..persistence import MODES, check_mode
from .base import Panel

#: More than this would keep the kernel busy for many seconds per click.
MAX_PANEL_SESSIONS = 100_000


class PersistencePanel(Panel):
    """Write N sessions, optionally ``BGSAVE``, crash with SIGKILL, restart, see what survived.

    Each click is one step of :class:`~sessionlab.crash.CrashLab`, the flow lesson 03 runs:
    the panel owns one lab, started in the chosen mode on the first write; choosing another
    mode throws it away. :meth:`close` stops it.
    """

    css_class = "sl-persistence"

    def __init__(self, mode: str = "none", sessions: int = 1000) -> None:
        self.lab: CrashLab | None = None
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
        if self.lab is None:
            self._start_lab()
        elif not self.lab.running:
            self.fail("The server is down (crashed): click Restart first, then write.")
            return
        assert self.lab is not None
        self.lab.write(count)
        self.say(f"SessionStore.create x {count}   # one atomic write each")
        self.say(f"DBSIZE -> {self.lab.client.dbsize()}")
        self.found = self.written
        self._show()
        self.ok(f"Wrote {count:,} sessions; {self.written:,} written in all.")

    def snapshot(self) -> None:
        """``BGSAVE`` and wait until ``rdb_bgsave_in_progress:0``."""
        if not self._running("to snapshot"):
            return
        assert self.lab is not None
        info = self.lab.snapshot()
        self.say("BGSAVE -> Background saving started")
        self.say(
            f"INFO persistence -> rdb_bgsave_in_progress:{info['rdb_bgsave_in_progress']} "
            f"rdb_last_bgsave_status:{info['rdb_last_bgsave_status']}"
        )
        self.ok(f"Snapshot on disk (dump.rdb) with {self.written:,} sessions.")

    def crash(self) -> None:
        """Kill the server with SIGKILL: nothing gets a chance to be saved."""
        if not self._running("to crash"):
            return
        assert self.lab is not None
        self.lab.crash()
        self.say("kill -9 <server pid>   # SIGKILL: no shutdown, no final save")
        self.found = None
        self._show()
        self.ok("Crashed. Click Restart to start it again on the same data directory.")

    def restart(self) -> None:
        """Start the server again on the same data directory and count the sessions left."""
        if self.lab is None:
            self.fail("No server yet: click Write sessions first.")
            return
        if self.lab.running:
            self.ok("The server is already running: crash it first.")
            return
        self.found = self.lab.restart()
        self.say(f"server restarted on the same dir -> DBSIZE {self.lab.client.dbsize()}")
        self._show()
        self.ok(f"Restarted: {self.found:,} of {self.written:,} sessions survived.")

    def reset(self) -> None:
        """Throw the server away (a new mode starts a new one on the next write)."""
        self._stop_lab()
        self.found = None
        self.result.value = ""
        self.ok(f"Mode {self.mode.value}: {MODES[self.mode.value]}. Click Write sessions.")

    def close(self) -> None:
        """Stop the panel's server, then close the widget."""
        self._stop_lab()
        super().close()

    # -- helpers -------------------------------------------------------------------------

    @property
    def written(self) -> int:
        return 0 if self.lab is None else len(self.lab.ids)

    @property
    def lost(self) -> int | None:
        return None if self.found is None else self.written - self.found

    def _start_lab(self) -> None:
        self.lab = CrashLab(self.mode.value).start()
        config = {**self.lab.client.config_get("save"), **self.lab.client.config_get("appendonly")}
        shown = ", ".join(f"{name} {value or repr(value)}" for name, value in config.items())
        self.say(f"server started in mode {self.mode.value}: {shown}")

    def _stop_lab(self) -> None:
        if self.lab is not None:
            self.lab.close()
            self.lab = None

    def _running(self, purpose: str) -> bool:
        if self.lab is None:
            self.fail(f"No server {purpose}: click Write sessions first.")
            return False
        if not self.lab.running:
            self.fail(f"The server is down: nothing {purpose}. Click Restart.")
            return False
        return True

    def _show(self) -> None:
        if self.found is None:
            text = f"written: {self.written:,} · server down"
        else:
            text = f"written: {self.written:,} · found: {self.found:,} · lost: {self.lost:,}"
        self.result.value = f'<span class="sl-persistence-counts">{html.escape(text)}</span>'

"""What every sessionlab panel shares: a status line that shows errors as readable text.

A panel is an ``ipywidgets.VBox`` whose parts are attributes (inputs, buttons, ``status``,
``log``), so tests drive it kernel-side with ``.value`` and ``.click()``, and every part has
a stable CSS class (``sl-...``) so browser tests find it. Callbacks write only through
widget state (``.value``, ``Output.append_stdout``), never ``print``: nbval and JupyterLab
then see the same thing.

Live parts (a TTL counting down) run on a :class:`Ticker`, a background thread that the
panel stops when it is closed, so a notebook never keeps orphan threads.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import redis.exceptions

from ..errors import SessionError

#: Errors a panel turns into a status message; anything else is a bug and propagates.
#: What a click may run into and the panel shows as a red line: our errors (bad input included),
#: Redis's, the network's. A bare ValueError or TypeError is a bug: it is raised, not shown.
SHOWN_ERRORS = (SessionError, redis.exceptions.RedisError, OSError)

#: Arguments redis-cli would show without quotes.
_BARE = re.compile(r"[A-Za-z0-9_:{}.@#/+*=,-]+")


class Ticker:
    """Call ``tick`` every ``seconds`` on a daemon thread until it returns False or is stopped.

    Why a thread and not an asyncio task: it works the same in a kernel, under nbclient and in
    plain pytest, where no event loop is running.
    """

    def __init__(self, seconds: float, tick: Callable[[], bool], name: str = "sl-ticker") -> None:
        self.seconds = seconds
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end and wait for it (unless called from the thread itself)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            if not self._tick():
                return


class Panel(widgets.VBox):
    """Base class for sessionlab's forms. Subclasses build ``children`` and call ``action``."""

    css_class = "sl-panel"

    def __init__(self, children: list[widgets.Widget], title: str) -> None:
        self.title = widgets.HTML(f"<b>{html.escape(title)}</b>")
        self.title.add_class("sl-title")
        self.status = widgets.HTML("", layout=widgets.Layout(min_height="1.5em"))
        self.status.add_class("sl-status")
        self._log = widgets.Output(layout=widgets.Layout(max_height="14em", overflow="auto"))
        self._log.add_class("sl-log")
        self._tickers: list[Ticker] = []
        super().__init__([self.title, *children, self.status, self._log])
        self.add_class("sl-panel")
        self.add_class(self.css_class)

    @property
    def log(self) -> widgets.Output:  # type: ignore[override]
        """The panel's log (raw Redis commands, results).

        A property because ipywidgets already has a ``log`` trait (a ``logging.Logger``) that
        refuses an ``Output``; ipywidgets only uses that logger outside a kernel, on errors.
        """
        return self._log

    def __repr__(self) -> str:  # deterministic text/plain for nbval; widgets repr their ids
        return f"<{type(self).__name__}>"

    # -- status and log ------------------------------------------------------------------

    def ok(self, message: str) -> None:
        """Show a success message in the status line."""
        self.status.value = _span("sl-ok", "#1a7f37", message)

    def fail(self, message: str) -> None:
        """Show an error message in the status line (never a traceback)."""
        self.status.value = _span("sl-error", "#cf222e", message)

    def say(self, line: str) -> None:
        """Append one line to the panel's log (a raw Redis command, a result)."""
        self.log.append_stdout(line.rstrip("\n") + "\n")

    def say_command(self, *args: object, note: str = "") -> None:
        """Log a Redis command the way redis-cli shows it: ``SET session:{abc} '{...}' EX 60``."""
        self.say(redis_command(*args) + (f"   # {note}" if note else ""))

    @property
    def status_text(self) -> str:
        """The status line as plain text (what a student reads)."""
        return html.unescape(re.sub(r"<[^>]+>", "", self.status.value))

    @property
    def log_text(self) -> str:
        """Everything the log shows, as plain text."""
        return "".join(output.get("text", "") for output in self.log.outputs)

    # -- actions and live parts -------------------------------------------------------------

    def button(
        self, label: str, css_class: str, run: Callable[[], Any], style: str = ""
    ) -> widgets.Button:
        """A button with a stable CSS class whose click runs ``run`` through :meth:`action`."""
        button = widgets.Button(description=label, button_style=style)
        button.add_class(css_class)
        button.on_click(self.action(run))
        return button

    def action(self, run: Callable[[], Any]) -> Callable[[Any], None]:
        """Wrap a button callback: expected errors become a readable status message."""

        def on_click(_button: Any = None) -> None:
            try:
                run()
            except SHOWN_ERRORS as error:
                self.fail(describe(error))

        return on_click

    def every(self, seconds: float, tick: Callable[[], bool]) -> Ticker:
        """Run ``tick`` every ``seconds`` until it returns False or the panel is closed.

        An error in ``tick`` shows in the status line and stops the ticker; the thread never
        prints a traceback into whatever cell happens to run.
        """

        def guarded() -> bool:
            try:
                return bool(tick())
            except Exception as error:  # a background thread has no caller to raise to
                self.fail(describe(error))
                return False

        ticker = Ticker(seconds, guarded, name=f"sl-{type(self).__name__}-ticker")
        self._tickers = [t for t in self._tickers if t.running] + [ticker]
        return ticker

    def stop_tickers(self) -> None:
        """Stop every live part of this panel and wait for its threads to end."""
        tickers, self._tickers = getattr(self, "_tickers", []), []
        for ticker in tickers:
            ticker.stop()

    def close(self) -> None:
        """Stop the live parts, then close the widget views as ipywidgets does."""
        self.stop_tickers()
        super().close()


def describe(error: BaseException) -> str:
    """One readable line for an error shown in a panel: its kind and what to do."""
    if isinstance(error, redis.exceptions.ConnectionError) and not isinstance(error, SessionError):
        return (
            f"ConnectionError: Redis did not answer ({error}). Is the server running? "
            "Start it again (LabServer.start()), then retry."
        )
    if isinstance(error, redis.exceptions.TimeoutError):
        return f"TimeoutError: Redis did not answer in time ({error}); retry in a moment."
    return f"{type(error).__name__}: {error}"


def redis_command(*args: object) -> str:
    """Format a command like redis-cli's input: bare words, other arguments single-quoted."""
    return " ".join(_quote(str(arg)) for arg in args)


def _quote(arg: str) -> str:
    if _BARE.fullmatch(arg):
        return arg
    return "'" + arg.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _span(css_class: str, color: str, text: str) -> str:
    return f'<span class="{css_class}" style="color:{color}">{html.escape(text)}</span>'

"""What every sessionlab panel shares: a status line that shows errors as readable text.

A panel is an ``ipywidgets.VBox`` whose parts are attributes (inputs, buttons, ``status``,
``log``), so tests drive it kernel-side with ``.value`` and ``.click()``, and every part has
a stable CSS class (``sl-...``) so browser tests find it. Callbacks write only through
widget state (``.value``, ``Output.append_stdout``), never ``print``: nbval and JupyterLab
then see the same thing.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import redis.exceptions

from ..errors import SessionError

#: Errors a panel turns into a status message; anything else is a bug and propagates.
SHOWN_ERRORS = (SessionError, redis.exceptions.RedisError, ValueError, TypeError, OSError)


class Panel(widgets.VBox):
    """Base class for sessionlab's forms. Subclasses build ``children`` and call ``action``."""

    css_class = "sl-panel"

    def __init__(self, children: list[widgets.Widget], title: str) -> None:
        self.title = widgets.HTML(f"<b>{html.escape(title)}</b>")
        self.status = widgets.HTML("", layout=widgets.Layout(min_height="1.5em"))
        self.status.add_class("sl-status")
        self.log = widgets.Output(layout=widgets.Layout(max_height="14em", overflow="auto"))
        self.log.add_class("sl-log")
        super().__init__([self.title, *children, self.status, self.log])
        self.add_class("sl-panel")
        self.add_class(self.css_class)

    def __repr__(self) -> str:  # deterministic text/plain for nbval; widgets repr their ids
        return f"<{type(self).__name__}>"

    def ok(self, message: str) -> None:
        """Show a success message in the status line."""
        self.status.value = (
            f'<span class="sl-ok" style="color:#1a7f37">{html.escape(message)}</span>'
        )

    def fail(self, message: str) -> None:
        """Show an error message in the status line (never a traceback)."""
        self.status.value = (
            f'<span class="sl-error" style="color:#cf222e">{html.escape(message)}</span>'
        )

    def say(self, line: str) -> None:
        """Append one line to the panel's log (a raw Redis command, a result)."""
        self.log.append_stdout(line.rstrip("\n") + "\n")

    def action(self, run: Callable[[], Any]) -> Callable[[Any], None]:
        """Wrap a button callback: expected errors become a readable status message."""

        def on_click(_button: Any = None) -> None:
            try:
                run()
            except SHOWN_ERRORS as error:
                self.fail(f"{type(error).__name__}: {error}")

        return on_click


def _span(css_class: str, color: str, text: str) -> str:
    return f'<span class="{css_class}" style="color:{color}">{html.escape(text)}</span>'

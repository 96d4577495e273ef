"""ipywidgets panels for the lessons, all built on :class:`~sessionlab.widgets.base.Panel`.

Each lesson's panel lives in its own module; the lesson 01-02 forms are also exported here.
"""

from .base import Panel, Ticker
from .connection import ConnectionPanel
from .explorer import CartPanel, SessionExplorer

__all__ = ["CartPanel", "ConnectionPanel", "Panel", "SessionExplorer", "Ticker"]

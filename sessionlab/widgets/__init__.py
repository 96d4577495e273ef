"""ipywidgets panels for the lessons, built on :class:`sessionlab.widgets.base.Panel`."""

from .base import Panel

__all__ = ["Panel"]

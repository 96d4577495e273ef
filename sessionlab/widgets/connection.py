"""Lesson 01's form: try a host, port and password, and see what Redis says."""

from __future__ import annotations

import ipywidgets as widgets

from ..config import load_settings
from ..connection import connect
from .base import Panel


class ConnectionPanel(Panel):
    """Fill in a server's address and password, click Test, read the verdict.

    The inputs go through the same checks as ``.env`` (``load_settings``), so a bad port
    gets the same message here as in a configuration file.
    """

    css_class = "sl-connection"

    def __init__(self, host: str = "127.0.0.1", port: int | str = 6379, password: str = "") -> None:
        self.host = widgets.Text(value=host, description="Host")
        self.port = widgets.Text(value=str(port), description="Port")
        self.password = widgets.Password(value=password, description="Password")
        self.test = widgets.Button(description="Test connection", button_style="primary")
        for part, name in [
            (self.host, "host"),
            (self.port, "port"),
            (self.password, "password"),
            (self.test, "test"),
        ]:
            part.add_class(f"sl-connection-{name}")
        self.test.on_click(self.action(self.check))
        super().__init__([self.host, self.port, self.password, self.test], "Connect to Redis")

    def check(self) -> None:
        """PING the server the form names; show its version, or why it failed."""
        self.status.value = ""
        settings = load_settings(
            {
                "REDIS_HOST": self.host.value.strip(),
                "REDIS_PORT": self.port.value.strip(),
                "REDIS_PASSWORD": self.password.value,
            }
        )
        self.say(f"PING  -> {settings.address}")
        client = connect(settings)
        try:
            server = client.info("server")
            keys = client.dbsize()
        finally:
            client.close()
        # Valkey reports the Redis version it is compatible with (7.2.4) as redis_version.
        if "valkey_version" in server:
            name = f"Valkey {server['valkey_version']}"
        else:
            name = f"Redis {server['redis_version']}"
        self.ok(f"Connected to {settings.address}: {name}, {keys} keys.")

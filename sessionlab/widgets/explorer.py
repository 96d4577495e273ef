"""Lesson 02's hands-on panels: create, read, update and delete a session; fill its cart.

A session is one hash, ``session:{abc}``: its profile fields (``p:name``), its cart items
(``c:SKU-RED-MUG``) and a few meta fields. Each button does one store call and logs the Redis
commands it amounts to, so students see ``HSET session:{abc} p:name '"Rohith"' ...`` beside the
form they filled. The remaining TTL counts down live (a :class:`~sessionlab.widgets.base.Ticker`
sends ``TTL`` once a second) until the session is deleted or expires, or the panel is closed.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import ipywidgets as widgets

from ..errors import InvalidInput, InvalidSessionId, InvalidTTL, InvalidUserId
from ..sample import PROFILE
from ..store import SessionStore, check_ttl, profile_fields
from .base import Panel, Ticker

#: The example shop's price list (EUR): SKU -> (name, unit price).
PRICES: dict[str, tuple[str, Decimal]] = {
    "SKU-RED-MUG": ("Red mug", Decimal("12.50")),
    "SKU-TEE-M": ("T-shirt, size M", Decimal("19.90")),
    "SKU-SOCKS": ("Socks", Decimal("4.99")),
    "SKU-CAP": ("Cap", Decimal("15.00")),
}
THEMES = ("light", "dark")
BROWSERS = ("Chrome", "Edge", "Firefox", "Safari")
TICK_SECONDS = 1.0


def parse_ttl(text: str) -> int:
    """The TTL typed in a form, as whole seconds; :class:`InvalidTTL` says how to fix it."""
    try:
        seconds = int(text.strip())
    except ValueError:
        raise InvalidTTL(
            f"TTL {text!r} is not a whole number of seconds: type e.g. 1800 for 30 minutes."
        ) from None
    return check_ttl(seconds)


def total_price(cart: dict[str, int]) -> Decimal:
    """The cart's total in EUR; SKUs missing from the price list count as 0."""
    return sum(
        (PRICES[sku][1] * quantity for sku, quantity in cart.items() if sku in PRICES),
        Decimal("0.00"),
    )


def _tagged(widget: widgets.DOMWidget, css_class: str) -> Any:
    widget.add_class(css_class)
    return widget


class _SessionPanel(Panel):
    """A panel about one session (id in ``self.session_id``) whose TTL counts down live."""

    store: SessionStore
    session_id: widgets.Text

    def __init__(self, children: list[widgets.Widget], title: str) -> None:
        self._countdown: Ticker | None = None
        super().__init__(children, title)

    @property
    def counting_down(self) -> bool:
        """True while the background countdown runs."""
        return self._countdown is not None and self._countdown.running

    def _current_id(self) -> str:
        session_id = self.session_id.value.strip()
        if not session_id:
            raise InvalidSessionId("Session id is empty: create a session first, or type its id.")
        self.store.key(session_id)  # InvalidSessionId explains what an id may hold
        return session_id

    def _show_ttl(self, seconds: int | None) -> None:
        raise NotImplementedError

    def _start_countdown(self, session_id: str, on_gone: Callable[[], None]) -> None:
        """Show ``TTL`` once a second until the session is gone or the form shows another."""
        self._stop_countdown()

        def tick() -> bool:
            if self.session_id.value.strip() != session_id:
                return False
            seconds = self.store.ttl(session_id)
            self._show_ttl(seconds)
            if seconds is None:
                on_gone()
                return False
            return True

        self._countdown = self.every(TICK_SECONDS, tick)

    def _stop_countdown(self) -> None:
        if self._countdown is not None:
            self._countdown.stop()
            self._countdown = None


class SessionExplorer(_SessionPanel):
    """A form over one session: Create (HSET + PEXPIREAT), Read (HGETALL, TTL), Update (HSET of
    the profile fields, TTL kept), Touch (PEXPIRE + PEXPIREAT LT) and Delete (DEL), with the TTL
    left counting down live.

    Prefilled with the course's sample user (:data:`sessionlab.sample.PROFILE`).
    """

    css_class = "sl-explorer"

    def __init__(
        self,
        store: SessionStore,
        *,
        session_id: str = "",
        user_id: str = PROFILE["user_id"],
        name: str = PROFILE["name"],
        theme: str = PROFILE["preferences"]["theme"],
        browser: str = PROFILE["preferences"]["browser"],
        ttl: int = 1800,
    ) -> None:
        self.store = store
        self.session_id = _tagged(
            widgets.Text(
                session_id,
                description="Session id",
                placeholder="empty: a new random id",
                layout=widgets.Layout(width="32em"),
            ),
            "sl-explorer-id",
        )
        self.user_id = _tagged(widgets.Text(user_id, description="User id"), "sl-explorer-user")
        self.name = _tagged(widgets.Text(name, description="Name"), "sl-explorer-name")
        self.theme = _tagged(
            widgets.Dropdown(options=THEMES, value=theme, description="Theme"),
            "sl-explorer-theme",
        )
        self.browser = _tagged(
            widgets.Dropdown(options=BROWSERS, value=browser, description="Browser"),
            "sl-explorer-browser",
        )
        self.ttl = _tagged(
            widgets.Text(str(ttl), description="TTL (s)", placeholder="e.g. 1800"),
            "sl-explorer-ttl",
        )
        self.create = self.button("Create", "sl-explorer-create", self._create, "success")
        self.read = self.button("Read", "sl-explorer-read", self._read, "info")
        self.update = self.button("Update", "sl-explorer-update", self._update, "warning")
        self.touch = self.button("Touch", "sl-explorer-touch", self._touch)
        self.delete = self.button("Delete", "sl-explorer-delete", self._delete, "danger")
        self.ttl_bar = _tagged(
            widgets.IntProgress(0, min=0, max=1, layout=widgets.Layout(width="16em")),
            "sl-explorer-ttl-bar",
        )
        self.ttl_left = _tagged(widgets.Label("no session"), "sl-explorer-ttl-left")
        self.data = _tagged(widgets.HTML(""), "sl-explorer-data")
        super().__init__(
            [
                self.session_id,
                widgets.HBox([self.user_id, self.name]),
                widgets.HBox([self.theme, self.browser]),
                self.ttl,
                widgets.HBox([self.create, self.read, self.update, self.touch, self.delete]),
                widgets.HBox([widgets.Label("TTL left:"), self.ttl_bar, self.ttl_left]),
                self.data,
            ],
            "Session explorer",
        )

    def user_data(self) -> dict[str, Any]:
        """The profile the form describes, in the seed's shape; an empty name or user id raise."""
        user_id, name = self.user_id.value.strip(), self.name.value.strip()
        if not user_id:
            raise InvalidUserId("User id is empty: type one, e.g. U001.")
        if not name:
            raise InvalidInput("Name is empty: type the user's name, e.g. Rohith.")
        return {
            "user_id": user_id,
            "name": name,
            "preferences": {"theme": self.theme.value, "browser": self.browser.value},
        }

    # -- actions: every input is checked before anything is sent ------------------------------

    def _create(self) -> None:
        user_data, seconds = self.user_data(), parse_ttl(self.ttl.value)
        session_id = self.session_id.value.strip() or self.store.new_id()
        key, fields = self.store.key(session_id), profile_fields(user_data)
        self.store.create(session_id, user_data, seconds)
        expires_at = self.store.client.execute_command("PEXPIRETIME", key)  # for the log
        self.say_command("DEL", key, note="one Lua script: a new session, no old cart")
        self.say_command("HSET", key, *fields, note="+ _c _a _i: created, deadline, idle timeout")
        self.say_command("PEXPIREAT", key, expires_at, note=f"now + {seconds} s, in ms")
        self.session_id.value = session_id
        self.ttl_bar.max = seconds
        self._show(session_id)
        self.ok(f"Created {key}: it expires in {seconds} s.")

    def _read(self) -> None:
        session_id = self._current_id()
        key = self.store.key(session_id)
        if self._show(session_id):
            self.ok(f"Read {key}.")
        else:
            self.fail(f"{key} does not exist (never created, expired or deleted).")

    def _update(self) -> None:
        session_id, user_data = self._current_id(), self.user_data()
        key, fields = self.store.key(session_id), profile_fields(user_data)
        updated = self.store.update(session_id, user_data)
        self.say_command(
            "HSET", key, *fields, note="one Lua script: only if it exists; TTL and cart kept"
        )
        self._show(session_id)
        if updated:
            self.ok(f"Updated {key}; its TTL kept counting down.")
        else:
            self.fail(f"{key} does not exist (expired or deleted): nothing updated; create it.")

    def _touch(self) -> None:
        session_id, seconds = self._current_id(), parse_ttl(self.ttl.value)
        key = self.store.key(session_id)
        touched = self.store.touch(session_id, seconds)
        deadline = self.store.client.hget(key, "_a")  # for the log: the absolute deadline
        self.say_command("PEXPIRE", key, seconds * 1000, note="one Lua script: idle clock restarts")
        if deadline is not None:
            self.say_command("PEXPIREAT", key, deadline, "LT", note="never past the deadline")
        if touched:
            self.ttl_bar.max = seconds
        self._show(session_id)
        if touched:
            self.ok(f"Touched {key}: it expires in {seconds} s again.")
        else:
            self.fail(f"{key} does not exist (expired or deleted): nothing to touch.")

    def _delete(self) -> None:
        session_id = self._current_id()
        key = self.store.key(session_id)
        deleted = self.store.delete(session_id)
        self.say_command("DEL", key, note="profile and cart: one key")
        self._show(session_id)
        if deleted:
            self.ok(f"Deleted {key}: profile and cart.")
        else:
            self.fail(f"{key} did not exist: nothing deleted.")

    # -- display ----------------------------------------------------------------------------

    def _show(self, session_id: str) -> bool:
        """Read the session back (HGETALL, TTL), show it, and count down while it lives."""
        key = self.store.key(session_id)
        data = self.store.get(session_id)
        seconds = self.store.ttl(session_id)
        self.say_command("HGETALL", key, note="read-only: does not slide the expiry")
        self.say_command("TTL", key)
        if data is None:
            self._show_gone(session_id)
            self._stop_countdown()
            return False
        shown = html.escape(json.dumps(data, indent=1, ensure_ascii=False))
        self.data.value = f"<code>{html.escape(key)}</code><pre>{shown}</pre>"
        self._show_ttl(seconds)
        self._start_countdown(session_id, lambda: self._expired(session_id))
        return True

    def _show_gone(self, session_id: str) -> None:
        self.data.value = f"<code>{html.escape(self.store.key(session_id))}</code>: <i>(nil)</i>"
        self._show_ttl(None)

    def _expired(self, session_id: str) -> None:
        self._show_gone(session_id)
        self.ok(f"{self.store.key(session_id)} expired: Redis deleted it, cart included.")

    def _show_ttl(self, seconds: int | None) -> None:
        if seconds is None:
            self.ttl_bar.value = 0
            self.ttl_left.value = "no session"
        elif seconds < 0:
            self.ttl_bar.value = self.ttl_bar.max
            self.ttl_left.value = "never expires"
        else:
            self.ttl_bar.max = max(self.ttl_bar.max, seconds, 1)
            self.ttl_bar.value = seconds
            self.ttl_left.value = f"{seconds} s"


class CartPanel(_SessionPanel):
    """A session's cart: add and remove items (HINCRBY on the session's ``c:<sku>`` fields),
    see quantities and the total, and watch the cart expire with its session (one key; its TTL
    counts down once a second)."""

    css_class = "sl-cart"

    def __init__(self, store: SessionStore, session_id: str = "") -> None:
        self.store = store
        self._counting = ""
        self.session_id = _tagged(
            widgets.Text(session_id, description="Session id", layout=widgets.Layout(width="32em")),
            "sl-cart-session",
        )
        self.sku = _tagged(
            widgets.Dropdown(
                options=[(f"{sku}: {name}, {cost} €", sku) for sku, (name, cost) in PRICES.items()],
                description="Item",
                layout=widgets.Layout(width="24em"),
            ),
            "sl-cart-sku",
        )
        self.quantity = _tagged(widgets.IntText(1, description="Quantity"), "sl-cart-quantity")
        self.add = self.button("Add", "sl-cart-add", self._add, "success")
        self.remove = self.button("Remove", "sl-cart-remove", self._remove, "warning")
        self.refresh = self.button("Refresh", "sl-cart-refresh", self._refresh, "info")
        self.items = _tagged(widgets.HTML(""), "sl-cart-items")
        self.total = _tagged(widgets.Label(""), "sl-cart-total")
        self.ttl_left = _tagged(widgets.Label(""), "sl-cart-ttl-left")
        super().__init__(
            [
                self.session_id,
                widgets.HBox([self.sku, self.quantity]),
                widgets.HBox([self.add, self.remove, self.refresh]),
                self.items,
                self.total,
                widgets.HBox([widgets.Label("Session TTL left:"), self.ttl_left]),
            ],
            "Cart",
        )
        if session_id:
            self.action(self._refresh)()
        else:
            self._render({})

    def cart(self) -> dict[str, int]:
        """The cart as Redis holds it now."""
        return self.store.get_cart(self._current_id())

    def _add(self) -> None:
        session_id, sku, quantity = self._current_id(), self.sku.value, self.quantity.value
        new_quantity = self.store.add_to_cart(session_id, sku, quantity)
        self.say_command(
            "HINCRBY",
            self.store.key(session_id),
            f"c:{sku}",
            quantity,
            note="one Lua script: only if the session exists",
        )
        self._show(session_id)
        if new_quantity is None:
            self._no_session(session_id)
        else:
            self.ok(f"Added {quantity} × {sku}: {new_quantity} in the cart.")

    def _remove(self) -> None:
        session_id, sku, quantity = self._current_id(), self.sku.value, self.quantity.value
        left = self.store.remove_from_cart(session_id, sku, quantity)
        self.say_command(
            "HINCRBY",
            self.store.key(session_id),
            f"c:{sku}",
            -quantity,
            note="one Lua script: HDEL at 0",
        )
        self._show(session_id)
        if left is None:
            self._no_session(session_id)
        else:
            self.ok(f"Removed {quantity} × {sku}: {left} left in the cart.")

    def _refresh(self) -> None:
        session_id = self._current_id()
        if self._show(session_id):
            self.ok(f"Read the cart of {self.store.key(session_id)}.")
        else:
            self._no_session(session_id)

    def _no_session(self, session_id: str) -> None:
        self.fail(f"{self.store.key(session_id)} does not exist (expired or deleted): no cart.")

    def _show(self, session_id: str) -> bool:
        """Show the cart and the session's TTL; count down while the session lives."""
        cart = self.store.get_cart(session_id)
        seconds = self.store.ttl(session_id)
        self.say_command("HGETALL", self.store.key(session_id), note="the c:<sku> fields")
        self.say_command("TTL", self.store.key(session_id))
        self._render(cart)
        self._show_ttl(seconds)
        if seconds is None:
            self._stop_countdown()
            return False
        if not (self.counting_down and self._counting == session_id):
            self._counting = session_id
            self._start_countdown(session_id, lambda: self._expired(session_id))
        return True

    def _expired(self, session_id: str) -> None:
        self._render(self.store.get_cart(session_id))
        self.ok(f"{self.store.key(session_id)} expired: its cart went with it.")

    def _render(self, cart: dict[str, int]) -> None:
        if cart:
            rows = "".join(
                f"<tr><td>{html.escape(sku)}</td><td>{html.escape(_item_name(sku))}</td>"
                f"<td style='text-align:right'>{quantity}</td>"
                f"<td style='text-align:right'>{_subtotal(sku, quantity)}</td></tr>"
                for sku, quantity in sorted(cart.items())
            )
            self.items.value = (
                "<table class='sl-cart-table'><tr><th>SKU</th><th>Item</th><th>Qty</th>"
                f"<th>Subtotal (€)</th></tr>{rows}</table>"
            )
        else:
            self.items.value = "<i>(empty cart)</i>"
        self.total.value = f"Total: {total_price(cart)} €"

    def _show_ttl(self, seconds: int | None) -> None:
        if seconds is None:
            self.ttl_left.value = "no session"
        elif seconds < 0:
            self.ttl_left.value = "never expires"
        else:
            self.ttl_left.value = f"{seconds} s"


def _item_name(sku: str) -> str:
    return PRICES[sku][0] if sku in PRICES else "(not in the price list)"


def _subtotal(sku: str, quantity: int) -> str:
    return str(PRICES[sku][1] * quantity) if sku in PRICES else "?"

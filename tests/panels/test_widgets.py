"""Lesson 02's panels driven kernel-side, as a student would: set ``.value``, ``.click()``.

Every test runs against a real private redis-server and checks what Redis holds with a raw
client, besides what the panel shows. Bad input must show a readable status message and
write nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from sessionlab import InvalidTTL, LabServer, SessionStore
from sessionlab.sample import PROFILE as SEED
from sessionlab.widgets.base import Panel, redis_command
from sessionlab.widgets.explorer import PRICES, CartPanel, SessionExplorer

WAIT = 20.0  # generous: the machine is shared; only a broken countdown gets near it


@pytest.fixture
def panels() -> Iterator[list[Panel]]:
    """Panels made by a test; closed afterwards, and then none of their threads may live."""
    made: list[Panel] = []
    yield made
    for panel in made:
        panel.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("sl-")], "orphan threads"


@pytest.fixture
def explorer(store: SessionStore, panels: list[Panel]) -> SessionExplorer:
    panel = SessionExplorer(store, session_id="task1")
    panels.append(panel)
    return panel


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {WAIT:.0f} s for: {what}")
        time.sleep(0.05)


def profile_in(raw: redis.Redis, key: str) -> dict:
    """The profile Redis holds in the session hash (its ``p:<name>`` fields)."""
    return {k[2:]: json.loads(v) for k, v in raw.hgetall(key).items() if k.startswith("p:")}


def cart_in(raw: redis.Redis, key: str) -> dict[str, str]:
    """The cart Redis holds in the session hash (its ``c:<sku>`` fields), as Redis returns it."""
    return {k[2:]: v for k, v in raw.hgetall(key).items() if k.startswith("c:")}


def error_shown(panel: Panel) -> str:
    """The status line's error text; fails the test if it shows no error or a traceback."""
    assert 'class="sl-error"' in panel.status.value, panel.status.value
    assert "Traceback" not in panel.status_text
    return panel.status_text


# -- the explorer's round trip ---------------------------------------------------------------


def test_create_writes_the_form_to_redis_with_its_ttl(explorer, raw, capsys):
    explorer.ttl.value = "1800"
    explorer.create.click()

    assert profile_in(raw, "session:{task1}") == SEED
    assert 1790 <= raw.ttl("session:{task1}") <= 1800
    assert explorer.status_text == "Created session:{task1}: it expires in 1800 s."
    assert (
        """HSET session:{task1} p:user_id '"U001"' p:name '"Rohith"' p:preferences"""
        in explorer.log_text
    )
    assert "PEXPIREAT session:{task1} " in explorer.log_text
    assert "Rohith" in explorer.data.value
    assert explorer.ttl_left.value.endswith(" s") and explorer.ttl_bar.max == 1800
    assert explorer.counting_down
    assert capsys.readouterr() == ("", "")  # the library never prints


def test_create_without_an_id_makes_a_new_one(store, raw, panels):
    explorer = SessionExplorer(store)
    panels.append(explorer)
    explorer.create.click()

    session_id = explorer.session_id.value
    assert len(session_id) == 43
    assert profile_in(raw, f"session:{{{session_id}}}") == SEED


def test_read_shows_what_redis_holds(explorer, store, raw):
    store.create("task1", {**SEED, "name": "Written elsewhere"}, 600)
    explorer.read.click()

    assert "Written elsewhere" in explorer.data.value
    assert explorer.status_text == "Read session:{task1}."
    assert "HGETALL session:{task1}" in explorer.log_text
    assert "TTL session:{task1}" in explorer.log_text
    assert 590 <= int(explorer.ttl_left.value.removesuffix(" s")) <= 600


def test_update_replaces_the_profile_and_keeps_the_ttl(explorer, raw):
    explorer.create.click()
    raw.expire("session:{task1}", 100)  # if Update reset the TTL, it would jump back up
    explorer.name.value = "Rohith K."
    explorer.theme.value = "light"
    explorer.browser.value = "Firefox"
    explorer.update.click()

    stored = profile_in(raw, "session:{task1}")
    assert stored["name"] == "Rohith K."
    assert stored["preferences"] == {"theme": "light", "browser": "Firefox"}
    assert 0 < raw.ttl("session:{task1}") <= 100
    assert "only if it exists; TTL and cart kept" in explorer.log_text
    assert explorer.status_text.startswith("Updated session:{task1}")
    assert "Rohith K." in explorer.data.value


def test_delete_removes_the_session_and_its_cart(explorer, store, raw):
    explorer.create.click()
    store.add_to_cart("task1", "SKU-RED-MUG", 2)
    explorer.delete.click()

    assert raw.exists("session:{task1}") == 0
    assert raw.dbsize() == 0  # nothing left: no cart key, no write memory
    assert explorer.status_text == "Deleted session:{task1}: profile and cart."
    assert "DEL session:{task1}" in explorer.log_text
    assert "(nil)" in explorer.data.value
    assert explorer.ttl_left.value == "no session"
    assert not explorer.counting_down


def test_touch_restarts_the_clock(explorer, raw):
    explorer.create.click()
    raw.expire("session:{task1}", 50)
    explorer.ttl.value = "900"
    explorer.touch.click()

    assert 890 <= raw.ttl("session:{task1}") <= 900
    assert "PEXPIRE session:{task1} 900000" in explorer.log_text


@pytest.mark.parametrize("button", ["read", "update", "touch", "delete"])
def test_a_missing_session_is_reported_and_nothing_is_written(explorer, raw, button):
    getattr(explorer, button).click()

    assert "session:{task1}" in error_shown(explorer)
    assert raw.dbsize() == 0


# -- the live countdown ------------------------------------------------------------------------


def test_ttl_counts_down_and_stops_when_the_session_expires(explorer, raw):
    explorer.ttl.value = "3"
    explorer.create.click()
    first = explorer.ttl_left.value
    assert first in ("3 s", "2 s")

    wait_until(lambda: explorer.ttl_left.value not in (first, "no session"), "a lower TTL shown")
    assert int(explorer.ttl_left.value.removesuffix(" s")) < int(first.removesuffix(" s"))
    wait_until(lambda: not explorer.counting_down, "the countdown to stop at expiry")

    assert explorer.ttl_left.value == "no session"
    assert explorer.status_text == "session:{task1} expired: Redis deleted it, cart included."
    assert raw.exists("session:{task1}") == 0


def test_countdown_stops_when_the_panel_is_closed(explorer):
    explorer.create.click()
    assert explorer.counting_down
    explorer.close()
    assert not explorer.counting_down
    assert not [t for t in threading.enumerate() if t.name.startswith("sl-")]


def test_one_countdown_per_panel_however_often_it_is_clicked(explorer):
    for _ in range(5):
        explorer.create.click()
        explorer.read.click()
    live = [t for t in threading.enumerate() if t.name.startswith("sl-SessionExplorer")]
    assert len(live) == 1


# -- bad input: a readable message, nothing written -------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("abc", "TTL 'abc' is not a whole number of seconds"),
        ("1.5", "TTL '1.5' is not a whole number of seconds"),
        ("", "TTL '' is not a whole number of seconds"),
        ("0", "TTL 0 is out of range"),
        ("-5", "TTL -5 is out of range"),
    ],
)
@pytest.mark.parametrize("button", ["create", "touch"])
def test_a_bad_ttl_is_explained_and_nothing_is_written(explorer, raw, button, typed, expected):
    explorer.ttl.value = typed
    getattr(explorer, button).click()

    assert error_shown(explorer).startswith(f"InvalidTTL: {expected}")
    assert raw.dbsize() == 0
    assert not explorer.counting_down


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_name_is_explained_and_nothing_is_written(explorer, raw, name):
    explorer.name.value = name
    explorer.create.click()

    assert (
        error_shown(explorer) == "InvalidInput: Name is empty: type the user's name, e.g. Rohith."
    )
    assert raw.dbsize() == 0


def test_an_empty_name_does_not_overwrite_on_update(explorer, raw):
    explorer.create.click()
    explorer.name.value = ""
    explorer.update.click()

    assert "Name is empty" in error_shown(explorer)
    assert profile_in(raw, "session:{task1}")["name"] == "Rohith"


def test_a_bad_session_id_is_explained(explorer, raw):
    explorer.session_id.value = "has spaces{}"
    explorer.create.click()

    assert error_shown(explorer).startswith("InvalidSessionId: session id 'has spaces{}'")
    assert raw.dbsize() == 0


def test_server_down_shows_a_connection_message_then_recovers(explorer, server, raw):
    server.crash()
    explorer.create.click()

    message = error_shown(explorer)
    assert message.startswith("ConnectionError: Redis did not answer")
    assert "Is the server running?" in message

    server.start()  # same port: the panel works again without being rebuilt
    explorer.create.click()
    assert explorer.status_text.startswith("Created session:{task1}")
    assert raw.exists("session:{task1}") == 1


def test_server_down_stops_the_countdown_with_a_message(explorer, server):
    explorer.create.click()
    assert explorer.counting_down
    server.crash()

    wait_until(lambda: not explorer.counting_down, "the countdown to give up")
    assert error_shown(explorer).startswith("ConnectionError: Redis did not answer")


# -- the cart ----------------------------------------------------------------------------------


@pytest.fixture
def cart(store: SessionStore, panels: list[Panel]) -> CartPanel:
    store.create("task1", SEED, 1800)
    panel = CartPanel(store, "task1")
    panels.append(panel)
    return panel


def test_cart_add_remove_and_total(cart, raw):
    assert cart.total.value == "Total: 0.00 €"
    cart.sku.value, cart.quantity.value = "SKU-RED-MUG", 2
    cart.add.click()
    cart.sku.value, cart.quantity.value = "SKU-TEE-M", 1
    cart.add.click()

    assert cart_in(raw, "session:{task1}") == {"SKU-RED-MUG": "2", "SKU-TEE-M": "1"}
    assert cart.total.value == "Total: 44.90 €"  # 2 x 12.50 + 19.90
    assert "HINCRBY session:{task1} c:SKU-TEE-M 1" in cart.log_text
    assert cart.status_text == "Added 1 × SKU-TEE-M: 1 in the cart."
    assert "Red mug" in cart.items.value and "T-shirt, size M" in cart.items.value

    cart.sku.value, cart.quantity.value = "SKU-RED-MUG", 1
    cart.remove.click()
    assert raw.hget("session:{task1}", "c:SKU-RED-MUG") == "1"
    assert cart.total.value == "Total: 32.40 €"

    cart.quantity.value = 5  # more than there is: the item goes
    cart.remove.click()
    assert cart_in(raw, "session:{task1}") == {"SKU-TEE-M": "1"}
    assert cart.status_text == "Removed 5 × SKU-RED-MUG: 0 left in the cart."
    assert cart.cart() == {"SKU-TEE-M": 1}


def test_cart_keeps_the_session_ttl(cart, raw):
    raw.expire("session:{task1}", 120)
    cart.add.click()
    assert 0 < raw.ttl("session:{task1}") <= 120  # a cart change neither resets nor drops it


@pytest.mark.parametrize("quantity", [0, -1])
@pytest.mark.parametrize("button", ["add", "remove"])
def test_cart_bad_quantity_is_explained_and_changes_nothing(cart, raw, quantity, button):
    cart.add.click()
    before = cart_in(raw, "session:{task1}")
    cart.quantity.value = quantity
    getattr(cart, button).click()

    assert error_shown(cart).startswith(f"InvalidCartItem: quantity {quantity} is out of range")
    assert cart_in(raw, "session:{task1}") == before


def test_cart_of_a_missing_session_writes_nothing(store, raw, panels):
    cart = CartPanel(store, "nobody")
    panels.append(cart)
    assert "session:{nobody} does not exist" in error_shown(cart)
    cart.add.click()
    assert "session:{nobody} does not exist" in error_shown(cart)
    assert raw.dbsize() == 0


def test_cart_expires_with_its_session(store, raw, panels):
    store.create("short", SEED, 2)
    cart = CartPanel(store, "short")
    panels.append(cart)
    cart.quantity.value = 3
    cart.add.click()
    assert cart.total.value == "Total: 37.50 €"
    assert cart.counting_down

    wait_until(lambda: not cart.counting_down, "the cart's countdown to stop at expiry")
    assert cart.status_text == "session:{short} expired: its cart went with it."
    assert cart.total.value == "Total: 0.00 €"
    assert cart.ttl_left.value == "no session"
    assert raw.exists("session:{short}") == 0


def test_cart_server_down_is_explained(cart, server):
    server.crash()
    cart.add.click()
    assert error_shown(cart).startswith("ConnectionError: Redis did not answer")


# -- what notebooks and browsers rely on ---------------------------------------------------------


def test_text_repr_is_deterministic(explorer, cart):
    assert explorer._repr_mimebundle_()["text/plain"] == "<SessionExplorer>"
    assert cart._repr_mimebundle_()["text/plain"] == "<CartPanel>"


def test_every_part_has_a_stable_css_class(explorer, cart):
    assert {"sl-panel", "sl-explorer"} <= set(explorer._dom_classes)
    parts = {
        "session_id": "sl-explorer-id",
        "user_id": "sl-explorer-user",
        "name": "sl-explorer-name",
        "theme": "sl-explorer-theme",
        "browser": "sl-explorer-browser",
        "ttl": "sl-explorer-ttl",
        "create": "sl-explorer-create",
        "read": "sl-explorer-read",
        "update": "sl-explorer-update",
        "touch": "sl-explorer-touch",
        "delete": "sl-explorer-delete",
        "ttl_left": "sl-explorer-ttl-left",
        "ttl_bar": "sl-explorer-ttl-bar",
        "data": "sl-explorer-data",
        "status": "sl-status",
        "log": "sl-log",
    }
    for attribute, css_class in parts.items():
        assert css_class in getattr(explorer, attribute)._dom_classes, attribute
    assert {"sl-panel", "sl-cart"} <= set(cart._dom_classes)
    for attribute in ["session_id", "sku", "quantity", "add", "remove", "refresh", "total"]:
        assert any(c.startswith("sl-cart-") for c in getattr(cart, attribute)._dom_classes)


def test_price_list_covers_the_lesson_skus():
    assert {"SKU-RED-MUG", "SKU-TEE-M", "SKU-SOCKS"} <= set(PRICES)


def test_redis_command_quotes_like_redis_cli():
    assert redis_command("GET", "session:{abc}") == "GET session:{abc}"
    assert redis_command("SET", "k", '{"a": "it\'s"}', "EX", 5) == 'SET k \'{"a": "it\\\'s"}\' EX 5'


def test_connection_panel_names_the_server_it_reached():
    # Valkey reports redis_version 7.2.4 (its compatibility level): the panel names Valkey.
    from sessionlab.memory import server_build
    from sessionlab.widgets.connection import ConnectionPanel

    with LabServer(requirepass="panel-test") as locked:
        expected = server_build(locked.client()).split(",")[0]  # "Valkey 9.1.2" / "Redis 7.0.15"
        panel = ConnectionPanel(port=locked.port)
        panel.password.value = "panel-test"
        panel.test.click()
        assert panel.status_text.endswith(f": {expected}, 0 keys."), panel.status_text
        panel.close()


def test_a_bug_in_a_click_is_raised_not_dressed_as_a_message(explorer):
    """Our errors (bad input included) become a red line; a bare ValueError is a bug: raised."""
    shown = explorer.action(lambda: (_ for _ in ()).throw(InvalidTTL("TTL 0 is out of range")))
    shown()
    assert "InvalidTTL" in explorer.status_text
    bug = explorer.action(lambda: int("not a number"))
    with pytest.raises(ValueError, match="invalid literal"):
        bug()

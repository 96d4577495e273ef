"""Lesson 07's device panel driven kernel-side, as a student would: ``.click()``, then read.

Each test checks what Redis really holds with its own raw client, besides what the panel shows,
and that no session id ever reaches the panel's labels or log (only fingerprints do).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from sessionlab import SessionStore
from sessionlab.errors import SessionError
from sessionlab.security import fingerprint
from sessionlab.widgets.security import DevicePanel

USER = "U001"
DEVICES = ["laptop", "phone", "tablet"]


@pytest.fixture
def sessions(store: SessionStore) -> dict[str, str]:
    """Rohith signed in on three devices: device -> session id."""
    made = {}
    for device in DEVICES:
        made[device] = store.new_id()
        store.create(made[device], {"name": "Rohith", "device": device}, user_id=USER)
    return made


@pytest.fixture
def panel(store: SessionStore, sessions: dict[str, str]) -> Iterator[DevicePanel]:
    made = DevicePanel(store, USER, current=sessions["laptop"])
    yield made
    made.close()


def shown_text(panel: DevicePanel) -> str:
    """Everything a student can read in the panel: labels, status line, log."""
    labels = " ".join(row.children[1].value for row in panel.rows.children)
    return f"{labels} {panel.status_text} {panel.log_text}"


def alive(raw: redis.Redis, store: SessionStore, session_id: str) -> bool:
    return raw.exists(store.key(session_id)) == 1


def test_lists_every_device_of_the_user_with_one_button_each(panel, sessions):
    assert sorted(panel.devices) == DEVICES
    assert len(panel.logout_buttons) == 3
    assert sorted(panel.session_ids) == sorted(sessions.values())
    assert panel.status_text == "3 device(s) signed in as U001."
    assert "(this device)" in panel.rows.children[panel.devices.index("laptop")].children[1].value
    assert "ZRANGE session:user:{U001} 0 -1" in panel.log_text


def test_rows_are_in_device_order_whatever_second_each_signed_in(raw, store, sessions, panel):
    """Creation times are whole seconds: sessions made in one burst may straddle a second,
    which must not reorder the rows (a notebook prints them)."""
    raw.hset(
        store.key(sessions["tablet"]),
        "_c",
        int(raw.hget(store.key(sessions["tablet"]), "_c")) - 100,
    )
    panel.refresh.click()
    assert panel.devices == DEVICES


def test_other_users_sessions_are_not_listed(store, sessions, panel):
    store.create(store.new_id(), {"device": "someone else's"}, user_id="U002")
    panel.refresh.click()
    assert sorted(panel.devices) == DEVICES


def test_no_session_id_is_ever_shown_only_fingerprints(panel, sessions):
    panel.logout_buttons[panel.devices.index("phone")].click()
    panel.logout_others.click()
    text = shown_text(panel)
    for session_id in sessions.values():
        assert session_id not in text
    assert fingerprint(sessions["phone"]) in panel.log_text


def test_log_out_one_device_deletes_only_that_session(panel, sessions, store, raw):
    panel.logout_buttons[panel.devices.index("phone")].click()

    assert not alive(raw, store, sessions["phone"])
    assert alive(raw, store, sessions["laptop"]) and alive(raw, store, sessions["tablet"])
    assert sorted(panel.devices) == ["laptop", "tablet"]
    assert panel.status_text == f"Logged out {fingerprint(sessions['phone'])}."


def test_log_out_a_session_that_already_ended_says_so(panel, sessions, store):
    store.delete(sessions["tablet"])  # ended elsewhere after the panel drew its rows
    panel.logout_buttons[panel.devices.index("tablet")].click()

    assert (
        panel.status_text
        == f"{fingerprint(sessions['tablet'])} had already ended (expired or out)."
    )
    assert sorted(panel.devices) == ["laptop", "phone"]


def test_log_out_other_devices_keeps_this_one(panel, sessions, store, raw):
    panel.logout_others.click()

    assert alive(raw, store, sessions["laptop"])
    assert not alive(raw, store, sessions["phone"]) and not alive(raw, store, sessions["tablet"])
    assert panel.devices == ["laptop"]
    assert panel.status_text == "Logged out 2 other device(s); this device stays signed in."


def test_log_out_other_devices_without_a_current_one_ends_nothing(store, sessions, raw):
    panel = DevicePanel(store, USER)
    try:
        panel.logout_others.click()
        assert 'class="sl-error"' in panel.status.value
        assert "No current device" in panel.status_text
        assert all(alive(raw, store, sid) for sid in sessions.values())
    finally:
        panel.close()


def test_log_out_everywhere_ends_every_session_and_the_index(panel, sessions, store, raw):
    panel.logout_all.click()

    assert not any(alive(raw, store, sid) for sid in sessions.values())
    assert raw.exists(store.user_key(USER)) == 0
    assert panel.devices == []
    assert panel.status_text == "Logged out everywhere: 3 session(s) ended."


def test_refresh_closes_the_rows_it_replaces(panel):
    old_buttons = panel.logout_buttons
    panel.refresh.click()
    assert all(button.comm is None for button in old_buttons)  # closed, not leaked
    assert all(button.comm is not None for button in panel.logout_buttons)


def test_a_stopped_server_is_a_readable_message_not_a_traceback(panel, server):
    server.stop()
    panel.refresh.click()

    assert 'class="sl-error"' in panel.status.value
    assert panel.status_text.startswith("ConnectionError: Redis did not answer")
    assert "Traceback" not in panel.status_text


def test_a_bad_user_id_is_refused_with_a_clear_error(store):
    with pytest.raises(SessionError, match="user"):
        DevicePanel(store, "not a valid id")

"""The course's sample session, in one place: every lesson, panel, test and benchmark uses it.

The profile is the seed notebook's example user; :data:`UPDATED` is the seed's update of it.
"""

from __future__ import annotations

from typing import Any

#: The seed notebook's example profile.
PROFILE: dict[str, Any] = {
    "user_id": "U001",
    "name": "Rohith",
    "preferences": {"theme": "dark", "browser": "Edge"},
}

#: The seed's update of that profile (another name, theme and browser).
UPDATED: dict[str, Any] = {
    "user_id": "U001",
    "name": "Alice",
    "preferences": {"theme": "light", "browser": "chrome"},
}

#: A 3-item cart, ``{sku: quantity}``; the SKUs are in the shop's price list (lesson 02's panel).
CART: dict[str, int] = {"SKU-RED-MUG": 2, "SKU-TEE-M": 1, "SKU-SOCKS": 3}


def profile() -> dict[str, Any]:
    """A fresh copy of :data:`PROFILE` (safe to change)."""
    return {**PROFILE, "preferences": dict(PROFILE["preferences"])}


def numbered(count: int, start: int = 1) -> list[tuple[str, dict[str, Any]]]:
    """``count`` sample sessions ``(session_id, profile)``: ids ``s000001``..., users ``U000001``...

    Deterministic, so a lesson's output is the same on every run.
    """
    return [
        (
            f"s{n:06d}",
            {
                "user_id": f"U{n:06d}",
                "name": f"User {n}",
                "preferences": {"theme": "dark" if n % 2 else "light", "browser": "Edge"},
            },
        )
        for n in range(start, start + count)
    ]

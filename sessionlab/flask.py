"""Flask sessions on a :class:`~sessionlab.store.SessionStore`: ``init_app(app, store)``.

After ``init_app``, ``flask.session`` is a dict of the session's profile fields, loaded with
one round trip per request (``store.load``, which also slides the idle expiry). What a
request writes back is only what it changed (``store.patch`` of those fields), never the
whole session, so two concurrent requests that change different fields both win (Spring
Session's "save on set attribute" does the same). The cart is never written back at all:
``session.add_to_cart(...)`` and friends are atomic store calls made at once.

A cookie that is garbage, unknown or expired is simply "no session" (never a 500), and a
logout cannot be undone by a request still in flight: ``patch`` never recreates a session.
A write whose reply never came answers 503 (the store sends no write twice; see
:class:`~sessionlab.errors.WriteOutcomeUnknown`).

    from flask import Flask, session
    from sessionlab import SessionStore, connect
    from sessionlab.flask import init_app, login

    app = Flask(__name__)
    init_app(app, SessionStore(connect()))

    @app.post("/theme")
    def theme():
        session["theme"] = "dark"          # written alone at the end of the request
        session.add_to_cart("SKU-MUG", 1)   # atomic HINCRBY, now
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Request, Response, current_app
from flask import session as flask_session
from flask.sessions import SessionInterface, SessionMixin

from .errors import CorruptSession, InvalidSessionId, InvalidSetting, WriteOutcomeUnknown
from .store import SessionStore, fingerprint, profile_fields

#: The ``app.extensions`` entry that holds the store, for code outside a request's session.
EXTENSION = "sessionlab"

#: What a client gets when a write's reply never came (:class:`WriteOutcomeUnknown`): the id
#: and the key stay out of it (the body may end up in logs).
OUTCOME_UNKNOWN = (
    "Redis did not answer in time, so this request's change may or may not have been saved. "
    "It was not sent again (that could apply it twice): reload to see what was saved, and "
    "repeat the change only if it is missing."
)


class StoreSession(dict, SessionMixin):  # type: ignore[type-arg]
    """The profile of one session, as a dict, remembering which fields this request changed.

    ``session_id`` is ``None`` for a visitor without a (valid) session; writing a field
    then creates one at the end of the request. ``cart`` is the cart as loaded (and as
    changed by this request's cart calls); ``ttl`` the seconds left after the load slid them.
    """

    def __init__(
        self,
        store: SessionStore,
        session_id: str | None = None,
        profile: dict[str, Any] | None = None,
        cart: dict[str, int] | None = None,
        ttl: int | None = None,
        user_id: str | None = None,
    ) -> None:
        super().__init__(profile or {})
        self.store = store
        self.session_id = session_id
        self.cart: dict[str, int] = dict(cart or {})
        self.ttl = ttl
        self.user_id = user_id
        self.accessed = False
        self.modified = False
        #: The request's cookie named no live session: tell the browser to drop it.
        self.stale_cookie = False
        #: The session was deleted in this request (logout, or found gone when writing).
        self.ended = False
        #: The id changed in this request (login, rotate): send the new cookie.
        self.new_id = False
        self._loaded = {key: _fingerprint(value) for key, value in self.items()}
        self._set: set[str] = set()

    @property
    def permanent(self) -> bool:
        """Always ``True``: the cookie's ``Max-Age`` is the session's own time left.

        Flask keeps this flag as a ``_permanent`` key in the dict; here it is no profile field.
        """
        return True

    @permanent.setter
    def permanent(self, value: bool) -> None:
        pass  # Flask code that sets it keeps working; the store decides how long a session lives

    # -- reads: remember that the response depends on the session (Vary: Cookie) --------

    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.accessed = True
        return super().__contains__(key)

    # -- writes: remember which fields changed -------------------------------------------

    def __setitem__(self, key: str, value: Any) -> None:
        profile_fields({key: value})  # refuse what the store cannot hold here, in the view
        super().__setitem__(key, value)
        self._set.add(key)
        self.modified = self.accessed = True

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._set.discard(key)
        self.modified = self.accessed = True

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            value = self[key]
            del self[key]
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def popitem(self) -> tuple[str, Any]:
        key = next(reversed(self.keys()))
        return key, self.pop(key)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> StoreSession:  # type: ignore[override]
        self.update(other)
        return self

    def clear(self) -> None:
        """End the session (Flask's usual logout): delete it, cart included, now.

        Fields set afterwards in the same request go into a brand-new session with a new id,
        so ``session.clear(); session["user_id"] = uid`` is a login safe from fixation.
        """
        if self.session_id is not None:
            self.store.delete(self.session_id)
            self.ended = True
        super().clear()
        self.session_id, self.cart, self.ttl, self.user_id = None, {}, None, None
        self._loaded, self._set = {}, set()
        self.modified = self.accessed = True

    # -- session-level actions -----------------------------------------------------------

    def login(self, user_id: str, **profile: Any) -> str:
        """Log ``user_id`` in under a NEW session id (no session fixation); the new id.

        A session this request had is moved to the new id with ``store.rotate(..., user_id)``,
        one step that also links it to the user: an anonymous visitor keeps the cart, and the
        old id (perhaps planted by an attacker) is dead. A session of *another* user is ended
        instead (nothing of theirs carries over). The user id has one home, the session's link
        (:attr:`user_id`, what ``logout_everywhere`` uses), not a profile field; ``profile``
        fields are written now, so that cart calls can follow.
        """
        data = dict(profile)
        session_id = None
        if self.session_id is not None and self.user_id in (None, user_id):
            self.flush()  # this request's own changes move with the session
            if self.session_id is not None:
                session_id = self.store.rotate(self.session_id, user_id=user_id)
            if session_id is not None and data and not self.store.patch(session_id, data):
                session_id = None  # expired right after the rotation
        if session_id is None:  # no session, another user's, or gone meanwhile: start afresh
            self.clear()
            session_id = self.store.new_id(user_id=user_id)  # on a cluster: the user's slot
            self.store.create(session_id, data, user_id=user_id)
            self.ttl = _initial_ttl(self.store)
        dict.update(self, data)
        self.session_id, self.user_id, self.new_id = session_id, user_id, True
        self._loaded = {key: _fingerprint(value) for key, value in self.items()}
        self._set = set()
        self.ended = False
        return session_id

    def rotate(self) -> str | None:
        """Give the session a new id, same data (after a privilege change); ``None`` if gone."""
        if self.session_id is None:
            return None
        self.flush()
        new = self.store.rotate(self.session_id)
        if new is None:
            self._gone()
            return None
        self.session_id, self.new_id = new, True
        return new

    def changes(self) -> tuple[dict[str, Any], list[str]]:
        """The fields this request set or changed in place, and the fields it removed."""
        changed = {
            key: value
            for key, value in self.items()
            if key in self._set or _fingerprint(value) != self._loaded.get(key)
        }
        removed = [key for key in self._loaded if not dict.__contains__(self, key)]
        return changed, removed

    def flush(self) -> bool:
        """Write this request's changes now (``save_session`` does it at the end anyway).

        Creates the session if there is none yet and fields were set. ``False`` if the
        session ended meanwhile (a logout elsewhere): nothing is written then.
        """
        changed, removed = self.changes()
        if self.session_id is None:
            if not changed:
                return True
            session_id = self.store.new_id()
            self.store.create(session_id, changed)
            self.session_id, self.new_id, self.ttl = session_id, True, _initial_ttl(self.store)
        elif (changed or removed) and not self.store.patch(self.session_id, changed, removed):
            self._gone()
            return False
        self._loaded = {key: _fingerprint(value) for key, value in self.items()}
        self._set = set()
        return True

    # -- the cart: atomic calls, made at once ----------------------------------------------

    def add_to_cart(self, sku: str, quantity: int = 1) -> int | None:
        """Add ``quantity`` of ``sku`` (one atomic call); the new quantity, ``None`` if gone."""
        return self._cart_call(self.store.add_to_cart, sku, quantity)

    def set_quantity(self, sku: str, quantity: int) -> int | None:
        """Set the quantity of ``sku``; the new quantity, or ``None`` if the session is gone."""
        return self._cart_call(self.store.set_quantity, sku, quantity)

    def remove_from_cart(self, sku: str, quantity: int | None = None) -> int | None:
        """Remove ``quantity`` of ``sku`` (all if ``None``); what is left, ``None`` if gone."""
        return self._cart_call(self.store.remove_from_cart, sku, quantity)

    def _cart_call(self, call: Any, sku: str, quantity: int | None) -> int | None:
        self.accessed = True
        if self.session_id is None or self.ended:
            return None
        result = call(self.session_id, sku, quantity)
        if result is None:
            self._gone()
        elif result > 0:
            self.cart[sku] = result
        else:
            self.cart.pop(sku, None)
        return result

    def _gone(self) -> None:
        """The session was deleted or expired under this request: forget it, drop the cookie."""
        super().clear()
        self.session_id, self.cart, self.user_id = None, {}, None
        self._loaded, self._set = {}, set()
        self.ended = True

    def __repr__(self) -> str:
        return f"<StoreSession fields={sorted(self)} cart={self.cart}>"


class StoreSessionInterface(SessionInterface):
    """Flask's hook: open (load) the session before a request, save its changes after it."""

    def __init__(
        self,
        store: SessionStore,
        cookie_name: str = "sid",
        secure: bool = False,
        samesite: str = "Lax",
        refresh_each_request: bool = True,
    ) -> None:
        if samesite not in ("Lax", "Strict", "None"):
            raise InvalidSetting(f"samesite={samesite!r}: use 'Lax', 'Strict' or 'None'.")
        if samesite == "None" and not secure:
            raise InvalidSetting("samesite='None' needs secure=True: browsers refuse it otherwise.")
        self.store = store
        self.cookie_name = cookie_name
        self.secure = secure
        self.samesite = samesite
        self.refresh_each_request = refresh_each_request

    def open_session(self, app: Flask, request: Request) -> StoreSession:
        cookie = request.cookies.get(self.cookie_name)
        if not cookie:
            return StoreSession(self.store)
        try:
            loaded = self.store.load(cookie)
        except InvalidSessionId:  # garbage such as "abc{def}": no session, never a 500
            loaded = None
        except CorruptSession:  # not ours to read; say so (never the id), serve as "no session"
            app.logger.warning(
                "sessionlab: ignoring a session cookie whose key holds no session (%s)",
                fingerprint(cookie),
            )
            loaded = None
        if loaded is None:
            session = StoreSession(self.store)
            session.stale_cookie = True
            return session
        return StoreSession(
            self.store,
            loaded.session_id,
            loaded.profile,
            loaded.cart,
            loaded.ttl,
            loaded.user_id,
        )

    def save_session(self, app: Flask, session: StoreSession, response: Response) -> None:  # type: ignore[override]
        if session.accessed:
            response.vary.add("Cookie")
        try:
            session.flush()
        except WriteOutcomeUnknown:  # here Flask would answer 500: say what happened instead
            _outcome_unknown(response)
            return
        if session.session_id is None:
            if session.stale_cookie or session.ended:
                response.delete_cookie(
                    self.cookie_name,
                    path=self.get_cookie_path(app),
                    domain=self.get_cookie_domain(app),
                    secure=self.secure,
                    httponly=True,
                    samesite=self.samesite,
                )
            return
        if session.new_id or self.refresh_each_request:
            # The idle expiry slid on load: the cookie lives exactly as long as the session.
            response.set_cookie(
                self.cookie_name,
                session.session_id,
                max_age=session.ttl,
                path=self.get_cookie_path(app),
                domain=self.get_cookie_domain(app),
                secure=self.secure,
                httponly=True,
                samesite=self.samesite,
            )
            response.vary.add("Cookie")


def init_app(app: Flask, store: SessionStore, **options: Any) -> StoreSessionInterface:
    """Make ``flask.session`` a :class:`StoreSession` on ``store`` for every request of ``app``.

    ``options``: ``cookie_name`` (``"sid"``), ``secure`` (``False``; set ``True`` behind
    HTTPS), ``samesite`` (``"Lax"``), ``refresh_each_request`` (``True``: renew the cookie's
    ``Max-Age`` on every response, as the idle expiry slides). The cookie is always HttpOnly.
    A write whose reply never came (:class:`~sessionlab.errors.WriteOutcomeUnknown`, in a view
    or when the session is saved) answers 503 with ``{"error": ...}``, never 500.
    """
    interface = StoreSessionInterface(store, **options)
    app.session_interface = interface
    app.register_error_handler(WriteOutcomeUnknown, lambda _error: _outcome_unknown(Response()))
    app.extensions[EXTENSION] = store
    return interface


def current_session() -> StoreSession:
    """This request's session (``flask.session``, typed)."""
    session = flask_session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(session, StoreSession):
        raise RuntimeError("sessionlab.flask.init_app(app, store) was not called for this app.")
    return session


def current_session_id() -> str | None:
    """The id of this request's session, or ``None`` when the visitor has none (or it ended)."""
    return current_session().session_id


def current_store() -> SessionStore:
    """The store ``init_app`` installed on the current app."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def login(user_id: str, **profile: Any) -> str:
    """Log ``user_id`` in under a new session id in this request (:meth:`StoreSession.login`)."""
    return current_session().login(user_id, **profile)


def logout() -> bool:
    """End this request's session; ``False`` if there was none."""
    session = current_session()
    had = session.session_id is not None
    session.clear()
    return had


def _outcome_unknown(response: Response) -> Response:
    """Turn ``response`` into the 503 for a write whose outcome is unknown."""
    response.status_code = 503
    response.set_data(json.dumps({"error": OUTCOME_UNKNOWN}))
    response.mimetype = "application/json"
    return response


def _fingerprint(value: Any) -> str:
    """A comparable snapshot of a field's value, to notice changes made in place."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):  # not JSON: surely changed; patch() will explain the error
        return "\0unserializable"


def _initial_ttl(store: SessionStore) -> int:
    """The TTL of a session just created: the idle TTL, capped by the absolute one."""
    idle = getattr(store, "idle_ttl", None) or store.default_ttl
    absolute = getattr(store, "absolute_ttl", None) or idle
    return min(idle, absolute)

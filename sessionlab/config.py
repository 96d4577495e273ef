"""Where the Redis server is: read from the environment and ``.env``, checked early.

The variables are the seed notebook's (``REDIS_HOST``, ``REDIS_PORT``, ``REDIS_PASSWORD``)
plus ``REDIS_DB`` and ``REDIS_URL``. When none is set, no server is named and
:func:`sessionlab.connect` starts a private one instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from dotenv import dotenv_values, find_dotenv
from redis.connection import parse_url

from .errors import ConfigError

#: Variables that name a server; any one of them set means "do not start one".
SERVER_VARIABLES = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB")

#: Points at the ``.env`` file to read instead of searching for one (``/dev/null``: none).
ENV_FILE_VARIABLE = "SESSIONLAB_ENV_FILE"

URL_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class Settings:
    """A Redis server to connect to, or none (``url`` and ``host`` both ``None``).

    The password never shows in ``repr`` or ``str``: it is printed as ``***``.
    """

    url: str | None = None
    host: str | None = None
    port: int = 6379
    password: str | None = field(default=None, repr=False)
    db: int = 0
    server_bin: str | None = None

    @property
    def names_server(self) -> bool:
        """True when the settings point at an existing server."""
        return self.url is not None or self.host is not None

    @property
    def address(self) -> str:
        """``host:port`` (or the socket path) for error messages; never the password."""
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme == "unix":
                return parts.path
            return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        shown = []
        if self.url is not None:
            shown.append(f"url={mask_url(self.url)!r}")
        if self.host is not None:
            shown.append(f"host={self.host!r}, port={self.port!r}, db={self.db!r}")
            if self.password is not None:
                shown.append("password='***'")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (works on malformed URLs too).

    Masks ``user:password@`` (up to the last ``@``, so an unescaped ``/`` or ``@`` in the
    password is masked too) and a ``password=`` query argument, which redis-py also reads.
    """
    scheme, sep, rest = url.partition("://")
    userinfo, at, tail = rest.rpartition("@")
    if sep and at and ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:***@{tail}"
    rest = _QUERY_PASSWORD.sub(r"\1***", rest)
    return f"{scheme}{sep}{rest}"


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Merge ``.env`` under the process environment (the environment wins, as in dotenv).

    The ``.env`` file is ``$SESSIONLAB_ENV_FILE`` if set, else the first ``.env`` found
    from the working directory upwards (so notebooks in ``notebooks/`` see the repo's).
    """
    environ = os.environ if environ is None else environ
    path = environ.get(ENV_FILE_VARIABLE) or find_dotenv(usecwd=True)
    values = {k: v for k, v in dotenv_values(path).items() if v is not None} if path else {}
    values.update(environ)
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check the Redis settings; raise :class:`ConfigError` naming a bad variable.

    ``environ`` defaults to ``.env`` merged under ``os.environ``; pass a dict to read
    exactly that (no ``.env``), as tests and lessons do.
    """
    env = read_environment() if environ is None else dict(environ)
    value = {name: env.get(name, "").strip() or None for name in SERVER_VARIABLES}
    server_bin = env.get("REDIS_SERVER_BIN", "").strip() or None
    split_vars = [n for n in SERVER_VARIABLES[1:] if value[n] is not None]

    if value["REDIS_URL"] is not None:
        if split_vars:
            raise ConfigError(
                f"REDIS_URL is set together with {', '.join(split_vars)}: set either REDIS_URL "
                "or the REDIS_HOST/REDIS_PORT/REDIS_PASSWORD/REDIS_DB variables, not both."
            )
        return Settings(url=_check_url(value["REDIS_URL"]), server_bin=server_bin)
    if not split_vars:
        return Settings(server_bin=server_bin)
    return Settings(
        host=value["REDIS_HOST"] or "localhost",
        port=_int_variable("REDIS_PORT", value["REDIS_PORT"], 6379, 1, 65535),
        password=value["REDIS_PASSWORD"],
        db=_int_variable("REDIS_DB", value["REDIS_DB"], 0, 0, 2**31 - 1),
        server_bin=server_bin,
    )


def _int_variable(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    # int() also takes "1_000", "+5" and non-ASCII digits: only plain 0-9 is a setting.
    if not re.fullmatch(r"-?[0-9]+", raw):
        raise ConfigError(
            f"{name}={raw!r} is not a whole number: set {name} to a number from {low} to {high} "
            "in .env or the environment."
        )
    number = int(raw)
    if not low <= number <= high:
        raise ConfigError(f"{name}={number} is out of range: use a number from {low} to {high}.")
    return number


def _check_url(url: str) -> str:
    shown = mask_url(url)
    if not url.startswith(tuple(f"{scheme}://" for scheme in URL_SCHEMES)):
        raise ConfigError(
            f"REDIS_URL={shown!r} must start with redis://, rediss:// (TLS) or unix://."
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(
            f"REDIS_URL={shown!r} has a bad port: write it as redis://[:password@]host:port/db."
        ) from None
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"REDIS_URL={shown!r} names no host: write redis://host:port/db.")
    # redis-py reads "/abc" as db 0 and "/1_0" or "?db=1_0" as db 10, without a word.
    path = parts.path if parts.scheme != "unix" else ""
    if path not in ("", "/") and not re.fullmatch(r"/[0-9]+", path):
        raise ConfigError(
            f"REDIS_URL={shown!r} ends in {path!r}, which is not a database number: write "
            "redis://host:port/0 (or another number from 0), or leave the path out."
        )
    for db in parse_qs(parts.query).get("db", []):
        if not re.fullmatch(r"[0-9]+", db):
            raise ConfigError(
                f"REDIS_URL={shown!r} has db={db!r}: the database must be a plain number "
                "(0, 1, ...)."
            )
    try:
        parse_url(url)  # what redis-py will do with it
    except ValueError as error:
        raise ConfigError(f"REDIS_URL={shown!r} cannot be used: {error}") from None
    return url

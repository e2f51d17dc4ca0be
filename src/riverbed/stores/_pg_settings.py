"""Where a :class:`~riverbed.stores.postgres.PostgresStore` connects, parsed from a URL.

``postgresql://user:password@host:port/database?schema=riverbed&lease_seconds=30``. The
password is kept out of every ``repr``, log line and error message: they show
:meth:`PgSettings.redacted` instead.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote, urlsplit

from riverbed.errors import StoreError

__all__ = ["PgSettings", "parse_url"]

_SCHEMES = ("postgresql", "postgres")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_OPTIONS = (
    "schema",
    "lease_seconds",
    "connect_timeout",
    "lock_timeout",
    "pool_size",
    "sslmode",
    "host",
    "port",
    "application_name",
)


@dataclass(frozen=True)
class PgSettings:
    """Connection settings. ``connect_timeout`` bounds how long opening the store (and
    reconnecting after the server went away) keeps retrying before it gives up;
    ``lock_timeout`` how long a transaction waits for a row another session keeps locked
    (PostgreSQL's ``lock_timeout``) before ``StoreLockedError``."""

    host: str = "localhost"
    port: int = 5432
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    schema: str = "riverbed"
    lease_seconds: float = 30.0
    connect_timeout: float = 10.0
    lock_timeout: float = 30.0
    pool_size: int = 10
    sslmode: str | None = None
    application_name: str = "riverbed"

    def __post_init__(self) -> None:
        if not _IDENTIFIER.fullmatch(self.schema):
            raise StoreError(
                f"schema={self.schema!r} is not a plain PostgreSQL name: use letters, digits "
                "and underscores (at most 63), not starting with a digit."
            )
        if (
            self.lease_seconds <= 0
            or self.connect_timeout < 0
            or self.lock_timeout <= 0
            or self.pool_size < 1
        ):
            raise StoreError(
                "lease_seconds and lock_timeout must be > 0, connect_timeout >= 0, pool_size >= 1."
            )
        if self.sslmode is not None and self.sslmode not in _SSLMODES:
            raise StoreError(
                f"sslmode must be one of {', '.join(_SSLMODES)}, not {self.sslmode!r}."
            )

    @property
    def where(self) -> str:
        """``host:port/database``, for messages."""
        return f"{self.host}:{self.port}/{self.database or self.user or ''}"

    @property
    def work_channel(self) -> str:
        """The ``LISTEN/NOTIFY`` channel on which this schema's stores announce work that no
        process runs (``riverbed_work``, with the schema's name unless it is the default,
        so that stores of other schemas in the same database are not woken)."""
        if self.schema == "riverbed":
            return "riverbed_work"
        channel = f"riverbed_work_{self.schema}"
        if len(channel) > 63:  # PostgreSQL's longest identifier
            channel = f"riverbed_work_{zlib.crc32(self.schema.encode()):08x}"
        return channel

    def redacted(self) -> str:
        """The URL with the password replaced by ``***``: safe to print."""
        user = quote(self.user or "", safe="")
        auth = f"{user}:***@" if self.password else (f"{user}@" if user else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.host.startswith("/"):
            host = ""
        query = f"?schema={self.schema}"
        if self.host.startswith("/"):
            query += f"&host={quote(self.host, safe='/')}"
        return f"postgresql://{auth}{host}:{self.port}/{quote(self.database or '')}{query}"

    def scrub(self, text: str) -> str:
        """``text`` with the password (plain or URL-quoted) replaced by ``***``."""
        if not self.password:
            return text
        for secret in {self.password, quote(self.password, safe="")}:
            text = text.replace(secret, "***")
        return text


def parse_url(url: str) -> PgSettings:
    """Settings from ``postgresql://`` or ``postgres://`` URLs.

    Options (query string): ``schema`` (default ``riverbed``; created if missing),
    ``lease_seconds``, ``connect_timeout`` (seconds to keep retrying an unreachable
    server), ``lock_timeout`` (seconds to wait for a row lock), ``pool_size``,
    ``sslmode``, ``application_name``, and ``host``/``port`` (a ``host`` starting with
    ``/`` is a unix-socket directory). Raises :class:`~riverbed.errors.StoreError` for
    anything else, never echoing the password.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if scheme not in _SCHEMES:
        raise StoreError(f"Not a PostgreSQL URL (scheme {scheme!r}); use postgresql://...")
    try:
        port_text = parts.port
    except ValueError as exc:
        raise StoreError(
            f"The port in the PostgreSQL URL (host {netloc!r}) is not a number."
        ) from exc
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_OPTIONS))
    if unknown:
        raise StoreError(
            f"Unknown option(s) {unknown} in the PostgreSQL URL; known: {list(_OPTIONS)}."
        )
    options = {key: values[-1] for key, values in query.items()}
    host = options.get("host") or parts.hostname or "localhost"
    try:
        port = int(options.get("port") or port_text or 5432)
        lease = float(options.get("lease_seconds", 30.0))
        timeout = float(options.get("connect_timeout", 10.0))
        lock_timeout = float(options.get("lock_timeout", 30.0))
        pool = int(options.get("pool_size", 10))
    except ValueError as exc:
        raise StoreError(
            "port, pool_size, lease_seconds, connect_timeout and lock_timeout in the PostgreSQL "
            "URL must be "
            "numbers."
        ) from exc
    database = unquote(parts.path.lstrip("/")) or None
    return PgSettings(
        host=host,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        database=database,
        schema=options.get("schema", "riverbed"),
        lease_seconds=lease,
        connect_timeout=timeout,
        lock_timeout=lock_timeout,
        pool_size=pool,
        sslmode=options.get("sslmode"),
        application_name=options.get("application_name", "riverbed"),
    )

"""What protects the API: a bearer token, a request body limit, and the rule that a
server bound beyond loopback needs a token.

Both guards are plain ASGI middleware, so they also cover streaming responses.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riverbed.server.errors import ServerConfigError

__all__ = ["BearerAuth", "BodyLimit", "check_binding", "is_loopback"]

#: an oversized body is read to its end (and dropped) up to this size before the 413
_DRAIN_LIMIT = 16 * 1024 * 1024


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``127.x.x.x`` and ``::1``: only this machine can connect."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token (raises ``ServerConfigError``)."""
    if token is None and not is_loopback(host):
        raise ServerConfigError(
            f"Refusing to listen on {host!r} without a token: anyone who can reach it could "
            "start, read and cancel runs. Pass --token (or token=...) and send it as "
            "'Authorization: Bearer <token>', or listen on 127.0.0.1."
        )
    if token is not None and len(token) < 16:
        raise ServerConfigError("The token is too short: use at least 16 random characters.")


async def _send_problem(
    send: Send, status: int, kind: str, title: str, detail: str, headers: Iterable[tuple[str, str]]
) -> None:
    body = json.dumps(
        {"type": f"urn:riverbed:problem:{kind}", "title": title, "status": status, "detail": detail}
    ).encode()
    raw = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BearerAuth:
    """Require ``Authorization: Bearer <token>`` on every request except the page's own
    static files (``public_paths``), which hold no data. The token is compared in constant
    time."""

    def __init__(self, app: ASGIApp, token: str, public_paths: Iterable[str] = ()) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()
        self._public = tuple(public_paths)

    def _is_public(self, path: str) -> bool:
        # "/static/" is a prefix; "/" only itself (every path starts with it).
        return any(
            path == p or (p.endswith("/") and len(p) > 1 and path.startswith(p))
            for p in self._public
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        if self._is_public(path):
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
                break
        if not hmac.compare_digest(given, self._expected):
            detail = (
                "This server needs a token: send 'Authorization: Bearer <token>'."
                if not given
                else "The token sent does not match the server's token."
            )
            await _send_problem(
                send, 401, "unauthorized", "Unauthorized", detail, [("www-authenticate", "Bearer")]
            )
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Answer 413 to a request whose body is larger than ``max_bytes``, before the
    endpoint sees any of it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await self._refuse(send)
                return
        # Read the body here (it is small by construction), then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        first: Message | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                first = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                # Read (and drop) the rest, within reason, so the client is not cut off
                # while sending and does get the 413.
                while message.get("more_body", False) and size < _DRAIN_LIMIT:
                    message = await receive()
                    size += len(message.get("body", b""))
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                if first is not None:
                    return first
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        await _send_problem(
            send,
            413,
            "body-too-large",
            "Request body too large",
            f"The request body is larger than this server accepts ({self.max_bytes} bytes).",
            [("connection", "close")],
        )

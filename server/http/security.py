"""Access checks in one ASGI middleware: the Host allow-list (DNS rebinding), the bearer token, and the
Origin of WebSocket handshakes and of state-changing browser requests."""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from server.config import LOOPBACK_HOSTS, Settings
from server.http.errors import error_response

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Paths anyone may fetch even with a token set: the liveness probe and the web UI's own files.
PUBLIC_PREFIXES = ("/health", "/static/", "/docs", "/favicon.ico")
PROTECTED_PREFIXES = ("/api/", "/sdapi/", "/ws", "/openapi.json")


def _host_name(host_header: str) -> str:
    """`example.com:9090` -> `example.com`; `[::1]:9090` -> `::1`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.token = settings.token
        self.allowed_hosts = {*LOOPBACK_HOSTS, settings.host.lower(), *(h.lower() for h in settings.allowed_hosts)}
        self.any_host = "*" in settings.allowed_hosts or settings.host in ("0.0.0.0", "::")
        self.allowed_origins = {o.rstrip("/").lower() for o in settings.allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, detail = refusal
        if scope["type"] == "websocket":
            # Closing before accept makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
            return
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        await error_response(status, detail, headers=extra)(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = _host_name(headers.get("host", ""))
        if not self.any_host and host not in self.allowed_hosts:
            return 403, f"Host '{host}' is not allowed; add it to the allowed_hosts setting if you trust it"

        origin = headers.get("origin")
        checks_origin = scope["type"] == "websocket" or scope.get("method") in STATE_CHANGING
        if checks_origin and origin is not None and not self._origin_allowed(origin, headers.get("host", "")):
            return 403, f"Origin '{origin}' is not allowed; add it to the allowed_origins setting if you trust it"

        if self.token and self._needs_token(scope["path"]):
            given = self._given_token(scope, headers)
            if given is None:
                return (
                    401,
                    "An access token is required: send 'Authorization: Bearer <token>' (or HTTP Basic, the token as password)",
                )
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return 401, "The access token is wrong"
        return None

    def _origin_allowed(self, origin: str, host_header: str) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.allowed_origins or "*" in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        # Same origin: the page was served by this server under the very Host the request names.
        return parts.scheme in ("http", "https") and parts.netloc == host_header.strip().lower()

    @staticmethod
    def _needs_token(path: str) -> bool:
        if path.startswith(PUBLIC_PREFIXES):
            return False
        return path.startswith(PROTECTED_PREFIXES)

    @staticmethod
    def _given_token(scope: Scope, headers: dict[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        if auth[:6].lower() == "basic ":
            # A1111 clients (webuiapi, Open WebUI) send HTTP Basic: the token is the password, any user name.
            try:
                return base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return None
        # Browsers can't set headers on a WebSocket handshake or an <img src>, so those may carry `?token=`.
        if scope["type"] == "websocket" or scope.get("method") in ("GET", "HEAD"):
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            return values[0] if values else None
        return None

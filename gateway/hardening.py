"""Request hygiene for every route: allowed hosts, cross-site form posts refused, `nosniff` on every answer,
and no local file paths in client-facing error texts.

- **Allowed hosts** (`ALLOWED_HOSTS`): a `Host` header naming another host is 400, so a web page on a
  rebound DNS name cannot talk to a developer's gateway on 127.0.0.1. `*` allows any (behind a proxy
  that checks the host itself).
- **Cross-site form posts**: a browser sends a form (multipart, urlencoded or text/plain) to any site
  without a CORS preflight. Such a request that `Sec-Fetch-Site` marks cross-site, or whose `Origin`
  names another host than `Host`, is 403. API clients send no `Origin`/`Sec-Fetch-Site`, and JSON
  bodies need a preflight anyway, so Bearer-key clients are unaffected.
- **`X-Content-Type-Options: nosniff`** on every response, so a stored file is never sniffed into HTML.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Message, Receive, Scope, Send

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded", "text/plain")
"""Content types a browser may post cross-site without a preflight."""
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOSNIFF = (b"x-content-type-options", b"nosniff")


def parse_hosts(value: str) -> tuple[str, ...]:
    """`ALLOWED_HOSTS` as lower-case names (`*`, `name`, `*.domain` or `[v6]`)."""
    return tuple(name.strip().lower() for name in value.split(",") if name.strip())


def host_name(header: str) -> str:
    """The host of a `Host` header without its port (`[::1]` keeps its brackets)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_allowed(header: str | None, allowed: Iterable[str]) -> bool:
    """Whether a request's `Host` header names an allowed host (a missing header never is, unless `*`)."""
    patterns = tuple(allowed)
    if "*" in patterns:
        return True
    if not header:
        return False
    name = host_name(header)
    return any(name == p or (p.startswith("*.") and name.endswith(p[1:])) for p in patterns)


def cross_site_form(method: str, headers: dict[str, str]) -> bool:
    """Whether the request is a state-changing form post from another site."""
    if method not in UNSAFE_METHODS:
        return False
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in FORM_TYPES:
        return False
    if headers.get("sec-fetch-site", "").lower() == "cross-site":
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    origin_host = urlsplit(origin).netloc.lower() if origin != "null" else ""
    return origin_host != headers.get("host", "").lower()


def _refuse(status: int, detail: str) -> list[Message]:
    body = json.dumps({"status_code": status, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), NOSNIFF]
    start: HTTPResponseStartEvent = {"type": "http.response.start", "status": status, "headers": headers}
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    return [start, end]


def _refusal(scope: Scope, allowed: tuple[str, ...]) -> list[Message] | None:
    """The answer refusing the request (bad host, cross-site form post); None when it may pass. Its own
    function, so the decoded headers are not kept alive while a long response (an SSE stream) runs."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    if not host_allowed(headers.get("host"), allowed):
        return _refuse(400, "this host name is not served here; add it to ALLOWED_HOSTS")
    if cross_site_form(str(scope.get("method", "GET")), headers):
        return _refuse(403, "cross-site form posts are refused; call the API with a key instead")
    return None


def hardening_middleware(allowed_hosts: str) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware factory: host check, cross-site form check, `nosniff` on every response."""
    allowed = parse_hosts(allowed_hosts)

    def middleware(app: ASGIApp) -> ASGIApp:
        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            refusal = _refusal(scope, allowed)
            if refusal is not None:
                for message in refusal:
                    await send(message)
                return

            async def send_nosniff(message: Message) -> None:
                if message["type"] == "http.response.start":
                    kept = [(k, v) for k, v in message.get("headers", ()) if k.lower() != NOSNIFF[0]]
                    message = {**message, "headers": [*kept, NOSNIFF]}
                await send(message)

            await app(scope, receive, send_nosniff)

        return guarded

    return middleware


def _path_roots() -> tuple[str, ...]:
    roots = {tempfile.gettempdir(), str(Path.home()), "/tmp", "/var", "/home", "/root", "/data", "/cache", "/srv"}
    roots |= {"/usr", "/opt", "/work", "/mnt", "/proc", "/dev", "/etc", "/app"}
    return tuple(sorted(roots, key=len, reverse=True))


_LOCAL_PATH = re.compile(
    r"(?<![\w.:/-])(?:" + "|".join(re.escape(root) for root in _path_roots()) + r")(?:/[^\s'\",;)]*)?"
)


def without_local_paths(text: str) -> str:
    """`text` with absolute local file paths (temp dirs, data and home directories) replaced by `<file>`."""
    return _LOCAL_PATH.sub("<file>", text)

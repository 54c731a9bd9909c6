"""What every request passes before a route sees it: body size, API key, rate limit. Plain ASGI, so the
checks cost microseconds on the hot path, and each refusal is the API's JSON error shape."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import access

PUBLIC_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
MAX_BODY_BYTES = 64 * 1024


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per client: `rate` requests a second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate, self.burst = rate, burst if burst is not None else max(rate, 1.0)
        self._buckets: dict[str, _Bucket] = {}

    def wait(self, client: str, now: float | None = None) -> float:
        """0 when the request may go now (and takes a token); else seconds until a token is free."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        bucket = self._buckets.setdefault(client, _Bucket(self.burst, now))
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate


async def send_error(send: Callable[[dict], Awaitable[None]], status: int, message: str,
                     headers: Mapping[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: 413 over `max_body` bytes; 401 without a known API key and 403 when its account is not a
    dashboard account (only when the secrets configure a login); 429 over the rate limit."""

    def __init__(self, app, policy: access.Policy, keys: Mapping[str, str], limiter: RateLimiter,
                 max_body: int = MAX_BODY_BYTES) -> None:
        self.app, self.policy, self.keys, self.limiter, self.max_body = app, policy, keys, limiter, max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        client = (scope.get("client") or ("local", 0))[0]
        if scope["path"] not in PUBLIC_PATHS:
            refusal, client = self._identify(headers, client)
            if refusal:
                await send_error(send, *refusal)
                return
            delay = self.limiter.wait(client)
            if delay:
                await send_error(send, 429, f"Over the rate limit of {self.limiter.rate:g} requests a second; "
                                 f"retry in {delay:.2f} s", {"Retry-After": str(max(1, round(delay)))})
                return
        body = await self._body(headers, receive)
        if body is None:
            await send_error(send, 413, f"The request body is over {self.max_body // 1024} KiB")
            return
        await self.app(scope, _replay(body, receive), send)

    def _identify(self, headers: dict[bytes, bytes], client: str) -> tuple[tuple[int, str] | None, str]:
        """(refusal or None, the rate limiter's name for the caller: its key, or its address when open)."""
        if self.policy.mode == "open":
            return None, client
        key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
        if not key and headers.get(b"authorization", b"").lower().startswith(b"bearer "):
            key = headers[b"authorization"][7:].decode("latin-1").strip()
        if not key:
            return (401, "An API key is required: send it as the X-API-Key header"), client
        digest = access.key_digest(key)
        account = self.keys.get(digest)
        if account is None:
            return (401, "Unknown API key"), client
        if not access.is_account(self.policy, account):
            return (403, f"The key's account '{account}' is not a dashboard account"), digest
        return None, digest

    async def _body(self, headers: dict[bytes, bytes], receive) -> bytes | None:
        """The whole request body, or None once it passes `max_body` (declared or actually sent)."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def _replay(body: bytes, receive):
    """A `receive` that gives the app the body already read, then passes on the server's later messages."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

"""Limits on what a client of ``bundle serve`` may send over HTTP, and how long it may take.

uvicorn (KServe's HTTP server) has a keep-alive timeout but no deadline for a request's headers
or body, and KServe's FastAPI application has no body limit. These are ``bundle serve``'s own,
independent of those packages' versions:

- ``header_timeout_protocol``: uvicorn's HTTP protocol class with a deadline on each request's
  line and headers, from its first byte (a connection that sends nothing counts from its
  opening). Late: 408, and the connection closes. uvicorn makes a new request cycle when the
  headers are in, which is what ends the deadline.
- ``RequestLimits``: an ASGI middleware with the body limit (a ``Content-Length`` above it is a
  413 before the body is read; a chunked body is counted as it arrives) and the body deadline,
  counted from the end of the headers (when uvicorn calls the application). Its refusals are
  Starlette ``HTTPException``s, which FastAPI passes on while it reads a body (any other exception
  there becomes "There was an error parsing the body"); ``limit_exceeded`` answers them.

Every answer is ``{"error": ...}`` JSON with ``connection: close``: the rest of the body is never
read.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


def _json_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


def _limit_errors() -> tuple[Any, Any]:
    """Starlette's HTTPException subclasses for the body limit and the body deadline."""
    from starlette.exceptions import HTTPException

    class BodyTooLarge(HTTPException):
        pass

    class BodyTooSlow(HTTPException):
        pass

    return BodyTooLarge, BodyTooSlow


BodyTooLarge, BodyTooSlow = _limit_errors()


class RequestLimits:
    """ASGI middleware: the body limit, and the body timeout counted from the end of the headers
    (when uvicorn calls the application)."""

    def __init__(self, app: Any, max_body_size: int, body_timeout: float) -> None:
        self.app = app
        self.max_body_size = max_body_size
        self.body_timeout = body_timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_size
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._answer(send, 413, f"the request body has {int(declared)} bytes; the "
                               f"limit is {limit} (--max-body-size)")  # fmt: skip
            return
        too_large = f"the request body is larger than the limit, {limit} bytes (--max-body-size)"
        too_slow = (
            f"the request body did not arrive within {self.body_timeout:g} s (--body-timeout)"
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        received = 0
        body_done = False
        started = False

        async def limited_receive() -> Any:
            nonlocal received, body_done
            if body_done:
                return await receive()  # only a disconnect is left to hear
            remaining = deadline - loop.time()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.001))
            except asyncio.TimeoutError:
                raise BodyTooSlow(408, too_slow) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(413, too_large)
                body_done = not message.get("more_body", False)
            return message

        async def watched_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except (BodyTooLarge, BodyTooSlow) as error:  # where no handler answered it
            if not started:
                await self._answer(send, error.status_code, error.detail)

    @staticmethod
    async def _answer(send: Any, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def header_timeout_protocol(base: type[Any], seconds: float) -> type[Any]:
    """uvicorn's HTTP protocol class ``base`` with a deadline on each request's headers."""

    class HeaderTimeout(base):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None
        _reading: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # the first bytes of a new request
            super().data_received(data)
            if self._header_timer is not None and self.cycle is not self._reading:
                self._header_timer.cancel()  # its headers are in: uvicorn made a new cycle
                self._header_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._reading = self.cycle
            self._header_timer = self.loop.call_later(seconds, self._late)

        def _late(self) -> None:
            self._header_timer = None
            if self.cycle is self._reading and not self.transport.is_closing():
                self.transport.write(
                    _json_response(
                        408,
                        "Request Timeout",
                        f"the request headers did not arrive within {seconds:g} s "
                        "(--header-timeout)",
                    )
                )
                self.transport.close()

    return HeaderTimeout


def http_protocol() -> type[Any]:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:  # uvicorn without its [standard] extra
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


async def limit_exceeded(request: Any, error: Any) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(
        status_code=error.status_code,
        content={"error": error.detail},
        headers={"connection": "close"},  # the rest of the body is not read
    )

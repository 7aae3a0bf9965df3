"""The floor for a Python ASGI gateway: relay a chat completion to the upstream and back, doing
nothing else (no auth, no tracing, no metrics). A gateway's overhead is measured against this.

Two clients, picked by FLOOR_CLIENT: "aiohttp" (the fastest Python client measured here) or
"httpx" (httpx with the httpx-aiohttp transport). Streams are relayed byte for byte.
Run: UPSTREAM=http://127.0.0.1:18080 uvicorn floor_relay:app --port 18090
"""

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:18080")
CLIENT = os.environ.get("FLOOR_CLIENT", "aiohttp")
_session = None


async def _aiohttp(body: bytes) -> Response:
    global _session
    import aiohttp

    if _session is None:
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    reply = await _session.post(
        UPSTREAM + "/v1/chat/completions", data=body, headers={"content-type": "application/json"}
    )
    if reply.headers.get("content-type", "").startswith("text/event-stream"):

        async def relay():
            try:
                async for piece in reply.content.iter_any():
                    yield piece
            finally:
                reply.release()

        return StreamingResponse(relay(), media_type="text/event-stream")
    data = await reply.read()
    return Response(data, status_code=reply.status, media_type="application/json")


async def _httpx(body: bytes) -> Response:
    global _session
    import httpx
    from httpx_aiohttp import AiohttpTransport

    if _session is None:
        _session = httpx.AsyncClient(base_url=UPSTREAM, transport=AiohttpTransport(), timeout=30)
    request = _session.build_request(
        "POST", "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    reply = await _session.send(request, stream=True)
    if reply.headers.get("content-type", "").startswith("text/event-stream"):

        async def relay():
            try:
                async for piece in reply.aiter_raw():
                    yield piece
            finally:
                await reply.aclose()

        return StreamingResponse(relay(), media_type="text/event-stream")
    data = await reply.aread()
    return Response(data, status_code=reply.status_code, media_type="application/json")


async def chat(request: Request) -> Response:
    body = await request.body()
    return await (_aiohttp(body) if CLIENT == "aiohttp" else _httpx(body))


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])

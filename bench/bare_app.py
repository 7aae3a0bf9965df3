"""The floor for `make bench`: a bare Starlette app answering a canned chat completion.

No auth, no validation, no metrics, no logging: the service's demo-mode chat is measured against
this in the same run, on the same machine and core.
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

CANNED = (
    b'{"id":"chatcmpl-bare","object":"chat.completion","created":1700000000,"model":"bare",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bare app."},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":5,"total_tokens":6}}'
)


async def chat(request: Request) -> Response:
    await request.body()
    return Response(CANNED, media_type="application/json")


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])

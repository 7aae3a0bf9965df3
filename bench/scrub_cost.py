"""What the scrubber costs, in process: chat payloads of 200 B, 2 kB and 20 kB (prose with some
code, no secret, the common case) through each entry point, and one relayed chat's receipt.

    python bench/scrub_cost.py

Prints microseconds per call (best of several timeit repeats). Figures, not a test.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.scrub import find_secret, redact_text, scrub

PROSE = (
    "Could you help me plan the release notes for version 2.4? The authentication flow changed: "
    "users now sign in with a passkey, and the token refresh happens in the background. "
    "Here is the function we use:\n\n    def refresh(session):\n        return session.post(url, "
    "timeout=5)\n\nWe measured 120 tokens per second on the new model. Contact the author, Jane, "
    "if the password reset page looks wrong. "
)


def text_of(size: int) -> str:
    return (PROSE * (size // len(PROSE) + 1))[:size]


def chat_body(text: str) -> dict[str, Any]:
    return {
        "model": "llama3.1:8b",
        "stream": False,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": text},
        ],
    }


def relayed_receipt() -> list[dict[str, Any]]:
    """The steps of a relayed chat's receipt (request and provider steps), as the writer sees them."""
    return [
        {
            "route": "/v1/chat/completions",
            "stream": False,
            "principal": "dev",
            "request_id": "0f3c2b9a8d7e4f6a1b2c3d4e5f6a7b8c",
            "policy_hash": "5d41402abc4b2a76b9719d911017c592",
            "memory_decision": "deny:feature_disabled",
        },
        {
            "provider": "openai",
            "model": "llama3.1:8b",
            "stream": False,
            "latency_ms": 12.345,
            "attempts": 1,
            "finish_reason": "stop",
            "truncated": False,
            "usage": {"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43},
        },
    ]


def best_us(fn: Any, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def main() -> None:
    print(f"{'payload':>10} {'find_secret':>12} {'redact_text':>12} {'scrub(body)':>12}  (us per call)")
    for size in (200, 2_000, 20_000):
        text = text_of(size)
        body = chat_body(text)
        number = max(20, 200_000 // size)
        found = best_us(lambda t=text: find_secret(t), number)
        redacted = best_us(lambda t=text: redact_text(t, pii=True), number)
        scrubbed = best_us(lambda b=body: scrub(b, pii=True, max_chars=4000), number)
        print(f"{size:>9}B {found:>12.2f} {redacted:>12.2f} {scrubbed:>12.2f}")
    steps = relayed_receipt()
    per_receipt = best_us(lambda: [scrub(step, pii=True, max_chars=4000) for step in steps], 20_000)
    print(f"one relayed chat's receipt (2 steps): {per_receipt:.2f} us")


if __name__ == "__main__":
    main()

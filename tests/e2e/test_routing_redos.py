"""Hostile messages against the router policy, on the real server (advanced mode, uvicorn).

Under Python's backtracking engine, ``"calculate 1+1" + " " * N + "x"`` held the event loop for
minutes at the routed maximum, and ``/health`` with it. The policy regexes run on RE2 now: every
classic ReDoS shape against every shipped pattern is answered, and ``/health`` answers meanwhile.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.routing.rules import MAX_ROUTED_CHARS
from tests.e2e.server import E2E_TOKEN, LiveServer, run_to_exit, stderr_lines

pytestmark = pytest.mark.e2e

PAD = MAX_ROUTED_CHARS
HEALTH_BOUND = 5.0  # seconds; generous: /health answers in about a millisecond


def fit(head: str, filler: str, tail: str = "", size: int = PAD) -> str:
    """``head``, then ``filler`` repeated, then ``tail``: ``size`` characters (the whole is routed)."""
    room = size - len(head) - len(tail)
    return head + (filler * (room // len(filler) + 1))[:room] + tail


HOSTILE = [
    # The shapes measured on the old patterns (0.3 s at N=400, 10.7 s at 1600), at the maximum.
    fit("calculate 1+1", " ", "x"),
    fit("what is 1+1", " ", "x"),
    # Each quantifier pair of the shipped patterns, fed what both sides accept and then a miss.
    fit("please calculate 1 + 1", " )", " x"),
    fit("compute ", "( ", "1 + 1 x"),
    fit("evaluate -", " -", "1"),
    fit("calc ", "1 + ", "x"),
    fit("calculate 1", "."),
    fit("what's ", "1 ** ", "?!"),
    fit("echo", " "),
    fit("echo", " :"),
    fit("summarize", " ", ":" + " " * 100),
    fit("tl;dr", ";"),
    fit("@holly", "y"),
    fit("", "\t\n ", "x"),
    # Longer than the rules' window: only its beginning is routed, the rest must not cost either.
    fit("calculate 1+1", " ", "x", size=20 * PAD),
]


@pytest.fixture(scope="module")
def advanced_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"ORCH_ORCHESTRATOR_MODE": "advanced", "ORCH_RATE_LIMIT": "10000 per minute"}
    with LiveServer(tmp_path_factory.mktemp("redos"), env) as server:
        yield server


def test_health_answers_while_hostile_messages_are_routed(advanced_server: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {E2E_TOKEN}", "X-Orch-Meta-Agent": "holly" + " " * 200 + "!"}

    def send(text: str) -> int:
        body = {"model": "orchestrators-demo", "messages": [{"role": "user", "content": text}]}
        with httpx.Client(timeout=60) as client:
            return client.post(advanced_server.url + "/v1/chat/completions", json=body, headers=headers).status_code

    health_times: list[float] = []
    pool = ThreadPoolExecutor(max_workers=4)
    try:
        futures = [pool.submit(send, text) for text in HOSTILE * 3]
        with httpx.Client(timeout=HEALTH_BOUND) as probe:
            while True:  # at least one probe, right after the messages went out
                started = time.monotonic()
                try:
                    answer = probe.get(advanced_server.url + "/health")
                except httpx.TimeoutException:
                    pytest.fail(f"/health did not answer within {HEALTH_BOUND} s while hostile messages were routed")
                assert answer.status_code == 200
                health_times.append(time.monotonic() - started)
                if all(future.done() for future in futures):
                    break
                time.sleep(0.01)
        statuses = [future.result() for future in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # on a failure, what is stuck ends with the server
    assert statuses == [200] * len(statuses)  # each one answered, none refused or dropped
    assert max(health_times) < HEALTH_BOUND


def test_a_hostile_message_is_answered_by_the_model_not_a_tool(advanced_server: LiveServer) -> None:
    body = {"model": "orchestrators-demo", "messages": [{"role": "user", "content": HOSTILE[0]}]}
    answer = httpx.post(
        advanced_server.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {E2E_TOKEN}"},
        timeout=HEALTH_BOUND,
    )
    assert answer.status_code == 200
    assert answer.json()["route_decision"]["reason"] == "no_match"


def test_a_pattern_re2_cannot_match_in_linear_time_stops_startup_with_the_rule_and_reason(tmp_path: Path) -> None:
    router = tmp_path / "router_policy.yaml"
    router.write_text("rules:\n  - id: math.look\n    when: {message: '\\d+(?=%)'}\n    target: {tool: safe_calc}\n")
    result = run_to_exit(tmp_path, [sys.executable, "-m", "app"], {"ORCH_ROUTER_POLICY_PATH": str(router)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert stderr_lines(result) == [
        f"orchestrators: invalid policy: ORCH_ROUTER_POLICY_PATH: {router}: rule 'math.look': when.message: "
        "invalid regex: lookahead assertions ((?=...), (?!...)) are not supported (RE2 syntax, matched in linear time)"
    ]
    tools = tmp_path / "tool_policy.yaml"
    tools.write_text(
        "version: 1\nrules:\n  - id: calc\n    tools: [safe_calc]\n    action: allow\n"
        "    when: {expression: {matches: '(a)\\1'}}\n"
    )
    result = run_to_exit(tmp_path, [sys.executable, "-m", "app"], {"ORCH_TOOL_POLICY_PATH": str(tools)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = stderr_lines(result)
    assert line.startswith(f"orchestrators: invalid policy: ORCH_TOOL_POLICY_PATH: {tools} line 6")
    assert line.endswith("backreferences (\\1 ... \\9) are not supported (RE2 syntax, matched in linear time)")

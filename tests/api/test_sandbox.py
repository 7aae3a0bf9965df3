"""The Docker sandbox, for real (the tests fail, never skip, without Docker and the image).

Every escape attempt goes through the HTTP API as a user would (approve, then execute
python_exec) and must be contained; the service answers /health throughout, and every container
is gone afterwards.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from fastapi import FastAPI

from app.lifespan import AppState
from tests.api.tools_support import (
    APPROVER,
    APPROVER_HEADERS,
    containers,
    execute,
    require_docker,
    run_approved,
)
from tests.conftest import TOKEN, running

TIMEOUT = 3.0  # ORCH_SANDBOX_TIMEOUT_SEC for these tests
ESCAPE_TIMEOUT = 6.0


@pytest.fixture(autouse=True, scope="module")
def docker() -> None:
    require_docker()


@asynccontextmanager
async def sandbox_app(
    app_factory: Callable[..., FastAPI], **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    values: dict[str, Any] = {
        "approver_token": APPROVER,
        "sandbox_timeout_sec": TIMEOUT,
        "trust_panel_enabled": True,
    }
    values.update(settings)
    app = app_factory(**values)
    async with running(app) as client:
        yield client, app.state.orch


async def python(client: httpx.AsyncClient, code: str, **args: Any) -> dict[str, Any]:
    return await run_approved(client, "python_exec", {"code": code, **args})


async def wait_gone(instance: str, keep: int = 0, timeout: float = 10.0) -> list[str]:
    """This app's containers once only ``keep`` (idle pool ones) remain."""
    deadline = time.monotonic() + timeout
    while True:
        left = await asyncio.to_thread(containers, instance)
        if len(left) <= keep or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.2)


async def test_python_exec_runs_in_the_sandbox(app_factory: Callable[..., FastAPI]) -> None:
    async with sandbox_app(app_factory) as (client, state):
        result = await python(
            client,
            "import os, sys\nprint(os.getuid(), os.getgid(), os.getcwd())\n"
            "status = open('/proc/self/status').read()\n"
            "print([l.split()[1] for l in status.splitlines() if l.startswith(('CapEff', 'NoNewPrivs'))])\n"
            "print(sys.stdin.read())\nprint('oops', file=sys.stderr)",
            stdin="from stdin",
        )
        assert result["status"] == "ok", result
        out = result["result"]
        lines = out["stdout"].splitlines()
        assert lines[0] == "10001 10001 /tmp"  # non-root, the tmpfs as working directory
        assert lines[1] == "['0000000000000000', '1']"  # no capabilities, no-new-privileges
        assert lines[2] == "from stdin" and out["stderr"] == "oops\n" and out["exit_code"] == 0
        failing = await python(client, "import sys\nprint('partial')\nsys.exit(3)")
        assert failing["status"] == "error" and failing["error"] == "nonzero_exit" and failing["exit_code"] == 3
        assert failing["result"]["stdout"] == "partial\n"
        crash = await python(client, "raise ValueError('boom sk-" + "a" * 30 + "')")
        assert crash["error"] == "nonzero_exit" and crash["exit_code"] == 1
        assert "ValueError" in crash["detail"] and "sk-aaaa" not in json.dumps(crash)  # scrubbed
        assert (await python(client, "exit(0)"))["status"] == "ok"  # exit() works without `site`
        await state.tracer.flush()
        steps = (await client.get(f"/v1/trust/trace/{result['trace_id']}")).json()["steps"]
        outcome = steps[-1]["payload"]
        assert outcome["sandboxed"] is True and outcome["status"] == "ok"
        assert await wait_gone(state.tools.sandbox.instance) == []


async def test_escapes_are_contained_and_the_service_stays_healthy(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    host_secret = tmp_path / "host-secret.txt"
    host_secret.write_text("the host's secret")
    escapes = {
        "network": (
            "import socket\nfor host, port in (('1.1.1.1', 53), ('172.17.0.1', 5432), ('127.0.0.1', 5432)):\n"
            "    try:\n"
            "        socket.create_connection((host, port), timeout=2)\n"
            "        print('CONNECTED', host)\n"
            "    except OSError as e:\n"
            "        print('blocked', host, e.errno)\n"
            "try:\n    socket.getaddrinfo('example.com', 80)\n    print('RESOLVED')\n"
            "except OSError:\n    print('no dns')\n"
            "import os\nprint(sorted(os.listdir('/sys/class/net')))"
        ),
        "write": (
            "import os\nfor path in ('/etc/x', '/x', '/usr/x', '/var/tmp/x', '/dev/shm/x', '/dev/x', '/proc/x'):\n"
            "    try:\n        open(path, 'w').write('x')\n        print('WROTE', path)\n"
            "    except OSError as e:\n        print('refused', path, e.errno)\n"
            "open('/tmp/ok', 'w').write('#!/bin/sh\\necho hi\\n')\nos.chmod('/tmp/ok', 0o755)\n"
            "try:\n    os.execv('/tmp/ok', ['/tmp/ok'])\nexcept OSError as e:\n    print('noexec', e.errno)"
        ),
        "read": (
            f"import os\nfor path in ({str(host_secret)!r}, '/etc/shadow', '/root/.bashrc', '/var/run/docker.sock'):\n"
            "    try:\n        print('READ', path, open(path).read()[:20])\n"
            "    except OSError as e:\n        print('unreadable', path, e.errno)\n"
            "print(sorted(k for k in os.environ))\nprint(open('/proc/1/cmdline').read().replace(chr(0), ' '))"
        ),
        "fork": (
            "import os, time\nn = 0\ntry:\n    while True:\n        pid = os.fork()\n        if pid == 0:\n"
            "            os.close(1); os.close(2); time.sleep(60); os._exit(0)\n        n += 1\n"
            "except OSError as e:\n    print('forks', n, e.errno)"
        ),
        "memory": "blocks = []\nwhile True:\n    blocks.append(bytearray(32 * 2**20))",
        "loop": "while True:\n    pass",
        "flood": "import sys\nsys.stdout.write('x' * 100_000_000)\nsys.stdout.flush()",
    }
    # A wall clock with room for the memory case on a busy machine (it takes ~1 s when alone).
    async with sandbox_app(app_factory, sandbox_pool_size=2, sandbox_timeout_sec=ESCAPE_TIMEOUT) as (client, state):
        health: list[float] = []
        done = asyncio.Event()

        async def probe() -> None:
            while not done.is_set():
                started = time.perf_counter()
                response = await client.get("/health")
                assert response.status_code == 200
                health.append(time.perf_counter() - started)
                await asyncio.sleep(0.05)

        prober = asyncio.create_task(probe())
        started = time.perf_counter()
        results = dict(zip(escapes, await asyncio.gather(*(python(client, c) for c in escapes.values())), strict=True))
        elapsed = time.perf_counter() - started
        done.set()
        await prober

        network = results["network"]
        assert network["status"] == "ok", network
        out = network["result"]["stdout"]
        assert "CONNECTED" not in out and "RESOLVED" not in out and "no dns" in out
        assert "blocked 1.1.1.1 101" in out  # ENETUNREACH: there is no network at all
        assert out.strip().endswith("['lo']")

        write = results["write"]["result"]["stdout"]
        assert "WROTE" not in write and "refused /etc/x 30" in write  # EROFS
        assert "refused /dev/shm/x" in write and "noexec 13" in write  # /tmp is noexec

        read = results["read"]["result"]["stdout"]
        assert "READ" not in read and "the host's secret" not in read
        assert "ORCH_" not in read and TOKEN not in read and APPROVER not in read
        assert "sleep" in read  # pid 1 is the container's own sleep, not a host process

        fork = results["fork"]
        assert fork["status"] == "ok", fork
        forks = fork["result"]["stdout"].split()
        assert forks[0] == "forks" and int(forks[1]) < 64 and forks[2] == "11"  # EAGAIN at the pids limit

        memory = results["memory"]
        assert memory["error"] == "sandbox_memory_limit" and memory["exit_code"] == 137

        loop = results["loop"]
        assert loop["error"] == "sandbox_timeout" and "ORCH_SANDBOX_TIMEOUT_SEC" in loop["detail"]

        flood = results["flood"]
        assert flood["error"] == "output_limit" and flood["truncated"] is True
        assert len(flood["result"]["stdout"]) == 4000  # ORCH_TOOL_OUTPUT_MAX_CHARS

        assert elapsed < ESCAPE_TIMEOUT + 10, elapsed
        assert len(health) >= 5 and max(health) < 1.0, health  # /health never stalled
        # a normal run still works, and every used container is gone (only the idle pool remains)
        assert (await python(client, "print(1)"))["result"]["stdout"] == "1\n"
        left = await wait_gone(state.tools.sandbox.instance, keep=2)
        assert len(left) <= 2 and all(line.startswith("Up") for line in left), left
    assert await wait_gone(state.tools.sandbox.instance) == []  # shutdown removes the pool too


async def test_a_warm_pool_answers_well_under_a_second(app_factory: Callable[..., FastAPI]) -> None:
    async with sandbox_app(app_factory, sandbox_pool_size=1) as (client, state):
        sandbox = state.tools.sandbox
        for _ in range(50):
            if sandbox._pool:
                break
            await asyncio.sleep(0.1)
        token = (await run_token(client))["approval_id"]
        started = time.perf_counter()
        result = await execute(client, "python_exec", {"code": "print(1)"}, approval_token=token)
        elapsed = time.perf_counter() - started
        assert result["result"]["stdout"] == "1\n"
        assert sandbox.warm_runs == 1 and sandbox.cold_runs == 0
        assert elapsed < 1.0, elapsed


async def run_token(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post(
        "/v1/tools/approve", json={"name": "python_exec", "args": {"code": "print(1)"}}, headers=APPROVER_HEADERS
    )
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


async def test_without_docker_sandboxed_tools_fail_and_ready_says_why(app_factory: Callable[..., FastAPI]) -> None:
    nowhere = "unix:///nonexistent/docker.sock"
    async with sandbox_app(app_factory, sandbox_docker_url=nowhere, tool_sandbox_required=True) as (client, state):
        result = await execute(client, "python_exec", {"code": "print(1)"})
        assert result["status"] == "error" and result["error"] == "sandbox_unavailable"
        assert "Docker" in result["detail"]
        # the approval was not spent on a call that could not run
        token = (await run_token(client))["approval_id"]
        assert (await execute(client, "python_exec", {"code": "print(1)"}, approval_token=token))["error"] == (
            "sandbox_unavailable"
        )
        row = await state.tools.approvals.get(token)
        assert row is not None and row.status == "approved"
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["reason"] == "sandbox_unavailable:docker_unreachable"
        # everything else works
        assert (await execute(client, "safe_calc", {"expression": "1+1"}))["result"] == 2
        chat = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200
    async with sandbox_app(app_factory, sandbox_docker_url=nowhere) as (client, _):  # not required: the default
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"]["sandbox"] == "sandbox_unavailable:docker_unreachable"
        assert ready.json()["degraded"] == ["sandbox_unavailable:docker_unreachable"]
    image = "orchestrators-sandbox:does-not-exist"
    async with sandbox_app(app_factory, sandbox_image=image, tool_sandbox_required=True) as (client, _):
        assert (await client.get("/ready")).json()["reason"] == "sandbox_unavailable:sandbox_image_missing"
    async with sandbox_app(app_factory, tool_sandbox_enabled=False) as (client, _):
        result = await execute(client, "python_exec", {"code": "print(1)"})
        assert result["error"] == "sandbox_disabled"
        assert (await client.get("/ready")).status_code == 200


# --- web_search: our own program, in a container with a network ---------------------------------


def bridge_gateway() -> str:
    """The host's address on Docker's default bridge (reachable from the sandbox's containers).

    Newer engines report it as the network's gateway; older ones (Debian's docker.io 20.10) give
    only the subnet, whose first address the bridge takes.
    """
    out = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    )
    config = json.loads(out.stdout)[0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


@pytest.fixture
def search_site() -> Iterator[str]:
    """A fake HTML search page on the Docker bridge's host address (reachable from containers)."""
    host = bridge_gateway()
    page = (
        '<div class="result"><a class="result__a" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fexample.org%2Fa">'
        'First <b>result</b></a><a class="result__snippet" href="#">About the <b>first</b> thing.</a></div>'
        '<div class="result"><a class="result__a" href="https://example.org/b">Second</a>'
        '<div class="result__snippet">Second snippet</div></div>'
    )
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.query.get("q", ""))
        return web.Response(text=page, content_type="text/html")

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/html/", handler)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    site = web.TCPSite(runner, host, port)
    loop.run_until_complete(site.start())
    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}/html/"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


async def test_web_search_through_a_networked_sandbox(app_factory: Callable[..., FastAPI], search_site: str) -> None:
    async with sandbox_app(app_factory, tool_web_search_enabled=True, tool_web_search_url=search_site) as (client, _):
        missing = await execute(client, "web_search", {"query": "orchestrators"})
        assert missing["error"] == "approval_required"
        result = await run_approved(client, "web_search", {"query": "orchestrators", "max_results": 5})
        assert result["status"] == "ok", result
        assert result["result"]["results"] == [
            {"title": "First result", "url": "https://example.org/a", "snippet": "About the first thing."},
            {"title": "Second", "url": "https://example.org/b", "snippet": "Second snippet"},
        ]


async def test_web_search_offline_answers_quickly_with_a_clear_error(app_factory: Callable[..., FastAPI]) -> None:
    # A site that accepts the connection and never answers (what a dead network path looks like
    # from inside), on the bridge's host address so that it is reachable from the container.
    silent = socket.socket()
    silent.bind((bridge_gateway(), 0))
    silent.listen(8)
    cases = {
        "http://no-such-host.invalid/html/": "network_unavailable",  # name resolution fails
        f"http://{silent.getsockname()[0]}:{silent.getsockname()[1]}/html/": "network_timeout",
    }
    try:
        for url, code in cases.items():
            async with sandbox_app(app_factory, tool_web_search_enabled=True, tool_web_search_url=url) as (client, _):
                started = time.perf_counter()
                result = await run_approved(client, "web_search", {"query": "anything"})
                elapsed = time.perf_counter() - started
            assert result["status"] == "error" and result["error"] == code, result
            assert result["detail"]
            assert elapsed < TIMEOUT + 2, elapsed  # the program's own deadline, before the sandbox's
    finally:
        silent.close()


async def test_containers_of_a_killed_service_are_reaped_at_startup(app_factory: Callable[..., FastAPI]) -> None:
    """A service killed with SIGKILL can not remove its containers; the next start on this host does."""
    from app.tools.sandbox import LABEL, LABEL_OWNER

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()

    def start(owner: str) -> str:
        command = ["docker", "run", "-d", "--rm", "--network", "none", "--label", f"{LABEL}=1"]
        command += ["--label", f"{LABEL_OWNER}={owner}", "orchestrators-sandbox:1", "sleep", "120"]
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout.strip()

    orphan = start(f"{host}:{dead.pid}")
    living = start(f"{host}:1")  # a process that exists (pid 1): not ours to remove
    elsewhere = start(f"another-host:{dead.pid}")  # another machine's service
    try:
        async with sandbox_app(app_factory):
            pass

        def exists(container_id: str) -> bool:
            out = subprocess.run(
                ["docker", "ps", "-aq", "--no-trunc", "--filter", f"id={container_id}"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            return bool(out.stdout.strip())

        deadline = time.monotonic() + 10
        while exists(orphan) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert not exists(orphan)
        assert exists(living) and exists(elsewhere)
    finally:
        subprocess.run(["docker", "rm", "-f", orphan, living, elsewhere], capture_output=True, timeout=30, check=False)

"""`make bench`: measure the service against floors, in one run, on this machine.

Each HTTP scenario starts the systems it compares one after the other, each pinned to the last
core, with the load generator (wrk) pinned to the other cores, and prints requests/s and p50/p99
latency at 1 and 16 connections and the ratio to the floor. Figures are printed, never asserted:
benchmarks are not tests.

    python bench/run.py                 # every scenario
    python bench/run.py demo            # only some
    BENCH_SECONDS=5 python bench/run.py # shorter measurements
    BENCH_PAIRS=5 python bench/run.py   # more alternating off/on pairs where a cost is compared
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PYTHON = sys.executable
TOKEN = "bench-token-0123456789abcdef"
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CORES = os.cpu_count() or 1
SERVER_CORE = str(CORES - 1)
LOAD_CORES = f"0-{max(CORES - 2, 0)}"
CHAT_BODY = '{"model":"bench-model","messages":[{"role":"user","content":"Hello, how are you today?"}]}'
STREAM_BODY = CHAT_BODY[:-1] + ',"stream":true}'

# The service as benchmarked: the default guards on (auth, rate limit with memory storage,
# metrics, JSON access log at INFO). The limit is high enough never to trigger: it is counted,
# not hit.
SERVICE_ENV = {
    "ORCH_BEARER_TOKEN": TOKEN,
    "ORCH_RATE_LIMIT": "100000000 per minute",
    "ORCH_LOG_JSON": "1",
    "ORCH_LOG_LEVEL": "INFO",
    "ORCH_METRICS_ENABLED": "1",
}


@dataclass
class Result:
    name: str
    rps1: float
    p50_1: float
    rps16: float
    p50_16: float
    p99_16: float
    errors: int


def ensure_tools() -> None:
    if shutil.which("wrk") is None:
        print("installing wrk (Debian package)...", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


@contextmanager
def serve(command: list[str], port: int, env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[None]:
    """Run a server pinned to the server core until the block ends."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    full_env.update(env or {})
    out = log.open("wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, *command], cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
    )
    try:
        wait_port(port, process)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, body: str, conns: int, seconds: int) -> tuple[float, float, float, int]:
    """requests/s, p50 ms, p99 ms, non-2xx count."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = '{body}'\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n'
        )
    command = [
        "taskset",
        "-c",
        LOAD_CORES,
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        script.name,
        url,
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return rps, p50, p99, int(bad.group(1)) if bad else 0


def measure(name: str, url: str, body: str = CHAT_BODY) -> Result:
    wrk(url, body, 1, 2)  # warm-up
    rps1, p50_1, _, bad1 = wrk(url, body, 1, SECONDS)
    rps16, p50_16, p99_16, bad16 = wrk(url, body, 16, SECONDS)
    return Result(name, rps1, p50_1, rps16, p50_16, p99_16, bad1 + bad16)


def print_results(title: str, results: list[Result], floor: Result) -> None:
    print(f"\n== {title}")
    header = ("system", "c=1 req/s", "c=1 p50", "c=16 req/s", "p50", "p99", "ratio", "+p50 c=1", "non-2xx")
    print("{:<32} {:>10} {:>9} {:>11} {:>8} {:>8} {:>6} {:>9} {:>7}".format(*header))
    for r in results:
        ratio = r.rps16 / floor.rps16 if floor.rps16 else 0
        added = r.p50_1 - floor.p50_1
        print(
            f"{r.name:<32} {r.rps1:>10.0f} {r.p50_1:>7.2f}ms {r.rps16:>11.0f} {r.p50_16:>6.2f}ms {r.p99_16:>6.2f}ms "
            f"{ratio:>6.2f} {added:>7.2f}ms {r.errors:>7}"
        )


def service_command(port: int) -> list[str]:
    return [
        PYTHON,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def scenario_demo(workdir: Path) -> None:
    """Demo-mode chat with the default guards vs a bare Starlette app with a canned reply."""
    port = free_port()
    with serve(
        [
            PYTHON,
            "-m",
            "uvicorn",
            "--app-dir",
            str(BENCH),
            "bare_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        port,
    ):
        floor = measure("bare starlette (canned)", f"http://127.0.0.1:{port}/v1/chat/completions")
    services = []
    # The foundation's guards (the target's configuration), then everything the defaults turn on.
    for label, env in (
        ("service demo chat", {**SERVICE_ENV, "ORCH_TRACE_ENABLED": "0"}),
        ("  + receipts (defaults)", SERVICE_ENV),
    ):
        port = free_port()
        with serve(service_command(port), port, env, workdir / "demo.log"):
            services.append(measure(label, f"http://127.0.0.1:{port}/v1/chat/completions"))
    print_results(
        "demo-mode chat (auth, rate limit, metrics, JSON logs) vs bare app; target ratio >= 0.25",
        [floor, *services],
        floor,
    )


@contextmanager
def fake_llm(workdir: Path, chunks: int = 16) -> Iterator[str]:
    """The fast fake LLM (Go) on the load cores; yields its base URL."""
    binary = workdir / "fakellm"
    if not binary.exists():
        if shutil.which("go") is None:
            subprocess.run(["apt-get", "install", "-y", "-qq", "golang-go"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=BENCH / "fakellm", check=True)
    port = free_port()
    process = subprocess.Popen(
        ["taskset", "-c", LOAD_CORES, str(binary), "-addr", f"127.0.0.1:{port}", "-chunks", str(chunks)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


def relay_env(upstream: str, **extra: str) -> dict[str, str]:
    return {
        **SERVICE_ENV,
        "ORCH_LLM_ENABLED": "1",
        "ORCH_LLM_PROVIDER": "openai",
        "ORCH_OPENAI_BASE_URL": upstream + "/v1",
        "ORCH_MODEL_CHAT": "bench-model",
        **extra,
    }


def scenario_relay(workdir: Path) -> None:
    """The service relaying to a fast fake upstream vs a bare Starlette + aiohttp relay."""
    for stream, body in ((False, CHAT_BODY), (True, STREAM_BODY)):
        with fake_llm(workdir) as upstream:
            port = free_port()
            with serve(
                [
                    PYTHON,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    str(BENCH),
                    "floor_relay:app",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                port,
                {"UPSTREAM": upstream, "FLOOR_CLIENT": "aiohttp"},
            ):
                floor = measure("bare relay (aiohttp)", f"http://127.0.0.1:{port}/v1/chat/completions", body)
            port = free_port()
            with serve(service_command(port), port, relay_env(upstream), workdir / "relay.log"):
                service = measure("service relay", f"http://127.0.0.1:{port}/v1/chat/completions", body)
        kind = "streamed, 16 chunks" if stream else "whole"
        print_results(
            f"relay to a fast fake upstream ({kind}); targets: ratio >= 0.4, +p50 <= 1 ms", [floor, service], floor
        )


PAIRS = int(os.environ.get("BENCH_PAIRS", "3"))


def alternating(
    workdir: Path, tag: str, off: tuple[str, dict[str, str]], on: tuple[str, dict[str, str]]
) -> tuple[list[Result], float]:
    """``off`` and ``on`` measured in turn, PAIRS times: on a shared VM the run-to-run spread is as
    large as the differences measured, so the figure is the ratio of the means at c=16. Every run
    gets fresh database files (a trace database grown by the previous run slows the next one)."""
    results = []
    for n in range(PAIRS):
        for label, env in (off, on):
            port = free_port()
            files = {
                "ORCH_TRACE_DB_PATH": str(workdir / f"trace-{tag}-{len(results)}.db"),
                "ORCH_MEMORY_DB_PATH": str(workdir / f"memory-{tag}-{len(results)}.db"),
                "ORCH_TOOL_APPROVAL_DB_PATH": str(workdir / f"approvals-{tag}-{len(results)}.db"),
            }
            with serve(service_command(port), port, {**files, **env}, workdir / f"{tag}.log"):
                name = label if n == 0 else f"{label} (again)"
                results.append(measure(name, f"http://127.0.0.1:{port}/v1/chat/completions"))
    mean_off = sum(r.rps16 for r in results[0::2]) / PAIRS
    mean_on = sum(r.rps16 for r in results[1::2]) / PAIRS
    return results, mean_on / mean_off


def scenario_tracing(workdir: Path) -> None:
    """Receipts on vs off, same run, alternating: demo-mode chat, and chat relayed to the fast fake
    upstream."""
    # The target is held on relayed chat (the service in front of a model); demo chat, whose
    # offline provider answers in microseconds, is shown for reference (docs/receipts.md).
    with fake_llm(workdir) as upstream:
        for kind, base, goal in (
            ("demo chat", SERVICE_ENV, "for reference, no target"),
            ("relayed chat", relay_env(upstream), "target: on costs <= 15% req/s at c=16"),
        ):
            results, ratio = alternating(
                workdir,
                "tracing",
                ("service, receipts off", {**base, "ORCH_TRACE_ENABLED": "0"}),
                ("service, receipts on", {**base, "ORCH_TRACE_ENABLED": "1"}),
            )
            print_results(f"receipts on vs off ({kind}); {goal}", results, results[0])
            print(f"mean of {PAIRS} pairs at c=16: receipts on / off = {ratio:.2f}")


def scenario_store(workdir: Path) -> None:
    """The trace store's sustained write rate (steps/s committed), SQLite and Postgres."""
    subprocess.run([PYTHON, str(BENCH / "store_rate.py"), str(workdir)], check=True, cwd=ROOT)


def scenario_proofs(workdir: Path) -> None:
    """Receipt log proofs (inclusion, consistency) at 1,000,000 ledger entries, on SQLite."""
    subprocess.run([PYTHON, str(BENCH / "receipt_proofs.py"), str(workdir)], check=True, cwd=ROOT)


def scenario_routing(workdir: Path) -> None:
    """Routing decision latency with 200 rules loaded, in process (docs/routing.md)."""
    subprocess.run([PYTHON, str(BENCH / "routing_latency.py"), "200"], check=True, cwd=ROOT)


def scenario_memory(workdir: Path) -> None:
    """The memory gate: demo chat with memory off vs on (strict), alternating, then on with
    recall; then recall latency at 10,000 memories for one user, in process, on SQLite."""
    on = {
        **SERVICE_ENV,
        "ORCH_MEMORY_ENABLED": "1",
        "ORCH_MEMORY_CAPTURE_ENABLED": "1",
        "ORCH_MEMORY_WRITE_POLICY": "strict",
    }
    results, ratio = alternating(
        workdir, "memory", ("service, memory off", SERVICE_ENV), ("service, memory strict", on)
    )
    port = free_port()
    env = {
        **on,
        "ORCH_MEMORY_RECALL_ENABLED": "1",
        "ORCH_MEMORY_DB_PATH": str(workdir / "memory-recall.db"),
        "ORCH_TRACE_DB_PATH": str(workdir / "trace-memory-recall.db"),
        "ORCH_TOOL_APPROVAL_DB_PATH": str(workdir / "approvals-memory-recall.db"),
    }
    with serve(service_command(port), port, env, workdir / "memory.log"):
        results.append(measure("service, strict + recall", f"http://127.0.0.1:{port}/v1/chat/completions"))
    print_results("memory gate on (strict) vs off (demo chat); target: on costs <= 10% req/s", results, results[0])
    print(f"mean of {PAIRS} pairs at c=16: memory strict / off = {ratio:.2f}")
    subprocess.run([PYTHON, str(BENCH / "memory_recall_latency.py"), "10000"], check=True, cwd=ROOT)


def scenario_sandbox(workdir: Path) -> None:
    """Tools: python_exec `print(1)` through the HTTP API and Docker, cold vs warm pool.

    Each run is approved first (not timed), then executed; the figure is the execute request as a
    caller sees it. Between warm runs the pool gets a moment to refill (one container per run).
    """
    import statistics

    import httpx

    approver = "bench-approver-token-0123456789"
    runs = int(os.environ.get("BENCH_SANDBOX_RUNS", "20"))
    print("\n== sandbox: python_exec print(1) via POST /v1/tools/execute (approved), ms")
    print("{:<34} {:>8} {:>8} {:>8} {:>8}".format("configuration", "p50", "p90", "min", "max"))
    for label, pool, pause in (
        ("cold (ORCH_SANDBOX_POOL_SIZE=0)", "0", 0.0),
        ("warm (ORCH_SANDBOX_POOL_SIZE=2)", "2", 0.5),
    ):
        port = free_port()
        env = {
            **SERVICE_ENV,
            "ORCH_APPROVER_TOKEN": approver,
            "ORCH_TOOL_POLICY_PATH": str(ROOT / "policies" / "tool_policy.yaml"),
            "ORCH_TOOL_APPROVAL_DB_PATH": str(workdir / f"approvals-{pool}.db"),
            "ORCH_TRACE_DB_PATH": str(workdir / f"trace-sandbox-{pool}.db"),
            "ORCH_SANDBOX_POOL_SIZE": pool,
        }
        with serve(service_command(port), port, env, workdir / "sandbox.log"):
            base = f"http://127.0.0.1:{port}"
            caller = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            boss = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {approver}"}, timeout=60)
            args = {"code": "print(1)"}
            time.sleep(1.0)  # let the pool fill
            timings = []
            for _ in range(runs + 1):
                token = boss.post("/v1/tools/approve", json={"name": "python_exec", "args": args}).json()["approval_id"]
                started = time.perf_counter()
                result = caller.post(
                    "/v1/tools/execute", json={"name": "python_exec", "args": args, "approval_token": token}
                ).json()["result"]
                timings.append((time.perf_counter() - started) * 1000)
                if result.get("status") != "ok":
                    raise RuntimeError(f"python_exec failed: {result}")
                time.sleep(pause)
            timings = timings[1:]  # the first run pays for imports and connections
            deciles = statistics.quantiles(timings, n=10)
            p50, p90 = statistics.median(timings), deciles[8]
            print(f"{label:<34} {p50:>8.1f} {p90:>8.1f} {min(timings):>8.1f} {max(timings):>8.1f}")


SCENARIOS: dict[str, Callable[[Path], None]] = {
    "demo": scenario_demo,
    "relay": scenario_relay,
    "tracing": scenario_tracing,
    "store": scenario_store,
    "proofs": scenario_proofs,
    "routing": scenario_routing,
    "sandbox": scenario_sandbox,  # tools: the Docker sandbox, cold vs warm
    "memory": scenario_memory,  # the memory gate
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", help=f"scenarios to run (default: all of {', '.join(SCENARIOS)})")
    args = parser.parse_args()
    unknown = [name for name in args.only if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown}; choose from {list(SCENARIOS)}")
    ensure_tools()
    print(f"machine: {CORES} cores; server pinned to core {SERVER_CORE}, load to {LOAD_CORES}; {SECONDS}s per point")
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        for name in args.only or SCENARIOS:
            SCENARIOS[name](Path(tmp))


if __name__ == "__main__":
    main()

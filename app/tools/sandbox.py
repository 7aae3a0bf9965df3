"""The Docker sandbox: untrusted code runs in a locked-down, single-use container (aiodocker).

Every container is created with:

* no network (``NetworkMode: none``), unless the tool has a network allowance (web_search, whose
  program is ours; caller code never gets a network);
* a read-only root file system and a small ``noexec,nosuid`` tmpfs on ``/tmp`` (the only
  writable place), no IPC namespace sharing and no ``/dev/shm`` (``IpcMode: none``);
* a non-root user (10001:10001), every capability dropped, ``no-new-privileges``;
* pids, memory (swap included), CPU and open-file limits; no log driver (nothing on the host's
  disk); a main process that ends by itself (``sleep``), and ``AutoRemove``, so a container the
  service forgets (a crash) still disappears.

The code goes in through the exec's stdin (the program text is the ``-c`` argument, the payload a
JSON document on stdin): no host path is ever mounted. A run has a wall-clock deadline after which
the container is killed through the API (killing a client process would leave it running), its
output is read in a bounded buffer (a program printing 100 MB is stopped after a little more than
the cap), and the container is removed whatever happened.

Start-up cost: creating and starting a container costs ~0.1-0.4 s; an exec into a running one
~0.07 s. A small pool of started, never-used containers (``ORCH_SANDBOX_POOL_SIZE``) is kept
warm; each is used for exactly one run and then removed, and the pool refills in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer

from app.observability.logging import get_logger
from app.tasks import cancel_and_wait

log = get_logger("sandbox")

CONTAINER_TMP = "/tmp"  # noqa: S108 - the container's own tmpfs, not the host's /tmp
SANDBOX_USER = "10001:10001"  # the image's dedicated unprivileged user (not 65534/nobody)
PIDS_LIMIT = 64  # a fork bomb hits this (EAGAIN) instead of the host's process table
TMPFS_MB = 16  # /tmp: the only writable place, noexec
OPEN_FILES = 256  # RLIMIT_NOFILE inside the container
MAX_CONCURRENT_RUNS = 4  # runs at once per instance: each may take ORCH_SANDBOX_MEMORY_MB
CONTAINER_LIFETIME_S = 900  # the container's own `sleep`: a forgotten container dies by itself
POOL_MAX_AGE_S = 300  # pooled containers older than this are replaced (well before their sleep ends)
PROBE_INTERVAL_S = 5.0  # while unavailable, Docker is probed again at most this often
PROBE_TIMEOUT_S = 3.0
API_TIMEOUT_S = 30.0  # one Docker API call (create, start, inspect); exec streams are bounded by the run deadline
DISCARD_BYTES = 1 << 20  # output read past the cap before the program is stopped
LABEL = "org.orchestrators.sandbox"
LABEL_INSTANCE = "org.orchestrators.sandbox.instance"
LABEL_OWNER = "org.orchestrators.sandbox.owner"  # "<hostname>:<pid>" of the service process
EXIT_SIGKILL = 137


@dataclass(slots=True)
class SandboxJob:
    program: str  # Python source, run as `python3 -I -S -c <program> <len(stdin)>`
    stdin: bytes  # the JSON payload the program reads
    network: bool = False
    timeout: float = 10.0
    output_bytes: int = 16_000  # keep at most this much of stdout and of stderr


@dataclass(slots=True)
class SandboxOutcome:
    exit_code: int | None  # None: killed by us (timeout, output limit)
    stdout: str
    stderr: str
    timed_out: bool = False
    output_limited: bool = False  # the program printed far past the cap and was stopped
    truncated: bool = False  # some output was dropped
    duration_ms: float = 0.0
    warm: bool = False  # ran in a pre-started container

    @property
    def memory_killed(self) -> bool:
        """SIGKILLed without us killing it: the kernel's OOM killer at the memory limit."""
        return self.exit_code == EXIT_SIGKILL and not (self.timed_out or self.output_limited)


class ToolSandbox(Protocol):
    """The sandbox port the runner uses (implemented by :class:`DockerSandbox`)."""

    enabled: bool
    memory_mb: int

    async def ensure(self) -> None:
        """Raise :class:`SandboxUnavailable` unless a run can be attempted now."""
        ...

    async def run(self, job: SandboxJob) -> SandboxOutcome: ...


class SandboxUnavailable(Exception):
    """Docker (or the image) is not usable; ``reason`` is a short code for results and /ready."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Capture:
    limit: int
    data: bytearray = field(default_factory=bytearray)
    seen: int = 0

    def add(self, chunk: bytes) -> None:
        self.seen += len(chunk)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.seen > len(self.data)

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class DockerSandbox:
    """Runs :class:`SandboxJob` s in single-use locked-down containers. One per app (lifespan)."""

    def __init__(
        self,
        *,
        enabled: bool,
        image: str,
        memory_mb: int,
        cpus: float,
        pool_size: int,
        docker_url: str = "",
    ) -> None:
        self.enabled = enabled
        self.image = image
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.pool_size = pool_size
        self.docker_url = docker_url or None
        self.instance = uuid.uuid4().hex[:12]  # labels this app's containers
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.reason = "sandbox_disabled" if not enabled else "not_probed"
        self._docker: aiodocker.Docker | None = None
        self._probed_at = 0.0
        self._probe_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_RUNS)
        self._pool: deque[tuple[DockerContainer, float]] = deque()
        self._wanted = asyncio.Event()
        self._refill_task: asyncio.Task[None] | None = None
        self._disposals: set[asyncio.Task[None]] = set()
        self._closing = False
        self.cold_runs = 0
        self.warm_runs = 0

    # --- availability ----------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return self.reason == "ok"

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            timeout = aiohttp.ClientTimeout(total=API_TIMEOUT_S, connect=PROBE_TIMEOUT_S)
            self._docker = aiodocker.Docker(url=self.docker_url, timeout=timeout)
        return self._docker

    async def _probe(self) -> None:
        try:
            docker = self._client()
        except (ValueError, AssertionError):
            # No DOCKER_HOST and no socket found (aiodocker 0.27 asserts instead of raising). Seen
            # in the service's own container image, which has no Docker access by design.
            self.reason = "docker_not_found"
            return
        try:
            await asyncio.wait_for(docker.version(), PROBE_TIMEOUT_S)
        except (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError):
            self.reason = "docker_unreachable"
            return
        try:
            await asyncio.wait_for(docker.images.inspect(self.image), PROBE_TIMEOUT_S)
        except aiodocker.DockerError as exc:
            self.reason = "sandbox_image_missing" if exc.status == 404 else "docker_error"
            return
        except (aiohttp.ClientError, OSError, TimeoutError):
            self.reason = "docker_unreachable"
            return
        if self.reason != "ok":
            log.info("sandbox available", extra={"image": self.image, "pool_size": self.pool_size})
        self.reason = "ok"
        self._wanted.set()

    async def refresh(self, *, force: bool = False) -> str:
        """Probe Docker again if the last answer is stale; return the current reason (``ok``)."""
        if not self.enabled:
            return self.reason
        async with self._probe_lock:
            stale = time.monotonic() - self._probed_at > PROBE_INTERVAL_S
            if force or stale:
                before = self.reason
                await self._probe()
                self._probed_at = time.monotonic()
                if self.reason not in ("ok", before):
                    log.warning("sandbox unavailable", extra={"reason": self.reason, "image": self.image})
        return self.reason

    async def ensure(self) -> None:
        """Raise :class:`SandboxUnavailable` unless a run can be attempted now."""
        if not self.enabled:
            raise SandboxUnavailable("sandbox_disabled")
        if not self.available:
            await self.refresh()
        if not self.available:
            raise SandboxUnavailable(self.reason)

    async def readiness_check(self) -> tuple[bool, str]:
        reason = await self.refresh()
        return reason == "ok", "ok" if reason == "ok" else f"sandbox_unavailable:{reason}"

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.enabled:
            return
        await self.refresh(force=True)
        if self.available:
            await self._reap_orphans()
        if self.pool_size > 0:
            self._refill_task = asyncio.create_task(self._refill(), name="sandbox-pool")

    async def _reap_orphans(self) -> None:
        """Remove sandbox containers left by a service process of this host that no longer runs
        (killed with SIGKILL, crashed): they would otherwise live until their `sleep` ends."""
        host = socket.gethostname()
        try:
            found = await self._client().containers.list(all="true", filters=json.dumps({"label": [LABEL_OWNER]}))
        except (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError):
            return
        for container in found:
            labels: dict[str, str] = {}
            if "Labels" in container:  # a DockerContainer, not a dict: no .get()
                labels = container["Labels"] or {}
            owner = labels.get(LABEL_OWNER, "")
            owner_host, _, pid = owner.rpartition(":")
            if owner_host == host and pid.isdigit() and not _alive(int(pid)):
                self._dispose(container)

    async def aclose(self) -> None:
        self._closing = True
        self._wanted.set()
        await cancel_and_wait(self._refill_task)
        while self._pool:
            self._dispose(self._pool.popleft()[0])
        if self._disposals:
            await asyncio.gather(*self._disposals, return_exceptions=True)
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    # --- containers ------------------------------------------------------------------------
    def _config(self, network: bool) -> dict[str, Any]:
        memory = self.memory_mb * 1024 * 1024
        return {
            "Image": self.image,
            "Cmd": ["sleep", str(CONTAINER_LIFETIME_S)],
            "User": SANDBOX_USER,
            "WorkingDir": CONTAINER_TMP,
            "Hostname": "sandbox",
            "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp"],
            "NetworkDisabled": not network,
            "Labels": {LABEL: "1", LABEL_INSTANCE: self.instance, LABEL_OWNER: self.owner},
            "HostConfig": {
                "NetworkMode": "bridge" if network else "none",
                "ReadonlyRootfs": True,
                "Tmpfs": {CONTAINER_TMP: f"rw,noexec,nosuid,nodev,size={TMPFS_MB}m"},
                "IpcMode": "none",
                "CapDrop": ["ALL"],
                "SecurityOpt": ["no-new-privileges"],
                "PidsLimit": PIDS_LIMIT,
                "Memory": memory,
                "MemorySwap": memory,  # equal to Memory: no swap on top
                "NanoCpus": int(self.cpus * 1e9),
                "Ulimits": [{"Name": "nofile", "Soft": OPEN_FILES, "Hard": OPEN_FILES}],
                "OomScoreAdj": 1000,  # under host memory pressure, the sandbox goes first
                "LogConfig": {"Type": "none", "Config": {}},
                "AutoRemove": True,
                "Privileged": False,
            },
        }

    async def _new_container(self, network: bool) -> DockerContainer:
        docker = self._client()
        container = await docker.containers.create(self._config(network))
        try:
            await container.start()
        except BaseException:
            self._dispose(container)
            raise
        return container

    def _dispose(self, container: DockerContainer) -> None:
        """Kill and remove in the background (the answer does not wait for Docker's cleanup)."""
        task = asyncio.create_task(self._remove(container), name="sandbox-remove")
        self._disposals.add(task)
        task.add_done_callback(self._disposals.discard)

    @staticmethod
    async def _remove(container: DockerContainer) -> None:
        try:
            await container.delete(force=True)
        except aiodocker.DockerError as exc:
            if exc.status not in (404, 409):  # gone already / removal in progress (AutoRemove)
                log.warning("could not remove a sandbox container", extra={"status": exc.status})
        except (aiohttp.ClientError, OSError, TimeoutError):
            log.warning("could not remove a sandbox container (docker unreachable)")

    async def _refill(self) -> None:
        while not self._closing:
            now = time.monotonic()
            while self._pool and now - self._pool[0][1] > POOL_MAX_AGE_S:
                self._dispose(self._pool.popleft()[0])
            while self.available and len(self._pool) < self.pool_size and not self._closing:
                try:
                    container = await self._new_container(network=False)
                except Exception as exc:  # the pool must outlive any Docker hiccup
                    log.warning("sandbox pool refill failed", extra={"error_type": type(exc).__name__})
                    await self.refresh(force=True)
                    break
                if self._closing:
                    self._dispose(container)
                    return
                self._pool.append((container, time.monotonic()))
            self._wanted.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), POOL_MAX_AGE_S / 2)

    def _take(self) -> DockerContainer | None:
        now = time.monotonic()
        while self._pool:
            container, created = self._pool.popleft()
            self._wanted.set()
            if now - created <= POOL_MAX_AGE_S:
                return container
            self._dispose(container)
        return None

    # --- runs ------------------------------------------------------------------------------
    async def run(self, job: SandboxJob) -> SandboxOutcome:
        """Run ``job`` in a fresh container; raise :class:`SandboxUnavailable` if Docker is not usable."""
        await self.ensure()
        async with self._slots:
            started = time.perf_counter()
            pooled = None if job.network else self._take()
            if pooled is not None:
                try:
                    outcome = await self._run_in(pooled, job)
                except (aiodocker.DockerError, aiohttp.ClientError, OSError):
                    pooled = None  # the pooled container died (daemon restart?): one cold attempt
                else:
                    self.warm_runs += 1
            if pooled is None:
                try:
                    container = await self._new_container(job.network)
                except (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.warning("sandbox container failed to start", extra={"error_type": type(exc).__name__})
                    await self.refresh(force=True)
                    raise SandboxUnavailable(self.reason if not self.available else "container_failed") from None
                try:
                    outcome = await self._run_in(container, job)
                except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
                    log.warning("sandbox exec failed", extra={"error_type": type(exc).__name__})
                    raise SandboxUnavailable("container_failed") from None
                self.cold_runs += 1
            outcome.duration_ms = round((time.perf_counter() - started) * 1000, 3)
            outcome.warm = pooled is not None
            return outcome

    async def _run_in(self, container: DockerContainer, job: SandboxJob) -> SandboxOutcome:
        try:
            return await self._exec(container, job)
        finally:
            self._dispose(container)  # single use, whatever happened (also on cancellation)

    async def _exec(self, container: DockerContainer, job: SandboxJob) -> SandboxOutcome:
        stdout, stderr = _Capture(job.output_bytes), _Capture(job.output_bytes)
        execution = await container.exec(
            ["python3", "-I", "-S", "-c", job.program, str(len(job.stdin))],
            stdin=True,
            user=SANDBOX_USER,
            workdir=CONTAINER_TMP,
            privileged=False,
        )
        stream = execution.start(detach=False)
        timed_out = output_limited = False

        async def pump() -> bool:
            """Feed stdin, read the output; True when the output went far past the cap."""
            await stream.write_in(job.stdin)
            while (message := await stream.read_out()) is not None:
                (stderr if message.stream == 2 else stdout).add(message.data)
                if stdout.seen + stderr.seen > 2 * job.output_bytes + DISCARD_BYTES:
                    return True
            return False

        try:
            output_limited = await asyncio.wait_for(pump(), job.timeout)
        except TimeoutError:
            timed_out = True
        finally:
            await stream.close()
        exit_code: int | None = None
        if timed_out or output_limited:
            # Stop it now, through the API: the exec's process lives in the container, not here.
            await self._remove(container)
        else:
            exit_code = await self._exit_code(execution)
        return SandboxOutcome(
            exit_code=exit_code,
            stdout=stdout.text(),
            stderr=stderr.text(),
            timed_out=timed_out,
            output_limited=output_limited,
            truncated=stdout.truncated or stderr.truncated,
        )

    @staticmethod
    async def _exit_code(execution: Any) -> int | None:
        # The output stream ends a moment before Docker records the exit code.
        for _ in range(50):
            info = await execution.inspect()
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            await asyncio.sleep(0.01)
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True

"""/ready's checks: each bounded, and a check with a bound of its own reports its own reason."""

from __future__ import annotations

import asyncio

from app.readiness import Readiness


async def test_a_check_with_its_own_bound_reports_its_own_reason() -> None:
    async def provider() -> tuple[bool, str]:  # gives up after its own bound (0.05 s) with its reason
        await asyncio.sleep(0.05)
        return False, "provider_unreachable"

    async def stuck() -> tuple[bool, str]:
        await asyncio.sleep(10)
        return True, "ok"

    readiness = Readiness()
    readiness.add("provider", provider, timeout=0.05 + 1)  # the backstop past its own bound
    readiness.add("stuck", stuck, timeout=0.1)
    report = await readiness.report()
    assert not report.ready
    assert report.checks == {"provider": "provider_unreachable", "stuck": "timeout"}


async def test_a_check_that_ignores_cancellation_does_not_hold_up_ready() -> None:
    """A query on a hung database connection may take its own timeout to give up when cancelled:
    /ready answers at the bound anyway."""
    release = asyncio.Event()

    async def hung_database() -> tuple[bool, str]:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await release.wait()  # slow to give up, like a cancelled query on a dead connection
            raise
        return True, "ok"

    readiness = Readiness()
    readiness.add("database", hung_database, timeout=0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await asyncio.wait_for(readiness.report(), 5)
    assert loop.time() - started < 1 and report.checks == {"database": "timeout"}
    release.set()


async def test_an_optional_check_that_fails_leaves_the_instance_ready_and_degraded() -> None:
    async def database() -> tuple[bool, str]:
        return True, "ok"

    async def sandbox() -> tuple[bool, str]:
        return False, "sandbox_unavailable:docker_not_found"

    readiness = Readiness()
    readiness.add("database", database)
    readiness.add("sandbox", sandbox, required=False)
    report = await readiness.report()
    assert report.ready and report.reason == "ok"
    assert report.degraded == ["sandbox_unavailable:docker_not_found"]
    assert report.checks["sandbox"] == "sandbox_unavailable:docker_not_found"

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

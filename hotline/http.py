"""The daemon's small HTTP surface on aiohttp: /healthz, /readyz and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

# Returns the reasons the daemon is not ready; empty when it is.
Readiness = Callable[[], list[str]]


def make_app(registry: CollectorRegistry, readiness: Readiness) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        # The process and its event loop answer: that is all liveness means.
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        reasons = readiness()
        return web.json_response(
            {"ready": not reasons, "reasons": reasons}, status=503 if reasons else 200
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    return app


@asynccontextmanager
async def serve(
    host: str, port: int, registry: CollectorRegistry, readiness: Readiness
) -> AsyncIterator[web.AppRunner]:
    runner = web.AppRunner(make_app(registry, readiness), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield runner
    finally:
        await runner.cleanup()

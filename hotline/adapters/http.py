"""The daemon's small HTTP surface on aiohttp: /healthz, /readyz and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from aiohttp import web

# A component's reasons for not being ready; empty when it is. /readyz asks each one.
Readiness = Callable[[], list[str]]
# Renders the metrics in Prometheus' text format, from memory only: it runs on the event loop.
Exposition = Callable[[], bytes]
_TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


def make_app(exposition: Exposition, readiness: Sequence[Readiness]) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        # The process and its event loop answer: that is all liveness means.
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        reasons = [reason for provider in readiness for reason in provider()]
        return web.json_response(
            {"ready": not reasons, "reasons": reasons}, status=503 if reasons else 200
        )

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=exposition(), headers={"Content-Type": _TEXT_FORMAT})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


@asynccontextmanager
async def serve(
    host: str, port: int, exposition: Exposition, readiness: Sequence[Readiness]
) -> AsyncIterator[web.AppRunner]:
    runner = web.AppRunner(make_app(exposition, readiness), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield runner
    finally:
        await runner.cleanup()

"""Composition root: builds the hub's objects, owns their tasks, serves HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from hub import __version__
from hub.ingest import Ingest
from hub.metrics import Metrics
from hub.models import Inbound
from hub.pipeline import Pipeline
from hub.settings import Settings
from hub.storage.migrate import migrate
from hub.storage.pool import create_pool

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Hub:
    """A running hub: pool, ingest and pipeline, and the tasks that drive them."""

    settings: Settings
    pool: AsyncConnectionPool[AsyncConnection[object]]
    ingest: Ingest
    pipeline: Pipeline
    metrics: Metrics


@contextlib.asynccontextmanager
async def run_hub(settings: Settings, *, apply_migrations: bool = True) -> AsyncIterator[Hub]:
    """Start the hub's stages; on exit cancel every task and close every resource."""
    if apply_migrations:
        await migrate(settings)
    metrics = Metrics()
    # Bounded: when storage falls behind, reading from the socket pauses; the broker keeps
    # the rest (at most Receive Maximum unacked messages are ever in flight to us).
    inbound: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=max(settings.batch_max * 2, 1000))
    pool = create_pool(settings)
    await pool.open(wait=False)
    ingest = Ingest(settings, inbound)
    pipeline = Pipeline(settings, pool, ingest, inbound, metrics)
    hub = Hub(settings, pool, ingest, pipeline, metrics)
    tasks = [asyncio.create_task(pipeline.run(), name="carehub-pipeline")]
    tasks[0].add_done_callback(_report_crash)
    try:
        await pipeline.ready.wait()
        tasks.append(asyncio.create_task(ingest.run(), name="carehub-ingest"))
        tasks[1].add_done_callback(_report_crash)
        yield hub
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await pool.close()


def get_hub(request: Request) -> Hub:
    """The running hub, from the lifespan state."""
    hub: Hub = request.state.hub
    return hub


HubDep = Annotated[Hub, Depends(get_hub)]


def _report_crash(task: asyncio.Task[None]) -> None:
    """Log a stage that stopped on its own: that is a bug, and must not pass silently."""
    if not task.cancelled() and task.exception() is not None:
        logger.critical("%s stopped: %r", task.get_name(), task.exception(), exc_info=task.exception())


def create_app(settings: Settings) -> FastAPI:
    """The HTTP application; its lifespan runs the whole hub."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Hub]]:
        async with run_hub(settings) as hub:
            yield {"hub": hub}

    app = FastAPI(
        title="carehub",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(hub: HubDep) -> Response:
        """Readiness: connected to the broker and the database is reachable (or spooling)."""
        body = {
            "mqtt": hub.ingest.connected.is_set(),
            "database": hub.metrics.database_up,
            "spool_pending_batches": hub.metrics.spool_pending,
        }
        ready = bool(body["mqtt"]) and bool(body["database"])
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics(hub: HubDep) -> str:
        """Prometheus metrics of this process."""
        hub.metrics.mqtt_connected = hub.ingest.connected.is_set()
        return hub.metrics.render()

    return app

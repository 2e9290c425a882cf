"""The HTTP application: the API, the live feed and the dashboards over a running hub."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from hub import __version__
from hub.api import api_router, install_error_handlers
from hub.api.dashboards import router as dashboards_router
from hub.api.deps import HubDep
from hub.api.live import document_live_messages
from hub.api.live import router as live_router
from hub.api.security import SecurityHeaders, docs_policy
from hub.runtime import Hub, run_hub
from hub.settings import Settings

# uvicorn options wherever the hub is served. The live feed sends every change to every
# screen: per-message deflate would cost one compression per client per message, so it is
# off. A websocket client that stopped reading never finishes closing: shutdown waits for
# such connections this long, then goes on.
SERVER_OPTIONS: dict[str, Any] = {
    "ws_per_message_deflate": False,
    "timeout_graceful_shutdown": 5,
    # Not uvloop: aiomqtt registers paho's sockets with the loop through call_soon_threadsafe,
    # and under uvloop a registration that lands after its socket closed (a broker restart)
    # broke the poll handle of a live connection: that lane heard nothing for a minute, until
    # its keepalive ran out (`carehub bench faults`, one run in four). asyncio's own loop
    # has never done it.
    "loop": "asyncio",
}


def create_app(settings: Settings, *, own_process: bool = False) -> FastAPI:
    """The HTTP application; its lifespan runs the whole hub.

    `own_process`: the hub is the process (`carehub serve`, `carehub demo`), so it may
    tune the process's garbage collector (runtime.settle_garbage_collector).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Hub]]:
        async with run_hub(settings, settle_gc=own_process) as hub:
            yield {"hub": hub}

    app = FastAPI(
        title="carehub",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        # Served below, with a policy that admits only its own inline script.
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(SecurityHeaders)

    docs_page = get_swagger_ui_html(openapi_url="/api/v1/openapi.json", title="carehub API")
    docs_html = bytes(docs_page.body).decode()
    docs_headers = {"Content-Security-Policy": docs_policy(docs_html)}

    @app.get("/api/v1/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """The browsable OpenAPI document (Swagger UI)."""
        return HTMLResponse(docs_html, headers=docs_headers)

    @app.get("/healthz", tags=["health"])
    async def healthz(hub: HubDep) -> dict[str, Any]:
        """Liveness: the process answers; a failing webhook shows here as "degraded".

        A dead notification endpoint is reported, never a reason to restart the hub, so
        the answer stays 200.
        """
        notifications = hub.notifier.health()
        return {"status": notifications["status"], "notifications": notifications}

    @app.get("/readyz", tags=["health"])
    async def readyz(hub: HubDep) -> Response:
        """Readiness: connected to the broker and the database is reachable (or spooling)."""
        metrics = hub.metrics
        body = {
            "mqtt": hub.mqtt_connected,
            "database": metrics.database_up,
            "spool_pending_batches": metrics.spool_pending,
            # Lost on the broker, not here: reported, not a reason to take the hub out.
            "broker_dropped": {
                "while_watched": metrics.broker_dropped_seen,
                "since_broker_start": metrics.broker_dropped,
                "visible": metrics.broker_drops_visible,
            },
        }
        ready = bool(body["mqtt"]) and bool(body["database"])
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics(hub: HubDep) -> str:
        """Prometheus metrics of this process."""
        hub.metrics.mqtt_connected = hub.mqtt_connected
        return hub.metrics.render()

    install_error_handlers(app)
    app.include_router(api_router())

    app.include_router(live_router, prefix="/api/v1")

    def openapi() -> dict[str, Any]:
        """The routes' document (built once), with the live websocket's messages."""
        if app.openapi_schema is None:
            document_live_messages(FastAPI.openapi(app))
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

    # The built dashboards: / (regulator screen), /console/ (staff), /assets/.
    app.include_router(dashboards_router)
    return app

"""The HTTP API v1 (docs/api.md): one router per resource, under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter

from hub.api import (
    access,
    alerts,
    auth,
    broker_hooks,
    config,
    credentials,
    devices,
    facilities,
    intake,
    kpis,
    reports,
    rules,
    webhooks,
)
from hub.api.errors import install_error_handlers

PREFIX = "/api/v1"

__all__ = ["PREFIX", "api_router", "install_error_handlers"]


def api_router() -> APIRouter:
    """Every v1 route, under /api/v1."""
    router = APIRouter(prefix=PREFIX)
    for module in (
        auth,
        facilities,
        devices,
        credentials,
        alerts,
        kpis,
        reports,
        rules,
        webhooks,
        intake,
        access,
        broker_hooks,
        config,
    ):
        router.include_router(module.router)
    return router

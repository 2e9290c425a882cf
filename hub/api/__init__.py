"""The HTTP API v1 (docs/api.md): one router per resource, under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter

from hub.api import (
    access,
    alerts,
    auth,
    config,
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
        alerts,
        kpis,
        reports,
        rules,
        webhooks,
        intake,
        access,
        config,
    ):
        router.include_router(module.router)
    return router

"""One error shape for every failure (docs/api.md Errors), and the handlers that make it."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from hub.errors import (
    ApiError,
    CodedError,
    HubError,
    NotifyError,
    RuleError,
    SignInLimitError,
    StorageError,
)

logger = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "bad_request",
    415: "bad_request",
    422: "bad_request",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}
# CodedError codes (alerts, accounts, credentials, queries) as HTTP statuses.
_STATUS_OF_CODE = {
    "invalid": 400,
    "not_found": 404,
    "conflict": 409,
    "unauthorized": 401,
    "forbidden": 403,
}


class ErrorBody(BaseModel):
    """Every error the API answers: a code, a sentence a person can act on, the bad field."""

    error: str
    message: str
    field: str | None = None


class LimitedBody(ErrorBody):
    """A refused sign-in: too many failures for the account or the address; when to retry."""

    retry_after_s: int
    retry_at: datetime


# POST /auth/login while the account name or the client address has failed too often.
TOO_MANY_SIGN_INS: dict[str, Any] = {
    "model": LimitedBody,
    "description": "too many failed sign-ins for this account or client address: nothing "
    "is checked, not even the right password, until `retry_at` (a backoff that grows with "
    "each failure, then a lock that an administrator can lift)",
    "headers": {
        "Retry-After": {
            "description": "seconds until a sign-in is checked again",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}


def not_found(what: str) -> ApiError:
    """404 that neither confirms nor denies that something outside the caller's scope exists."""
    return ApiError(404, f"there is no {what}, or it is not yours to see")


def error_response(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error response of docs/api.md."""
    body: dict[str, Any] = {"error": CODES.get(status, "bad_request"), "message": message}
    if field is not None:
        body["field"] = field
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(body, status_code=status, headers=headers)


# Responses every authenticated route may give, for the OpenAPI document. Any parameter
# may carry a value the schema allows but the database refuses (a NUL character), and any
# body may not be UTF-8: 400.
BAD_REQUEST: dict[str, Any] = {
    "model": ErrorBody,
    "description": "a value the hub cannot take, or a body that is not UTF-8 JSON",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: BAD_REQUEST,
    401: {"model": ErrorBody, "description": "no token, or an expired or revoked one"},
    403: {"model": ErrorBody, "description": "the caller's role may not do this"},
    404: {"model": ErrorBody, "description": "no such object in the caller's scope"},
    422: {"model": ErrorBody, "description": "a parameter or the body is invalid (`field`)"},
}


def error_responses(
    bad_request: str, conflict: str | None = None
) -> dict[int | str, dict[str, Any]]:
    """ERROR_RESPONSES in this route's own words for its 400 (and its 409, if it has one)."""
    responses = {**ERROR_RESPONSES, 400: {"model": ErrorBody, "description": bad_request}}
    if conflict is not None:
        responses[409] = {"model": ErrorBody, "description": conflict}
    return responses


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on this request's path, for `Allow`.

    Starlette names only the methods of the first route whose path matches, and FastAPI
    makes one route per method: GET and PUT on one path would answer `Allow: GET, HEAD`.
    So each method is tried against the app's routes, as the router itself would.
    """
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(part) for part in loc]
    return ".".join(parts) if parts else "request"


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error, FastAPI's and the hub's, with the one JSON shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers: dict[str, str] | None = getattr(exc, "headers", None)
        if exc.status_code == 404:
            message = f"there is no route {request.url.path}; see /api/v1/openapi.json"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if not errors:
            return error_response(422, "the request is invalid")
        first = errors[0]
        field = _field(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            return error_response(422, "the body is not valid JSON", "body")
        if field == "body" and first.get("type") in ("model_attributes_type", "dict_type"):
            return error_response(422, "the body must be a JSON object", "body")
        # The message, never the input: it may be huge, or somebody else's junk.
        return error_response(422, f"{field}: {first.get('msg', 'invalid')}", field)

    @app.exception_handler(CodedError)
    async def _coded_error(_request: Request, exc: CodedError) -> JSONResponse:
        # Alerts, accounts, credentials and queries: the code says the status.
        return error_response(_STATUS_OF_CODE.get(exc.code, 400), str(exc), exc.field)

    @app.exception_handler(SignInLimitError)
    async def _sign_in_limited(_request: Request, exc: SignInLimitError) -> JSONResponse:
        body = LimitedBody(
            error=CODES[429],
            message=str(exc),
            retry_after_s=exc.retry_after_s,
            retry_at=exc.until,
        )
        return JSONResponse(
            body.model_dump(mode="json", exclude={"field"}),
            status_code=429,
            headers={"Retry-After": str(exc.retry_after_s)},
        )

    @app.exception_handler(RuleError)
    async def _rule_error(_request: Request, exc: RuleError) -> JSONResponse:
        return error_response(400, str(exc), "body.params")

    @app.exception_handler(NotifyError)
    async def _notify_error(_request: Request, exc: NotifyError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(StorageError)
    async def _storage_error(_request: Request, exc: StorageError) -> JSONResponse:
        logger.warning("API request failed on storage: %s", exc)
        return error_response(503, "the database is unavailable just now; try again shortly")

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(_request: Request, _exc: PoolTimeout) -> JSONResponse:
        return error_response(503, "the database is busy or unreachable; try again shortly")

    @app.exception_handler(psycopg.OperationalError)
    async def _database_down(_request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        logger.warning("API request failed on the database: %s", exc)
        return error_response(503, "the database is unavailable just now; try again shortly")

    @app.exception_handler(psycopg.DataError)
    async def _bad_value(_request: Request, _exc: psycopg.DataError) -> JSONResponse:
        return error_response(400, "a value in the request is out of range or not valid text")

    @app.exception_handler(HubError)
    async def _hub_error(_request: Request, exc: HubError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "the hub failed to answer; the error is in its log")

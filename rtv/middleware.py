"""Request correlation ids, carried into logs and audit events."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        rid = incoming if 0 < len(incoming) <= 64 else uuid.uuid4().hex
        token = request_id_var.set(rid)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = rid
        return response


class RequestSanityMiddleware:
    """Requests no view can answer sensibly are 400s in the API's error shape, before any view:
    a ``Content-Length`` that is not a whole number of bytes (metrics middleware reads it as an
    integer first; gunicorn refuses such a request itself, other servers and proxies may not), and a
    NUL character in the query string (PostgreSQL text cannot hold one: a filter would be a 500)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = request.META.get("CONTENT_LENGTH", "")
        if length and not (length.isascii() and length.isdigit()):
            return _bad("bad_content_length", "Content-Length", "Content-Length must be a whole number of bytes.")
        query = request.META.get("QUERY_STRING", "")
        if "%00" in query or "\x00" in query:
            return _bad("invalid_characters", "query", "The query string holds a NUL character.")
        return self.get_response(request)


def _bad(code: str, field: str, message: str) -> JsonResponse:
    return JsonResponse({"code": code, "message": message, "errors": [{"field": field, "code": code, "message": message}]},
                        status=400)

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


class ContentLengthMiddleware:
    """A ``Content-Length`` that is not a whole number of bytes is a 400 in the API's error shape.
    (Metrics middleware reads it as an integer before any view would answer; gunicorn refuses such a
    request itself, other servers and proxies may not.)"""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = request.META.get("CONTENT_LENGTH", "")
        if length and not (length.isascii() and length.isdigit()):
            message = "Content-Length must be a whole number of bytes."
            return JsonResponse({"code": "bad_content_length", "message": message,
                                 "errors": [{"field": "Content-Length", "code": "invalid", "message": message}]},
                                status=400)
        return self.get_response(request)

"""One error shape for every API answer: {"code", "message", "errors": [{"field", "code", "message"}]}."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import bad_request, page_not_found
from rest_framework import exceptions, parsers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class ApiError(exceptions.APIException):
    """An error our own code raises, with a stable machine-readable code."""

    def __init__(self, code: str, message: str, *, status_code: int = status.HTTP_400_BAD_REQUEST,
                 errors: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None) -> None:
        self.status_code = status_code
        self.code = code
        self.message = message
        self.errors = errors or []
        self.extra = extra or {}
        super().__init__(detail=message, code=code)


def _flatten(detail: Any, prefix: str = "") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "non_field_errors":
                name = prefix or None  # type: ignore[assignment]
            out.extend(_flatten(value, name))
    elif isinstance(detail, list):
        if all(isinstance(d, exceptions.ErrorDetail | str) for d in detail):
            for d in detail:
                out.append({"field": prefix or None, "code": getattr(d, "code", "invalid"), "message": str(d)})
        else:
            for i, d in enumerate(detail):
                out.extend(_flatten(d, f"{prefix}[{i}]"))
    else:
        out.append({"field": prefix or None, "code": getattr(detail, "code", "invalid"), "message": str(detail)})
    return out


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApiError):
        body = {"code": exc.code, "message": exc.message, "errors": exc.errors, **exc.extra}
        return Response(body, status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response({"code": "payload_too_large", "message": "The request body is over the limit.", "errors": []},
                        status=413)
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):  # Django's limits on a form's parts
        return Response({"code": "too_many_parts", "message": "The form has too many fields or files: send one file "
                                                              "and the options the endpoint names.", "errors": []},
                        status=400)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        body = {"code": "invalid", "message": "The request has invalid fields.", "errors": _flatten(exc.detail)}
    else:
        detail = getattr(exc, "detail", "")
        code = getattr(exc, "default_code", "error")
        if isinstance(detail, dict):  # simplejwt's {"detail", "code", "messages"}: its words, not a repr
            code = str(detail.get("code") or code)
            detail = detail.get("detail", "")
        else:
            if isinstance(detail, list):
                detail = detail[0] if detail else ""
            if isinstance(detail, exceptions.ErrorDetail):
                code = detail.code or code
        body = {"code": code, "message": str(detail), "errors": []}
    response.data = body
    return response


def _json_under_api(request: HttpRequest, exception: Exception | None, code: str, message: str, status_code: int,
                    page: Any) -> HttpResponse:
    """The standard error shape under /api/; Django's own ``page`` view elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"code": code, "message": message, "errors": []}, status=status_code)
    return page(request, exception)  # type: ignore[no-any-return]


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: a path no view answers is a JSON 404 in the standard shape under /api/ (an id
    that is not a UUID, an unknown endpoint), the site's own page elsewhere."""
    return _json_under_api(request, exception, "not_found", "Not found.", 404, page_not_found)


def bad_request_page(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: a request Django itself refuses (a suspicious operation outside DRF's handling)
    is a JSON 400 in the standard shape under /api/, the site's own page elsewhere."""
    return _json_under_api(request, exception, "bad_request", "The request could not be read.", 400, bad_request)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with a document nested deeper than Python can parse (``[[[[...``) refused
    as a parse error (400) like any other malformed body, instead of a RecursionError (500)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise exceptions.ParseError("JSON parse error - the document is nested too deeply.") from exc

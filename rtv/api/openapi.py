"""The OpenAPI document's error answers: every operation names the 4xx statuses it can answer, each
with the one error shape ``rtv.errors`` writes, so a client generated from the document knows
what a refusal looks like (before, only the success was described, and an error's JSON body was
"undocumented" beside a CSV or Excel success)."""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = "Error"
ERROR_COMPONENT: dict[str, Any] = {
    "type": "object",
    "description": "Every 4xx answer of the API.  Some add keys of their own (e.g. an earlier batch's id).",
    "properties": {
        "code": {"type": "string", "description": "stable, machine-readable"},
        "message": {"type": "string", "description": "for people"},
        "errors": {"type": "array", "items": {
            "type": "object",
            "properties": {"field": {"type": "string", "nullable": True, "description": "dotted path of the field"},
                           "code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["field", "code", "message"]}},
    },
    "required": ["code", "message", "errors"],
    "additionalProperties": True,
}
_WHY = {
    "400": "Invalid input: the fields at fault, by name.",
    "401": "No valid credentials.",
    "403": "Signed in, but this role or partner may not do this.",
    "404": "No such resource (or not one this account may see).",
    "406": "The Accept header asks for a format the endpoint does not write.",
    "409": "In conflict with what is stored; the answer says with what.",
    "413": "The body is over the limit.",
    "415": "The body's content type is not one the endpoint reads.",
    "429": "Too many attempts: try again later.",
    "503": "Not ready: no model answers yet.",
}
_ANY_OBJECT = {"type": "object", "additionalProperties": {}}  # what ``responses={409: dict}`` documents
_SIGN_IN = ("/api/v1/auth/token/", "/api/v1/auth/token/refresh/")


def _statuses(path: str, method: str, operation: dict[str, Any], view: Any) -> list[str]:
    codes = ["401", "406"]
    if path not in _SIGN_IN:
        codes.append("403")
    if "{" in path:
        codes.append("404")
    if "requestBody" in operation or any(p.get("in") == "query" for p in operation.get("parameters", [])):
        codes.append("400")
    if "requestBody" in operation:
        codes += ["413", "415"]
    view = getattr(view, "cls", view)  # the callback drf-spectacular lists carries its class
    if getattr(view, "throttle_classes", None) or getattr(view, "throttle_scope", None):
        codes.append("429")
    return codes


def document_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the standard error answers on every operation, beside
    whatever the operation documents itself (which wins)."""
    # Keyed as the document names paths (drf-spectacular rewrites ``{pk}`` to ``{id}``).
    views = {(generator.coerce_path(path, method, view), method.lower()): view
             for path, _, method, view in getattr(generator, "endpoints", None) or []}
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_SCHEMA] = ERROR_COMPONENT
    ref = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for code, answer in responses.items():  # an error a view documents as any object is this one
                body = answer.get("content", {}).get("application/json")
                if code.startswith(("4", "5")) and body is not None and body.get("schema") == _ANY_OBJECT:
                    body["schema"] = ref
                    answer["description"] = answer.get("description") or _WHY.get(code, "")
            for code in _statuses(path, method, operation, views.get((path, method))):
                responses.setdefault(code, {"content": {"application/json": {"schema": ref}},
                                            "description": _WHY[code]})
    return result

"""Staff and partner file uploads: 202 at once, processing in Celery, progress and error reports."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.files.storage import default_storage
from django.db import transaction
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ingestion.models import IngestionBatch, Partner
from ingestion.readers import ReadError
from ingestion.reports import error_report_csv, error_report_xlsx
from ingestion.selectors import access_batch, batches_visible_to
from ingestion.services import DuplicateFile, FileNotStored, batch_create, batch_progress
from ingestion.submissions import device_body
from rtv.errors import ApiError
from rtv.outbox import outbox_enqueue
from rtv.roles import ADMIN, DATA_MANAGER, DATA_SCIENTIST, PARTNER, HasRole, has_role
from rtv.services import audit_record

CAN_UPLOAD = HasRole.of(DATA_MANAGER, DATA_SCIENTIST, ADMIN, PARTNER)


class UploadIn(serializers.Serializer):
    file = serializers.FileField()
    dry_run = serializers.BooleanField(default=False)
    force = serializers.BooleanField(default=False)
    source = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")


def upload_body(batch: IngestionBatch, user: AbstractBaseUser | AnonymousUser) -> dict[str, Any]:
    """An upload as its sender sees it: the earlier batch a forced one repeats is named only when
    the reader may see that batch too."""
    progress = batch_progress(batch)
    duplicate_of = batch.duplicate_of_id
    if duplicate_of and not batches_visible_to(user).filter(pk=duplicate_of).exists():
        duplicate_of = None
    total = progress["rows_total"]
    base = f"/api/v1/uploads/{batch.pk}/"
    return {
        "ingestion_id": str(batch.pk),
        "state": batch.status,
        "dry_run": batch.dry_run,
        "channel": batch.channel,
        "source": batch.source,
        "file": {"name": batch.original_name, "format": batch.format, "size_bytes": batch.size_bytes,
                 "sha256": batch.sha256, "columns": batch.column_count},
        "progress": {"rows_done": progress["rows_done"], "rows_total": total,
                     "percent": round(100 * progress["rows_done"] / total, 1) if total else (
                         100.0 if batch.status == IngestionBatch.Status.SUCCEEDED else 0.0)},
        "counts": {"accepted": progress["accepted"], "warnings": progress["warnings"], "rejected": progress["rejected"],
                   "duplicates": batch.duplicates},
        "label_counts": batch.label_counts,
        "timings": batch.timings,
        "error": batch.error or None,
        "duplicate_of": str(duplicate_of) if duplicate_of else None,
        "created_at": batch.created_at.isoformat(),
        "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
        "links": _links(base),
    }


def _partner_of(request: Request) -> Partner | None:
    if not has_role(request.user, PARTNER) or has_role(request.user, DATA_MANAGER, ADMIN):
        return None
    partner = Partner.objects.filter(users=request.user, active=True).first()
    if partner is None:
        raise ApiError("no_partner", "This account is not linked to an active partner source.", status_code=403)
    return partner


def _duplicate(request: Request, earlier: IngestionBatch) -> ApiError:
    """The same bytes were stored before: a 409 naming the earlier batch when the sender may see it.
    Another source's batch is not named (its id, time and link are not the sender's to know), but the
    file is refused all the same: the rows it holds are stored already."""
    message = "This file was already ingested; send force=true to ingest it again."
    if not batches_visible_to(request.user).filter(pk=earlier.pk).exists():
        return ApiError("duplicate_file", message, status_code=409,
                        errors=[{"field": "file", "code": "duplicate_file", "message": "this file was already ingested"}])
    return ApiError("duplicate_file", message, status_code=409,
                    errors=[{"field": "file", "code": "duplicate_file",
                             "message": f"this file was already ingested as {earlier.pk}"}],
                    extra={"earlier": {"ingestion_id": str(earlier.pk), "created_at": earlier.created_at.isoformat(),
                                       "links": {"self": f"/api/v1/uploads/{earlier.pk}/"}}})


def _links(base: str) -> dict[str, str]:
    return {"self": base, "errors_csv": base + "errors.csv", "errors_xlsx": base + "errors.xlsx",
            "original": base + "original"}


def upload_summary(batch: IngestionBatch) -> dict[str, Any]:
    """A batch in a list: what its own row says (no query per batch)."""
    base = f"/api/v1/uploads/{batch.pk}/"
    return {"ingestion_id": str(batch.pk), "state": batch.status, "dry_run": batch.dry_run, "channel": batch.channel,
            "source": batch.source, "file": {"name": batch.original_name, "format": batch.format},
            "rows": batch.row_count, "counts": {"accepted": batch.accepted, "rejected": batch.rejected,
                                                "warnings": batch.warnings, "duplicates": batch.duplicates},
            "error": batch.error or None, "created_at": batch.created_at.isoformat(),
            "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
            "links": _links(base)}


class UploadCreateView(APIView):
    """POST: send a file (202 at once).  GET: the batches the caller may see, newest first (a
    partner's own, its inbox's included; staff every one), ``?state=`` and ``?limit=`` (at most 200)."""

    parser_classes = [MultiPartParser, FormParser]

    def get_permissions(self) -> list[Any]:
        return [CAN_UPLOAD()] if self.request.method == "POST" else super().get_permissions()

    @extend_schema(operation_id="v1_uploads_list", responses={200: dict})
    def get(self, request: Request) -> Response:
        qs = batches_visible_to(request.user).order_by("-created_at")
        state = request.query_params.get("state")
        if state:
            if state not in IngestionBatch.Status.values:
                raise ApiError("invalid", "Unknown state.", errors=[{"field": "state", "code": "invalid_choice",
                                                                      "message": f"one of {', '.join(IngestionBatch.Status.values)}"}])
            qs = qs.filter(status=state)
        try:
            limit = min(200, max(1, int(request.query_params.get("limit", 50))))
        except ValueError as exc:
            raise ApiError("invalid", "limit must be a whole number.",
                           errors=[{"field": "limit", "code": "invalid", "message": "a whole number, 1 to 200"}]) from exc
        return Response({"uploads": [upload_summary(b) for b in qs[:limit]]})

    @extend_schema(request={"multipart/form-data": UploadIn}, responses={202: dict, 400: dict, 409: dict, 413: dict})
    def post(self, request: Request) -> Response:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > settings.RTV_MAX_UPLOAD_BYTES + (1 << 20):
            raise ApiError("payload_too_large", f"Files are limited to {settings.RTV_MAX_UPLOAD_BYTES} bytes.",
                           status_code=413)
        data = UploadIn(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        if upload.size > settings.RTV_MAX_UPLOAD_BYTES:
            raise ApiError("payload_too_large", f"Files are limited to {settings.RTV_MAX_UPLOAD_BYTES} bytes.",
                           status_code=413, errors=[{"field": "file", "code": "too_large", "message": str(upload.size)}])
        partner = _partner_of(request)
        try:
            with transaction.atomic():
                batch = batch_create(
                    fh=upload, original_name=upload.name, user=request.user,
                    channel=IngestionBatch.Channel.PARTNER if partner else IngestionBatch.Channel.UPLOAD,
                    source="" if partner else data.validated_data["source"], dry_run=data.validated_data["dry_run"],
                    force=data.validated_data["force"], partner=partner)
                outbox_enqueue("ingestion.plan_batch", str(batch.pk))
        except DuplicateFile as exc:
            raise _duplicate(request, exc.earlier) from exc
        except FileNotStored as exc:
            raise ApiError("file_not_stored", str(exc),
                           errors=[{"field": "file", "code": "file_not_stored", "message": str(exc)}]) from exc
        except ReadError as exc:
            raise ApiError(exc.code, str(exc), errors=[{"field": "file", "code": exc.code, "message": str(exc)}]) from exc
        return Response(upload_body(batch, request.user), status=202)


class UploadDetailView(APIView):
    @extend_schema(responses={200: dict, 404: dict})
    def get(self, request: Request, ingestion_id: str) -> Response:
        return Response(upload_body(access_batch(request.user, ingestion_id), request.user))


class _FileView(APIView):
    """A file download: any Accept header is fine, the body is not JSON."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        return super().perform_content_negotiation(request, force=True)


class UploadErrorsCsvView(_FileView):
    @extend_schema(responses={(200, "text/csv"): bytes})
    def get(self, request: Request, ingestion_id: str) -> StreamingHttpResponse:
        batch = access_batch(request.user, ingestion_id)
        response = StreamingHttpResponse(error_report_csv(batch), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="errors-{batch.pk}.csv"'
        return response


class UploadErrorsXlsxView(_FileView):
    @extend_schema(responses={(200, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"): bytes})
    def get(self, request: Request, ingestion_id: str) -> HttpResponse:
        batch = access_batch(request.user, ingestion_id)
        response = HttpResponse(error_report_xlsx(batch),
                                content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        response["Content-Disposition"] = f'attachment; filename="errors-{batch.pk}.xlsx"'
        return response


class UploadOriginalView(_FileView):
    """The original as it arrived (a file from raw/; a device request as its JSON body), to whoever
    may see the batch; each download is an audit event, as the original holds what the records do."""

    @extend_schema(responses={(200, "application/octet-stream"): bytes, 404: dict})
    def get(self, request: Request, ingestion_id: str) -> HttpResponse:
        batch = access_batch(request.user, ingestion_id)
        response = self._original(batch)
        if response is None:
            raise ApiError("original_not_kept", "This batch's original is not kept.", status_code=404)
        audit_record(actor=request.user, action="batch.original_downloaded", obj=batch)
        return response

    @staticmethod
    def _original(batch: IngestionBatch) -> HttpResponse | None:
        if batch.channel == IngestionBatch.Channel.DEVICE:
            body = device_body(batch)
            if body is None:
                return None
            response = HttpResponse(body, content_type="application/json")
            response["Content-Disposition"] = f'attachment; filename="request-{batch.pk}.json"'
            return response
        if not batch.file_key or not default_storage.exists(batch.file_key):
            return None
        return FileResponse(default_storage.open(batch.file_key, "rb"), as_attachment=True,
                            filename=batch.original_name or f"original-{batch.pk}.{batch.format or 'bin'}",
                            content_type="application/octet-stream")

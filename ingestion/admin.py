from typing import Any

from django.contrib import admin
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from rtv.admin import ReadOnlyAdmin, RoleAdmin
from rtv.roles import ADMIN, DATA_MANAGER

from .models import Household, IngestionBatch, Partner, RowIssue
from .selectors import SEE_ALL


@admin.register(IngestionBatch)
class IngestionBatchAdmin(RoleAdmin):
    list_display = ("created_at", "channel", "original_name", "status", "row_count", "accepted", "warnings", "rejected",
                    "dry_run")
    list_filter = ("channel", "status", "format", "dry_run")
    search_fields = ("original_name", "sha256", "source")
    readonly_fields = ("quality_report",)
    see = SEE_ALL  # the staff roles that see every batch through the API; written by services only

    @admin.display(description="quality report")
    def quality_report(self, obj: IngestionBatch) -> SafeString:
        """The batch's report (as ``GET /api/v1/uploads/{id}/quality/`` gives it) as tables: scores,
        findings by rule, by column and by district."""
        report: dict[str, Any] = obj.quality or {}
        if not report:
            return format_html("<p>{}</p>", "No report yet: the batch has not finished.")

        def number(v: Any) -> str:
            return "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

        def table(head: tuple[str, ...], rows: list[tuple[Any, ...]]) -> SafeString:
            return format_html(
                "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>",
                format_html_join("", "<th>{}</th>", ((h,) for h in head)),
                format_html_join("", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((number(c),) for c in r)),)
                                                     for r in rows)) if rows else format_html(
                    '<tr><td colspan="{}">none</td></tr>', len(head)))

        scores = report.get("scores") or {}
        return format_html(
            "<h4>Mean scores</h4>{}<h4>Findings by rule</h4>{}<h4>Findings by column</h4>{}"
            "<h4>Rows by district</h4>{}",
            table(("score", "completeness", "validity", "consistency"),
                  [tuple(scores.get(k) for k in ("score", "completeness", "validity", "consistency"))]),
            table(("rule", "errors", "warnings"), sorted(
                ((rule, c.get("error", 0), c.get("warning", 0)) for rule, c in (report.get("by_rule") or {}).items()),
                key=lambda r: (-r[1], -r[2], r[0]))),
            table(("field", "column", "errors", "warnings"), sorted(
                ((f, c.get("column", ""), c.get("error", 0), c.get("warning", 0))
                 for f, c in (report.get("by_column") or {}).items()), key=lambda r: (-r[2], -r[3], r[0]))),
            table(("district", "rows", "accepted", "rejected", "mean score (accepted)", "with warnings"), sorted(
                (d or "(none)", c.get("rows"), c.get("records"), c.get("rejected"), c.get("mean_score"),
                 c.get("with_warnings")) for d, c in (report.get("by_district") or {}).items())))


@admin.register(Household)
class HouseholdAdmin(ReadOnlyAdmin):
    list_display = ("household_id", "district", "village", "created_at")
    list_filter = ("district",)
    search_fields = ("household_id", "village")


@admin.register(RowIssue)
class RowIssueAdmin(ReadOnlyAdmin):
    list_display = ("batch", "row_number", "household_id", "field", "rule", "severity", "value")
    list_filter = ("severity", "rule")
    list_select_related = ("batch",)


@admin.register(Partner)
class PartnerAdmin(RoleAdmin):
    """The registry of partner organisations, kept by admins and data managers."""

    list_display = ("name", "slug", "active", "contact_email", "created_at")
    filter_horizontal = ("users",)
    readonly_fields = ("inbox_prefix",)
    see = edit = add = (ADMIN, DATA_MANAGER)
    delete = (ADMIN,)

from django.contrib import admin

from rtv.admin import ReadOnlyAdmin

from .models import Household, IngestionBatch, Partner, RowIssue, SurveyRecord


@admin.register(IngestionBatch)
class IngestionBatchAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "channel", "original_name", "status", "row_count", "accepted", "warnings", "rejected",
                    "dry_run")
    list_filter = ("channel", "status", "format", "dry_run")
    search_fields = ("original_name", "sha256", "source")


@admin.register(Household)
class HouseholdAdmin(ReadOnlyAdmin):
    list_display = ("household_id", "district", "village", "created_at")
    list_filter = ("district",)
    search_fields = ("household_id", "village")


@admin.register(SurveyRecord)
class SurveyRecordAdmin(ReadOnlyAdmin):
    list_display = ("household", "district", "village", "version", "progress_status", "review_status", "warning_count",
                    "received_at")
    list_filter = ("district", "review_status", "progress_status")
    search_fields = ("household__household_id", "village")
    list_select_related = ("household",)
    exclude = ("gps",)


@admin.register(RowIssue)
class RowIssueAdmin(ReadOnlyAdmin):
    list_display = ("batch", "row_number", "household_id", "field", "rule", "severity", "value")
    list_filter = ("severity", "rule")
    list_select_related = ("batch",)


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "active", "contact_email", "created_at")
    filter_horizontal = ("users",)
    readonly_fields = ("inbox_prefix",)

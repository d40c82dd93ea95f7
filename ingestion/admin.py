from django.contrib import admin

from rtv.admin import ReadOnlyAdmin

from .models import Household, IngestionBatch, Partner, RowIssue


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

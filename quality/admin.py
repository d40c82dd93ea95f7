"""The reviewers' workflow in the Django admin: a queue ordered worst quality first, filters,
bulk decisions with a comment, a comment thread, and corrections as new versions."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from ingestion.models import SURVEY_VALUE_FIELDS, RowIssue, SurveyRecord
from rtv.admin import RoleAdmin as SharedRoleAdmin
from rtv.roles import ADMIN, DATA_MANAGER, DATA_SCIENTIST, REVIEWER, has_role

from .models import QualityAlert, QualitySnapshot, ReviewComment, ReviewDecision, Rule, RuleRevision
from .rules import rule_update
from .services import ReviewError, record_correct, review_comment, review_decide

CAN_SEE = (REVIEWER, DATA_MANAGER, DATA_SCIENTIST, ADMIN)
CAN_REVIEW = (REVIEWER, DATA_MANAGER, ADMIN)


class RoleAdmin(SharedRoleAdmin):
    """Quality screens: every staff role sees them; each screen says who changes it."""

    see = CAN_SEE


class ScoreBand(admin.SimpleListFilter):
    title = "quality score"
    parameter_name = "score"
    BANDS = {"low": (0, 0.5), "mid": (0.5, 0.8), "fair": (0.8, 0.9), "good": (0.9, 1.01)}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("low", "below 0.5"), ("mid", "0.5 to 0.8"), ("fair", "0.8 to 0.9"), ("good", "0.9 and above")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in self.BANDS:
            lo, hi = self.BANDS[self.value()]  # type: ignore[index]
            return queryset.filter(quality_score__gte=lo, quality_score__lt=hi)
        return queryset


class RuleFilter(admin.SimpleListFilter):
    title = "rule with a finding"
    parameter_name = "rule"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(k, k) for k in Rule.Kind.values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(Exists(RowIssue.objects.filter(record=OuterRef("pk"), rule=self.value())))
        return queryset


class QueueFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "to review (received, has issues, on hold)"), ("latest", "latest versions only")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        latest = queryset.filter(superseded_by__isnull=True)
        if self.value() == "open":
            return latest.filter(review_status__in=["received", "has_issues", "on_hold"])
        if self.value() == "latest":
            return latest
        return queryset


class CommentInline(admin.TabularInline):
    model = ReviewComment
    extra = 1
    fields = ("created_at", "author", "text")
    readonly_fields = ("created_at", "author")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # comments are a thread: added, never edited

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, *CAN_REVIEW)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, *CAN_SEE)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DecisionInline(admin.TabularInline):
    model = ReviewDecision
    extra = 0
    fields = ("created_at", "reviewer", "from_status", "to_status", "comment")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, *CAN_SEE)


class DecideForm(forms.Form):
    comment = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), required=False)


def _decide_action(to_status: str, label: str) -> Any:
    def action(modeladmin: ReviewAdmin, request: HttpRequest, queryset: QuerySet[SurveyRecord]) -> HttpResponse | None:
        if "apply" in request.POST:
            form = DecideForm(request.POST)
            form.is_valid()
            n = review_decide(records=list(queryset), to_status=to_status, reviewer=request.user,
                              comment=form.cleaned_data.get("comment", ""))
            modeladmin.message_user(request, f"{n} record(s) moved to {to_status}.", messages.SUCCESS)
            return None
        count = queryset.count()
        # The confirmation posts back what the changelist posted: every ticked id, and "select all
        # N" (select_across, with the filters in the URL), so the decision covers what was chosen,
        # not the 50 records listed here.
        return TemplateResponse(request, "admin/quality/decide.html", {
            **modeladmin.admin_site.each_context(request), "title": f"{label}: {count} record(s)",
            "queryset": queryset[:50], "count": count, "more": max(0, count - 50), "form": DecideForm(),
            "action": request.POST["action"], "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"), "to_status": to_status,
            "opts": modeladmin.model._meta,
        })

    action.__name__ = f"decide_{to_status}"
    action.short_description = label  # type: ignore[attr-defined]
    action.allowed_permissions = ("change",)  # type: ignore[attr-defined]
    return action


class VillageFilter(admin.SimpleListFilter):
    """Villages of the district and cluster chosen (there are hundreds in all): one query."""

    title = "village"
    parameter_name = "village"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        qs = SurveyRecord.objects.exclude(village="")
        if district := request.GET.get("district__exact"):
            qs = qs.filter(district=district)
        if cluster := request.GET.get("cluster__exact"):
            qs = qs.filter(cluster=cluster)
        return [(v, v) for v in qs.order_by("village").values_list("village", flat=True).distinct()[:300]]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(village=self.value()) if self.value() else queryset


@admin.register(SurveyRecord)
class ReviewAdmin(RoleAdmin):
    edit = CAN_REVIEW
    list_display = ("household_code", "district", "village", "field_officer", "review_status", "score", "warning_count",
                    "version", "progress_status", "received_at")
    list_filter = (QueueFilter, "review_status", ScoreBand, RuleFilter, "district", "cluster", VillageFilter,
                   "field_officer", "auto_approved", "progress_status")
    search_fields = ("household__household_id", "village", "cluster")
    ordering = ("quality_score", "id")  # the queue: worst quality first
    list_select_related = ("household", "field_officer")
    list_per_page = 50
    show_full_result_count = False  # no COUNT(*) over the whole table on every page
    actions = [_decide_action("approved", "Approve"), _decide_action("rejected", "Reject"),
               _decide_action("on_hold", "Put on hold"), _decide_action("has_issues", "Mark as having issues")]
    inlines = [CommentInline, DecisionInline]
    fields = ("household", "version", "supersedes", "review_status", "auto_approved", "quality", "values_and_findings",
              "progress_status", "income_per_day", "batch", "row_number", "field_officer", "device_id", "form_version",
              "collected_at", "received_at", "correct_link")
    readonly_fields = fields

    @admin.display(description="household", ordering="household__household_id")
    def household_code(self, obj: SurveyRecord) -> str:
        return obj.household.household_id

    @admin.display(description="score", ordering="quality_score")
    def score(self, obj: SurveyRecord) -> str:
        return "" if obj.quality_score is None else f"{obj.quality_score:.3f}"

    @admin.display(description="quality")
    def quality(self, obj: SurveyRecord) -> str:
        parts = [("score", obj.quality_score), ("completeness", obj.completeness), ("validity", obj.validity),
                 ("consistency", obj.consistency)]
        return " · ".join(f"{k} {v:.3f}" for k, v in parts if v is not None)

    @admin.display(description="values and findings")
    def values_and_findings(self, obj: SurveyRecord) -> str:
        findings: dict[str, list[str]] = {}
        for i in obj.issues.all():
            findings.setdefault(i.field, []).append(f"{i.severity}: {i.message}")
        data = obj.data if hasattr(obj, "values") else {}
        rows = [(k, "" if data.get(k) is None else data.get(k), "; ".join(findings.get(k, []))) for k in SURVEY_VALUE_FIELDS]
        return format_html("<table>{}</table>", format_html_join(
            "", "<tr><th>{}</th><td>{}</td><td style='color:#a3261b'>{}</td></tr>", rows))

    @admin.display(description="correct")
    def correct_link(self, obj: SurveyRecord) -> str:
        if obj.pk is None:
            return ""
        return format_html('<a class="button" href="{}">Correct values (creates version {})</a>',
                           reverse("admin:quality_record_correct", args=[obj.pk]), obj.version + 1)

    def get_urls(self) -> list[Any]:
        return [path("<int:pk>/correct/", self.admin_site.admin_view(self.correct_view), name="quality_record_correct"),
                *super().get_urls()]

    def correct_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        record = get_object_or_404(SurveyRecord.objects.select_related("household"), pk=pk)
        if not self.has_change_permission(request, record):
            return HttpResponse(status=403)
        data = record.data
        fields = {k: forms.CharField(required=False, initial="" if data.get(k) is None else str(data.get(k)))
                  for k in SURVEY_VALUE_FIELDS}
        fields["comment"] = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
        form_class = type("CorrectForm", (forms.Form,), fields)
        form = form_class(request.POST or None)
        if request.method == "POST" and form.is_valid():
            changes = {k: (v if v != "" else None) for k, v in form.cleaned_data.items()
                       if k != "comment" and (v if v != "" else None) != (None if data.get(k) is None else str(data.get(k)))}
            try:
                new = record_correct(record=record, changes=changes, reviewer=request.user,
                                     comment=form.cleaned_data["comment"])
            except ReviewError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, f"Version {new.version} created; version {record.version} is kept.")
                return HttpResponseRedirect(reverse("admin:ingestion_surveyrecord_change", args=[new.pk]))
        return TemplateResponse(request, "admin/quality/correct.html", {
            **self.admin_site.each_context(request), "title": f"Correct {record.household.household_id} "
                                                                f"(version {record.version})",
            "form": form, "record": record, "opts": self.model._meta})

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is ReviewComment:  # comments go through the audited service
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
            for f in formset.forms:
                text = f.cleaned_data.get("text") if hasattr(f, "cleaned_data") else None
                if text and not f.instance.pk:
                    formset.new_objects.append(review_comment(record=form.instance, author=request.user, text=text))
            return
        super().save_formset(request, form, formset, change)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        pass  # every field is read-only: state changes go through actions and corrections


class RuleForm(forms.ModelForm):
    note = forms.CharField(required=False, help_text="why this change (kept in the rule's history)")

    class Meta:
        model = Rule
        fields = ("severity", "level", "params", "message", "active")

    def _post_clean(self) -> None:
        """The rule's constraints in full: they involve its kind, which the form shows read-only and
        Django would leave out of the check (the save would then fail in ``rule_update``, a 500)."""
        super()._post_clean()
        try:
            self.instance.validate_constraints()
        except ValidationError as exc:
            self.add_error(None, exc)


class RevisionInline(admin.TabularInline):
    model = RuleRevision
    extra = 0
    fields = ("version", "changed_at", "changed_by", "note", "snapshot")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Rule)
class RuleAdmin(RoleAdmin):
    edit = (DATA_MANAGER, ADMIN)
    form = RuleForm
    list_display = ("code", "level", "severity", "field", "kind", "active", "version", "updated_at")
    list_filter = ("level", "severity", "kind", "active")
    search_fields = ("code", "field", "message")
    readonly_fields = ("code", "kind", "field", "version", "updated_at")
    inlines = [RevisionInline]

    def save_model(self, request: HttpRequest, obj: Rule, form: Any, change: bool) -> None:
        changes = {k: form.cleaned_data[k] for k in ("severity", "level", "params", "message", "active")}
        rule_update(rule=obj, user=request.user, note=form.cleaned_data.get("note", ""), **changes)


@admin.register(QualitySnapshot)
class SnapshotAdmin(RoleAdmin):
    list_display = ("day", "records", "errors", "warnings", "mean_score", "completeness", "validity", "consistency")


@admin.register(QualityAlert)
class AlertAdmin(RoleAdmin):
    list_display = ("created_at", "metric", "previous", "current", "threshold", "delivered_at")

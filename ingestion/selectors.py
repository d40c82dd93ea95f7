"""Permission-scoped reads of ingestion data."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet

from rtv.errors import ApiError
from rtv.roles import ADMIN, DATA_MANAGER, DATA_SCIENTIST, FIELD_OFFICER, PARTNER, REVIEWER, has_role

from .models import IngestionBatch, SurveyRecord

SEE_ALL = (REVIEWER, DATA_MANAGER, DATA_SCIENTIST, ADMIN)


def records_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[SurveyRecord]:
    """Staff roles see every record; a field officer sees what they submitted; others nothing."""
    qs = SurveyRecord.objects.all()
    if has_role(user, *SEE_ALL):
        return qs
    return qs.filter(field_officer_id=user.pk) if user.is_authenticated else qs.none()


def access_submission(user: AbstractBaseUser | AnonymousUser, submission_id: uuid.UUID | str) -> SurveyRecord:
    """The record, or the same 404 whether it is missing or not the user's to see."""
    record = records_visible_to(user).filter(submission_id=submission_id).select_related("household", "batch").first()
    if record is None:
        raise ApiError("not_found", "No such submission.", status_code=404)
    return record


def batches_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[IngestionBatch]:
    """Staff roles see every batch; a field officer what they sent; a partner's user every batch of
    their partner's source (their uploads, a colleague's, a file from its inbox) while the partner
    is active and they hold the partner role.  Deactivating a partner, or taking the role away,
    closes its batches and their error reports, as it closes its uploads."""
    qs = IngestionBatch.objects.all()
    if has_role(user, DATA_MANAGER, DATA_SCIENTIST, ADMIN, REVIEWER):
        return qs
    if not user.is_authenticated:
        return qs.none()
    visible = Q(pk__in=[])
    if has_role(user, FIELD_OFFICER):
        visible |= Q(created_by_id=user.pk)
    if has_role(user, PARTNER):
        visible |= Q(partner__users=user.pk, partner__active=True)
    return qs.filter(visible).distinct()


def access_batch(user: AbstractBaseUser | AnonymousUser, batch_id: uuid.UUID | str) -> IngestionBatch:
    batch = batches_visible_to(user).filter(pk=batch_id).first()
    if batch is None:
        raise ApiError("not_found", "No such upload.", status_code=404)
    return batch

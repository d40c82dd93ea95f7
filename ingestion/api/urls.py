from django.urls import path

from .submissions import SubmissionBatchView, SubmissionCreateView, SubmissionDetailView, SubmissionVersionsView

urlpatterns = [
    path("submissions/", SubmissionCreateView.as_view(), name="submissions"),
    path("submissions/batch/", SubmissionBatchView.as_view(), name="submissions-batch"),
    path("submissions/<uuid:submission_id>/", SubmissionDetailView.as_view(), name="submission-detail"),
    path("submissions/<uuid:submission_id>/versions/", SubmissionVersionsView.as_view(), name="submission-versions"),
]

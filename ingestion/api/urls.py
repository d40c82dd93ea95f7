from django.urls import path

from quality.api import ExpectationSuiteView, QualityTrendView, UploadQualityView

from .submissions import SubmissionBatchView, SubmissionCreateView, SubmissionDetailView, SubmissionVersionsView
from .uploads import (
    UploadCreateView,
    UploadDetailView,
    UploadErrorsCsvView,
    UploadErrorsXlsxView,
    UploadOriginalView,
)

urlpatterns = [
    path("submissions/", SubmissionCreateView.as_view(), name="submissions"),
    path("submissions/batch/", SubmissionBatchView.as_view(), name="submissions-batch"),
    path("submissions/<uuid:submission_id>/", SubmissionDetailView.as_view(), name="submission-detail"),
    path("submissions/<uuid:submission_id>/versions/", SubmissionVersionsView.as_view(), name="submission-versions"),
    path("uploads/", UploadCreateView.as_view(), name="uploads"),
    path("uploads/<uuid:ingestion_id>/", UploadDetailView.as_view(), name="upload-detail"),
    path("uploads/<uuid:ingestion_id>/errors.csv", UploadErrorsCsvView.as_view(), name="upload-errors-csv"),
    path("uploads/<uuid:ingestion_id>/errors.xlsx", UploadErrorsXlsxView.as_view(), name="upload-errors-xlsx"),
    path("uploads/<uuid:ingestion_id>/original", UploadOriginalView.as_view(), name="upload-original"),
    path("uploads/<uuid:ingestion_id>/quality/", UploadQualityView.as_view(), name="upload-quality"),
    path("quality/trend/", QualityTrendView.as_view(), name="quality-trend"),
    path("quality/rules/expectations.json", ExpectationSuiteView.as_view(), name="quality-expectations"),
]

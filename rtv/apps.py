from django.apps import AppConfig


class RtvConfig(AppConfig):
    name = "rtv"
    verbose_name = "RTV platform"

    def ready(self) -> None:
        from . import metrics, storage

        storage.ensure_local_areas()
        metrics.register()

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
application = get_wsgi_application()

from rtv.warmup import warmed  # noqa: E402 - Django is set up by now

application = warmed(application)

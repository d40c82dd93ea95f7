# One image runs web, worker or beat by its command:
#   docker run IMAGE                                   -> gunicorn web server
#   docker run IMAGE celery -A rtv worker -l INFO      -> Celery worker
#   docker run IMAGE celery -A rtv beat -l INFO        -> celery-beat scheduler
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=rtv.settings.production \
    RTV_VAR_DIR=/app/var \
    PORT=8000

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 rtv

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY --chown=rtv:rtv . .
# collectstatic needs no secrets: it runs under the embedded settings.
RUN DJANGO_SETTINGS_MODULE=rtv.settings.local python manage.py collectstatic --no-input -v0 \
    && mkdir -p /app/var && chown -R rtv:rtv /app/var

USER rtv
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${PORT}/healthz" || exit 1
CMD ["sh", "-c", "gunicorn rtv.wsgi:application --bind 0.0.0.0:${PORT} --workers ${WEB_WORKERS:-2} --access-logfile -"]

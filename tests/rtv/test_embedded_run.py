"""The embedded defaults really run: SQLite, local files, and a real Celery worker on the filesystem
broker, with gunicorn serving the admin and the API.  No PostgreSQL, Redis or cloud involved."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    var = tmp_path_factory.mktemp("embedded")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    env.update(DJANGO_SETTINGS_MODULE="rtv.settings.local", RTV_VAR_DIR=str(var), DEBUG="false")

    def manage(*args: str) -> str:
        proc = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    manage("migrate", "--no-input", "-v0")
    manage("collectstatic", "--no-input", "-v0")
    users = manage("seed_demo_users")
    port = free_port()
    procs = [
        subprocess.Popen([str(BIN / "gunicorn"), "rtv.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
                         cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([str(BIN / "celery"), "-A", "rtv", "worker", "--pool=solo", "--loglevel=WARNING"],
                         cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield {"base": base, "manage": manage, "users": users, "var": var}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=20)


def test_the_admin_login_page_is_served(embedded) -> None:  # type: ignore[no-untyped-def]
    body = urllib.request.urlopen(f"{embedded['base']}/admin/login/", timeout=5).read().decode()
    assert "csrfmiddlewaretoken" in body and "Django" in body


def test_the_api_docs_page_script_is_served_by_the_platform_itself(embedded) -> None:  # type: ignore[no-untyped-def]
    """The Swagger UI works on a network without internet: its script comes from our static files."""
    path = "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"
    with urllib.request.urlopen(f"{embedded['base']}{path}", timeout=5) as resp:
        assert resp.status == 200 and b"SwaggerUIBundle" in resp.read()


def test_the_schema_is_served_to_a_demo_user_with_a_jwt(embedded) -> None:  # type: ignore[no-untyped-def]
    assert "demo_field_officer" in str(embedded["users"])
    req = urllib.request.Request(f"{embedded['base']}/api/v1/auth/token/", method="POST",
                                 data=json.dumps({"username": "demo_field_officer", "password": "rtv-demo-2026"}).encode(),
                                 headers={"Content-Type": "application/json"})
    token = json.loads(urllib.request.urlopen(req, timeout=5).read())["access"]
    req = urllib.request.Request(f"{embedded['base']}/api/v1/schema/", headers={"Authorization": f"Bearer {token}"})
    schema = json.loads(urllib.request.urlopen(req, timeout=5).read())
    assert len([f for f in schema["fields"] if f["source_position"] is not None]) == 75
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{embedded['base']}/api/v1/schema/", timeout=5)
    assert exc.value.code == 401


def test_a_real_worker_takes_tasks_from_the_filesystem_broker(embedded, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    manage = embedded["manage"]
    path = tmp_path / "demo.csv"
    manage("generate_survey", "--rows", "200", "--format", "csv", "--bad-rate", "0", "--seed", "4", "-o", str(path))  # type: ignore[operator]
    manage("shell", "-c", f"from ingestion.tasks import ingest_path_task; ingest_path_task.delay({str(path)!r})")  # type: ignore[operator]
    code = ("from ingestion.models import IngestionBatch as B; b = B.objects.filter(status='succeeded').first(); "
            "print(b.accepted if b else -1)")
    deadline = time.monotonic() + 60
    accepted = -1
    while time.monotonic() < deadline and accepted < 0:
        accepted = int(manage("shell", "-c", code).strip().splitlines()[-1])  # type: ignore[operator]
        time.sleep(0.5)
    assert accepted == 200


def _scrape(base: str) -> str:
    return urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()


def _healthz_answers(text: str) -> float:
    """Answers the server gave to GET /healthz, as /metrics counts them."""
    pattern = r'^django_http_responses_total_by_status_view_method_total\{([^}]*)\} ([0-9.e+]+)$'
    return sum(float(value) for labels, value in re.findall(pattern, text, re.M)
               if 'view="healthz"' in labels and 'status="200"' in labels)


def test_every_scrape_counts_the_requests_of_every_web_worker(embedded) -> None:  # type: ignore[no-untyped-def]
    """Two gunicorn workers: whichever answers the scrape, it reports both workers' requests (and
    the platform's own figures), so a counter never goes backwards between scrapes."""
    base = embedded["base"]
    before = _healthz_answers(_scrape(base))
    with ThreadPoolExecutor(8) as pool:  # concurrent, so that both workers answer some
        list(pool.map(lambda _: urllib.request.urlopen(f"{base}/healthz", timeout=5).read(), range(40)))
    scrapes = [_scrape(base) for _ in range(8)]
    assert [_healthz_answers(text) for text in scrapes] == [before + 40] * 8
    assert all("rtv_outbox_unsent" in text for text in scrapes)

"""gunicorn's settings for the web server (read from the working directory: the image, scripts/run.sh
and the API benchmarks all start gunicorn here).  Command-line flags override them.

Threads: each of the 2 workers serves 4 connections at once (``gthread``), with keep-alive, where a
sync worker serves one connection and closes it after each response.  The mobile app and staff
pages reuse their connections, and a request waiting on PostgreSQL no longer holds a whole worker.
Measured with ``bench/api.py`` (wrk, 8 connections), alternating runs on the same busy VM: single
submissions 189 and 272 req/s with threads against 122 and 125 without, p50 39 and 27 ms against
64 and 63 ms; the bare insert view gained as much (414 and 539 against 286 and 331 req/s).
"""

import os

workers = int(os.environ.get("WEB_WORKERS", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
keepalive = int(os.environ.get("WEB_KEEPALIVE_SECONDS", "5"))

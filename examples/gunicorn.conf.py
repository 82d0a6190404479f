"""gunicorn configuration for a service monitored by memdiag in every worker.

    memdiag run -- gunicorn -c examples/gunicorn.conf.py app:app

or, with ``memdiag.start()`` in the app itself, plain ``gunicorn -c examples/gunicorn.conf.py
app:app``. Each worker runs its own agent; ``memdiag ps`` shows the master and the
workers, ``memdiag profile --server <master pid>`` the whole server. See docs/workers.md.
"""

import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = os.environ.get("WORKER_CLASS", "gthread")  # sync, gthread, uvicorn.workers.UvicornWorker
threads = 4

# Recycling: a worker that served this many requests is replaced. Its replacement takes the
# same memdiag worker slot, so its history (history_db) continues.
max_requests = 5000
max_requests_jitter = 500

# One API token for every worker. Set it here (or in the environment, or the memdiag config
# file) when the API is reached from another host; unset, the first process writes a random
# one to a 0600 file in the runtime directory and every worker uses it.
# raw_env = ["MEMDIAG_API_TOKEN=change-me-to-a-long-random-string"]

# memdiag settings for every worker, as MEMDIAG_* variables.
os.environ.setdefault("MEMDIAG_MEMORY_THRESHOLD_MB", "800")
os.environ.setdefault("MEMDIAG_HISTORY_DB", "/var/tmp/memdiag/history.db")  # one file per worker slot


def post_fork(server, worker):
    """gunicorn hook: nothing to do for memdiag (it restarts itself in the worker after
    fork). Shown because applications often have one; memdiag needs no call here."""


def child_exit(server, worker):
    """gunicorn hook: with prometheus_client in multiprocess mode (PROMETHEUS_MULTIPROC_DIR
    set before gunicorn starts), drop a dead worker's metric files. memdiag mirrors each
    worker's memdiag_* values there, so /metrics shows every live worker (docs/telemetry.md)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

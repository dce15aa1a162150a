"""gunicorn settings for the web process (REST API + Socket.IO):

    gunicorn -c gunicorn.conf.py wsgi:app

* One worker per process: a Socket.IO session lives in the process that accepted
  it. Scale out with more processes/containers sharing ``SOCKETIO_MESSAGE_QUEUE``
  (and sticky sessions for long-polling clients), not with ``workers``.
* The worker class follows ``SOCKETIO_ASYNC_MODE``: ``threading`` (the default)
  uses ``gthread`` and websockets run on simple-websocket, one thread per open
  websocket, so ``GUNICORN_THREADS`` bounds concurrent connections + requests;
  ``gevent`` uses the gevent worker (greenlets; needs the gevent package).
* ``HOST``/``PORT`` choose the bind address (default ``127.0.0.1:8000``; the
  container sets ``HOST=0.0.0.0``). Access and error logs go to stdout/stderr.
"""

import os

_async_mode = os.environ.get("SOCKETIO_ASYNC_MODE", "threading")

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = 1
if _async_mode == "gevent":
    worker_class = "gevent"
    worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
else:
    worker_class = "gthread"
    threads = int(os.environ.get("GUNICORN_THREADS", "100"))

# Long-lived websockets are fine: gthread/gevent workers heartbeat independently of
# requests. `timeout` only kills a worker whose main loop is stuck.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5

accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'

# Behind a reverse proxy, trust its X-Forwarded-* headers only from these addresses.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = "tasktracker-web"

# gunicorn's control socket (gunicornc) defaults to one path per user, which several
# servers on one host would fight over: off unless GUNICORN_CONTROL_SOCKET names a path.
_control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "")
if _control_socket:
    control_socket = _control_socket
else:
    control_socket_disable = True


def post_worker_init(worker):
    """Embedded mode: start the in-process reminder scheduler when the server boots,
    so reminders fire even before the first request (no-op in Celery mode, where
    the beat does the scans, and when ``SCHEDULER_ENABLED`` is off)."""
    from flask import Flask

    from tasktracker.jobs.setup import start_scheduler

    if isinstance(worker.wsgi, Flask):
        start_scheduler(worker.wsgi)

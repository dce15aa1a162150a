"""gunicorn settings for the processes that serve Socket.IO: the embedded default
(``make run``, ``TASKTRACKER_ROLE=all``: REST API and Socket.IO on one address) and the
production real-time gateways (``TASKTRACKER_ROLE=gateway``). Production's REST API
processes run on granian instead (README, "Production").

    gunicorn -c gunicorn.conf.py wsgi:app

* ``GUNICORN_WORKERS`` worker processes (default 1). A Socket.IO session lives in
  the process that accepted it and gunicorn hands connections to its workers
  without stickiness, so several workers need (checked when the server starts,
  see :func:`nworkers_changed`): ``SOCKETIO_TRANSPORTS=websocket`` (one TCP
  connection per session; Engine.IO long-polling makes several requests per
  session, which would land on different workers), ``SOCKETIO_MESSAGE_QUEUE``
  (events reach the connections of every worker) and no in-process scheduler
  (``CELERY_BROKER_URL`` set, or ``SCHEDULER_ENABLED=false``: it would run in every
  worker). ``REDIS_URL`` keeps presence right across workers. Long-polling clients:
  more single-worker processes behind a proxy with sticky sessions instead.
* The worker class follows ``SOCKETIO_ASYNC_MODE``: ``gevent`` (the default) uses the
  gevent worker, a greenlet per connection, up to ``GUNICORN_WORKER_CONNECTIONS``
  (default 10000) open connections, so idle or slow connections never take what a
  REST request needs; ``threading`` uses ``gthread`` and websockets run on
  simple-websocket, one thread per open websocket, so ``GUNICORN_THREADS`` bounds
  concurrent connections + requests per worker.
* ``HOST``/``PORT`` choose the bind address (default ``127.0.0.1:8000``; the
  container sets ``HOST=0.0.0.0``). Access and error logs go to stdout/stderr.
* The app's settings are read with ``tasktracker/config.py`` itself (the ``.env``
  file included), loaded on its own: the master imports neither Flask nor the app
  (the gevent worker monkey-patches only after the fork).
"""

import importlib.util
import os
from pathlib import Path


def _load_app_settings():
    """``tasktracker/config.py`` as a standalone module (not ``tasktracker.config``,
    whose package would import Flask and the extensions into the master)."""
    path = Path(__file__).resolve().parent / "tasktracker" / "config.py"
    spec = importlib.util.spec_from_file_location("_tasktracker_settings", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive_int(name: str, default: str) -> int:
    """The environment setting ``name`` as an integer >= 1; ``ValueError`` otherwise."""
    value = os.environ.get(name, default)
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{name} must be an integer >= 1, not {value!r}")
    return number


_settings = _load_app_settings()  # also loads .env, as the app does
_app_config = (_settings.ProductionConfig if os.environ.get("TASKTRACKER_ENV") == "production"
               else _settings.Config)
_transports = _settings.socketio_transports(_app_config.SOCKETIO_TRANSPORTS)  # ValueError if bad
_async_mode = _app_config.SOCKETIO_ASYNC_MODE

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = _positive_int("GUNICORN_WORKERS", "1")
if _async_mode == "gevent":
    worker_class = "gevent"
    worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "10000"))
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


def _redacting_logger():
    """gunicorn's logger with calendar-feed tokens (the credential in the URL) redacted
    from the access log's request line and path."""
    from gunicorn.glogging import Logger

    from tasktracker.core.logging import redact_path

    class RedactingLogger(Logger):
        def atoms(self, resp, req, environ, request_time):
            atoms = super().atoms(resp, req, environ, request_time)
            for key in ("r", "U"):
                if isinstance(atoms.get(key), str):
                    atoms[key] = redact_path(atoms[key])
            return atoms

    return RedactingLogger


logger_class = _redacting_logger()

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


# Request limits gunicorn enforces before the app sees anything (README "Configuration"):
# a request line over 4094 bytes (414), more than 100 header fields or a header field
# over 8190 bytes (431). Their answers are given in the API's error shape (JSON), not
# gunicorn's HTML page: see _write_json_error.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

_GUNICORN_ERROR_CODES = {400: "bad_request", 403: "forbidden", 414: "uri_too_long",
                         417: "expectation_failed", 431: "header_fields_too_large",
                         500: "internal_error", 501: "not_implemented"}


def _write_json_error(sock, status_int, reason, mesg):
    """gunicorn's own error answers (malformed request line, 414, 431...) in the
    contract's error shape ``{"error": {"code", "message", "details"}}`` with
    ``Connection: close``; gunicorn's detail text (which may echo the request) is not
    sent. Replaces ``gunicorn.util.write_error``, the one function gunicorn's workers
    write these answers with."""
    import json

    from gunicorn import util

    body = json.dumps({"error": {"code": _GUNICORN_ERROR_CODES.get(status_int, "bad_request"),
                                 "message": f"{reason}.", "details": {}}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def on_starting(server):
    """gunicorn hook (master, before forking workers): JSON error answers in every worker."""
    from gunicorn import util

    util.write_error = _write_json_error


def multiworker_problems(count: int) -> list[str]:
    """Why ``count`` workers in one server would misbehave with these settings: one
    sentence per problem naming the setting to change; ``[]`` when ``count`` is 1
    or the settings allow it."""
    if count <= 1:
        return []
    problems = []
    if "polling" in _transports:
        problems.append("set SOCKETIO_TRANSPORTS=websocket (Engine.IO long-polling sends "
                        "several requests per session and gunicorn spreads them over its "
                        "workers, which know only their own sessions)")
    if not _app_config.SOCKETIO_MESSAGE_QUEUE:
        problems.append("set SOCKETIO_MESSAGE_QUEUE (amqp://... or redis://..., as for several "
                        "processes) so that events reach the connections of every worker")
    if not _app_config.CELERY_BROKER_URL and _app_config.SCHEDULER_ENABLED:
        problems.append("set CELERY_BROKER_URL (the Celery beat runs the scans) or "
                        "SCHEDULER_ENABLED=false: the in-process scheduler would run in every worker")
    return problems


def nworkers_changed(server, new_value, old_value):
    """gunicorn hook, called when the worker count is set: at start-up (``old_value``
    None: ``GUNICORN_WORKERS``, or ``-w``/``--workers`` which override it), on a
    config reload and on ``SIGTTIN``. More than one worker with settings that do not
    allow it (:func:`multiworker_problems`): at start-up raises ``RuntimeError``
    (gunicorn prints ``Error: <message>`` and exits with status 1, before binding);
    later, logs the message and goes back to one worker (the settings that refuse
    more than one never allowed more before)."""
    problems = multiworker_problems(new_value)
    if not problems:
        if new_value > 1 and not _app_config.REDIS_URL:
            server.log.warning("%s workers without REDIS_URL: presence is tracked per worker",
                               new_value)
        if (new_value > 1 and _app_config.RATELIMIT_ENABLED
                and _app_config.RATELIMIT_STORAGE_URI.startswith("memory://")):
            server.log.warning("%s workers with RATELIMIT_STORAGE_URI=memory://: each worker "
                               "counts its own login attempts", new_value)
        return
    message = (f"refusing to run {new_value} gunicorn workers (GUNICORN_WORKERS or -w): "
               + "; ".join(problems)
               + ". Or keep GUNICORN_WORKERS=1 and run more processes (README, "
               "\"Several workers per host\").")
    if old_value is None:
        raise RuntimeError(message)
    server.log.error(message)
    server.num_workers = 1  # calls this hook again, with a count always allowed


def post_worker_init(worker):
    """Embedded mode: start the in-process reminder scheduler when the server boots,
    so reminders fire even before the first request (no-op in Celery mode, where
    the beat does the scans, and when ``SCHEDULER_ENABLED`` is off). It runs once
    per worker, so :func:`nworkers_changed` never lets a server with the scheduler
    on have more than one worker. Logs ``Worker ready (pid: N)`` once the worker
    serves."""
    from flask import Flask

    from tasktracker.jobs.setup import start_scheduler

    if isinstance(worker.wsgi, Flask):
        start_scheduler(worker.wsgi)
    # after "Booting worker": the app is loaded and this worker accepts from now on
    worker.log.info("Worker ready (pid: %s)", worker.pid)

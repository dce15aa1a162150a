"""Embedded mode: jobs on an in-process daemon thread, the beat's scans on another.

One :class:`InProcessRunner` per app (``app.extensions["tasktracker.jobs"]``, made
by :func:`init_runner`).
Threads start lazily (the worker on the first job, the scheduler at server
boot or the app's first request, see :func:`tasktracker.jobs.setup.start_scheduler`) and
never at import time; after a
``fork`` they are restarted on first use in the child. Jobs lost when the
process dies are not lost work: their events stay undispatched and the next
scan (outbox) fans them out.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Callable

from flask import Flask

log = logging.getLogger(__name__)

EXTENSION_KEY = "tasktracker.jobs"


class InProcessRunner:
    """A single worker thread fed by a queue, plus an optional scheduler thread that
    runs ``scan(app)`` periodically (given by :func:`init_runner`: this module
    imports nothing of the jobs it runs)."""

    def __init__(self, app: Flask, scan: Callable[[Flask], object]):
        self.app = app
        self.scan = scan
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._scheduler: threading.Thread | None = None
        self._stop = threading.Event()

    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # threads do not survive fork(): start afresh
            self._reset()

    # ------------------------------------------------------------------ worker

    def submit(self, fn: Callable, *args) -> None:
        """Queue ``fn(*args)`` for the worker thread (which starts if needed).
        ``fn`` pushes its own app context if it needs one."""
        with self._lock:
            self._check_fork()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="tasktracker-jobs", daemon=True)
                self._worker.start()
        self._queue.put((fn, args))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                fn, args = item
                fn(*args)
            except Exception:  # noqa: BLE001 - the worker thread must survive any job
                log.exception("jobs: in-process job failed")
            finally:
                self._queue.task_done()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every queued job has run; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # ------------------------------------------------------------------ scheduler

    @property
    def scheduler_running(self) -> bool:
        """True if this process's scheduler thread is alive (lock-free check)."""
        thread = self._scheduler
        return thread is not None and self._pid == os.getpid() and thread.is_alive()

    def start_scheduler(self, interval: float, first_delay: float | None = None) -> None:
        """Run the runner's scan (:func:`tasktracker.jobs.scans.run_all_scans`) every
        ``interval`` seconds on a daemon thread (first after ``first_delay``, default
        ``min(interval, 5)``)."""
        with self._lock:
            self._check_fork()
            if self._scheduler is not None and self._scheduler.is_alive():
                return
            self._stop.clear()
            delay = min(interval, 5.0) if first_delay is None else first_delay
            self._scheduler = threading.Thread(target=self._schedule, args=(interval, delay),
                                               name="tasktracker-scheduler", daemon=True)
            self._scheduler.start()

    def _schedule(self, interval: float, delay: float) -> None:
        while not self._stop.wait(delay):
            started = time.monotonic()
            try:
                self.scan(self.app)
            except Exception:  # noqa: BLE001 - e.g. tables not created yet; try again later
                log.exception("jobs: scheduled scans failed")
            delay = max(0.0, interval - (time.monotonic() - started))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both threads (tests; a daemon thread otherwise dies with the process)."""
        self._stop.set()
        scheduler, worker = self._scheduler, self._worker
        if scheduler is not None:
            scheduler.join(timeout)
        if worker is not None and worker.is_alive():
            self._queue.put(None)
            worker.join(timeout)
        self._scheduler = self._worker = None


def init_runner(app: Flask, scan: Callable[[Flask], object]) -> InProcessRunner:
    """Give ``app`` its runner, whose scheduler runs ``scan(app)`` (``create_app`` does
    it, through :func:`tasktracker.jobs.setup.init_jobs`). No thread starts here."""
    runner = app.extensions[EXTENSION_KEY] = InProcessRunner(app, scan)
    return runner


def get_runner(app: Flask) -> InProcessRunner:
    """The app's runner (made by :func:`init_runner`)."""
    return app.extensions[EXTENSION_KEY]

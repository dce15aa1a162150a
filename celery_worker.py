"""Celery entry point (api-contract.md, "Background work").

    celery -A celery_worker.celery worker --loglevel=INFO
    celery -A celery_worker.celery beat --loglevel=INFO     # exactly one

Settings come from the environment like the web app's (``CELERY_BROKER_URL``,
``DATABASE_URL``, ``CELERY_TASK_QUEUE``, ``SCAN_INTERVAL_SECONDS``...).
"""

from tasktracker import create_app

app = create_app()
celery = app.extensions["celery"]

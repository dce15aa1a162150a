# One image for every TaskTracker process; the command (and TASKTRACKER_ROLE) choose
# the role, exactly as in the README's production section:
#   api:     granian --interface wsgi --no-ws --workers 2 --blocking-threads 8 wsgi:app
#            (default CMD, TASKTRACKER_ROLE=api: the REST API, no Socket.IO endpoint)
#   gateway: gunicorn -c gunicorn.conf.py wsgi:app            (TASKTRACKER_ROLE=gateway)
#   worker:  celery -A celery_worker.celery worker -n worker1@%h --loglevel=info
#   beat:    celery -A celery_worker.celery beat --loglevel=info --schedule /tmp/celerybeat-schedule
#   migrate: flask db upgrade
# See docker-compose.yml for a complete deployment.

# --- build: dependencies into a virtualenv ---------------------------------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt && /opt/venv/bin/pip check

# --- runtime ------------------------------------------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLASK_APP=wsgi.py \
    TASKTRACKER_ENV=production \
    TASKTRACKER_ROLE=api \
    HOST=0.0.0.0 \
    PORT=8000 \
    GRANIAN_HOST=0.0.0.0 \
    GRANIAN_PORT=8000 \
    UPLOAD_DIR=/data/uploads
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app \
    && mkdir -p /data/uploads && chown -R app:app /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY . /app
USER 10001:10001
VOLUME ["/data/uploads"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('GRANIAN_PORT' if os.environ.get('TASKTRACKER_ROLE') == 'api' else 'PORT', '8000'); urllib.request.urlopen('http://127.0.0.1:%s/health' % port, timeout=4)"]
CMD ["granian", "--interface", "wsgi", "--no-ws", "--workers", "2", "--blocking-threads", "8", "wsgi:app"]

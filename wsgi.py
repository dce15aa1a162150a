"""WSGI entry point: ``gunicorn wsgi:app`` (production) or ``python wsgi.py`` (embedded)."""

from tasktracker import create_app
from tasktracker.extensions import socketio

app = create_app()

if __name__ == "__main__":
    import os

    socketio.run(app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5000")),
                 allow_unsafe_werkzeug=True)

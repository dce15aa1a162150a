"""The stack's ceiling: a bare Flask app with one JSON route, served with the same
gunicorn settings as TaskTracker (``gunicorn -c gunicorn.conf.py bench.bare_app:app``).

``GET /bare`` answers ``{"status": "ok", "items": []}``; ``POST /bare`` parses the JSON
body and answers ``201`` with it. No database, no auth, no Socket.IO: what gunicorn +
Flask alone cost per request on this machine, measured in the same run as the API.
"""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/bare")
def bare_get():
    return jsonify(status="ok", items=[])


@app.post("/bare")
def bare_post():
    return jsonify(request.get_json(silent=True) or {}), 201


@app.get("/health")
def health():
    return jsonify(status="ok")

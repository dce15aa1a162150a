"""REST resources of tasks."""

from flask import Blueprint

from tasktracker.core.api import Api

bp = Blueprint("tasks", __name__, url_prefix="/api")
api = Api(bp)

"""REST resources of notifications."""

from flask import Blueprint

from tasktracker.core.api import Api

bp = Blueprint("notifications", __name__, url_prefix="/api")
api = Api(bp)

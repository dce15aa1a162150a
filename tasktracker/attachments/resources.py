"""REST resources of attachments."""

from flask import Blueprint

from tasktracker.core.api import Api

bp = Blueprint("attachments", __name__, url_prefix="/api")
api = Api(bp)

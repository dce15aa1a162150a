"""REST resources of comments."""

from flask import Blueprint

from tasktracker.core.api import Api

bp = Blueprint("comments", __name__, url_prefix="/api")
api = Api(bp)

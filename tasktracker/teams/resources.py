"""REST resources of teams."""

from flask import Blueprint

from tasktracker.core.api import Api

bp = Blueprint("teams", __name__, url_prefix="/api")
api = Api(bp)

"""Unbound Flask extensions; `create_app` binds them (cookiecutter-flask style)."""

from flask_cors import CORS
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData

from tasktracker.core.jwt_cache import CachingJWTManager

# Deterministic constraint names so Alembic migrations work on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))
jwt = CachingJWTManager()  # verifies each token string once per process
limiter = Limiter(key_func=get_remote_address, default_limits=[])
cors = CORS()
socketio = SocketIO()

"""Pieces shared by every domain package: types, errors, pagination, HTTP helpers."""

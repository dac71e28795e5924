"""Alembic migrations of circleback's tables (run with ``circleback db upgrade``)."""

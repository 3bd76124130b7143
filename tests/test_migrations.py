"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext


def test_migrations_match_the_models(provider):
    with provider.app.app_context():
        from idp.platform.database import db

        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": False})
            diff = [d for d in compare_metadata(ctx, db.metadata)
                    if not (isinstance(d, tuple) and d[0] in ("remove_table",) and d[1].name == "alembic_version")]
    assert diff == [], diff

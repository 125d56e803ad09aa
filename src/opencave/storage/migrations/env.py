"""Alembic environment: runs migrations on the connection handed over by ``upgrade_schema``."""

from alembic import context

from opencave.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    from opencave.storage.sql import create_store_engine

    connection = create_store_engine(context.config.get_main_option("sqlalchemy.url")).connect()

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

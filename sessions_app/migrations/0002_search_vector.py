"""PostgreSQL full-text search over messages: a stored tsvector column and its GIN index.

SQLite has neither, so there the migration does nothing and search falls back to LIKE.
"""

from django.db import migrations

FORWARD = """
ALTER TABLE sessions_app_chatmessage
    ADD COLUMN search_vector tsvector
    GENERATED ALWAYS AS (to_tsvector('english'::regconfig, coalesce(content, ''))) STORED;
CREATE INDEX message_search_vector_idx ON sessions_app_chatmessage USING gin (search_vector);
"""
BACKWARD = """
DROP INDEX IF EXISTS message_search_vector_idx;
ALTER TABLE sessions_app_chatmessage DROP COLUMN IF EXISTS search_vector;
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("sessions_app", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]

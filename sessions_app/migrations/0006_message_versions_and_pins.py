from django.db import migrations, models

# Each message follows the one before it in its chat; a reply follows the message it answers.
# UPDATE ... FROM runs on PostgreSQL and on SQLite 3.33+.
LINK_PREVIOUS = """
UPDATE sessions_app_chatmessage AS m SET parent_message_id = p.prev
FROM (
    SELECT id, LAG(message_id) OVER (PARTITION BY session_id ORDER BY created_at, id) AS prev
    FROM sessions_app_chatmessage
) AS p
WHERE m.id = p.id AND p.prev IS NOT NULL
"""
LINK_REPLIES = """
UPDATE sessions_app_chatmessage AS m SET parent_message_id = r.message_id
FROM sessions_app_chatmessage AS r
WHERE m.reply_to_id = r.id AND m.message_type = 'assistant'
"""


class Migration(migrations.Migration):
    dependencies = [
        ("chatbots", "0001_initial"),
        ("sessions_app", "0005_reply_pieces"),
    ]

    operations = [
        migrations.AddField(
            model_name="chatmessage",
            name="parent_message_id",
            field=models.UUIDField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="chatsession",
            name="pinned",
            field=models.BooleanField(default=False),
        ),
        migrations.AddIndex(
            model_name="chatmessage",
            index=models.Index(fields=["session", "parent_message_id"], name="message_parent_idx"),
        ),
        migrations.RunSQL(LINK_PREVIOUS, migrations.RunSQL.noop),
        migrations.RunSQL(LINK_REPLIES, migrations.RunSQL.noop),
    ]

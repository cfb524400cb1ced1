from django.core.management import call_command
from django.db import migrations


def create_cache_tables(apps, schema_editor):
    # The throttles' shared counts (settings.CACHES["throttle"]); an existing table is left as it is.
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(create_cache_tables, migrations.RunPython.noop, elidable=False)]

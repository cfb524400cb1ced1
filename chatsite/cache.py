"""Django's database cache with an exact increment, for counters that every app server shares."""

from django.core.cache.backends.db import DatabaseCache
from django.db import connections, router, transaction


class AtomicDatabaseCache(DatabaseCache):
    """DatabaseCache whose `incr` holds the row's lock from its read to its write.

    Django's incr reads, adds and writes, so two servers counting the same key at once can
    both write the same number: attempts made in parallel would go uncounted. Here the
    second waits for the first (PostgreSQL's row lock; SQLite allows one writer anyway).
    """

    def incr(self, key, delta=1, version=None):
        db = router.db_for_write(self.cache_model_class)
        connection = connections[db]
        with transaction.atomic(using=db):
            if connection.features.has_select_for_update:
                table = connection.ops.quote_name(self._table)
                with connection.cursor() as cursor:
                    cursor.execute(
                        # The table's name is the setting's, quoted; the key is a parameter.
                        f"SELECT cache_key FROM {table} WHERE cache_key = %s FOR UPDATE",  # noqa: S608
                        [self.make_and_validate_key(key, version=version)],
                    )
            return super().incr(key, delta, version)

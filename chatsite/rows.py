"""Hot reads written as SQL once per process: a model and the models of some of its foreign keys.

A queryset is compiled again at every call (its joins, columns and ordering), which costs more
than PostgreSQL takes to answer a lookup by key. `Joined` writes the SELECT of the same rows
once and makes the instances the ORM would (`select_related` included) from what PostgreSQL
returns. PostgreSQL only: its driver gives every column of these models the Python type the
ORM would (SQLite needs Django's converters, so callers keep the queryset there).
"""

from functools import cached_property

from django.db import connection
from django.db.models import Model


class Joined:
    """`SELECT` of `model` (as `m`) joined to the models of its non-null foreign keys `related` (as `r0`, `r1` ...)."""

    def __init__(self, model: type[Model], *related: str) -> None:
        self.model = model
        self.related = [(name, model._meta.get_field(name)) for name in related]

    @cached_property
    def select(self) -> str:
        """The statement up to its WHERE clause."""
        quote = connection.ops.quote_name
        columns = [f"m.{quote(field.column)}" for field in self.model._meta.concrete_fields]
        joins = []
        for index, (_, field) in enumerate(self.related):
            target = field.related_model._meta
            columns += [f"r{index}.{quote(column.column)}" for column in target.concrete_fields]
            joins.append(
                f"JOIN {quote(target.db_table)} r{index} "
                f"ON r{index}.{quote(field.target_field.column)} = m.{quote(field.column)}"
            )
        return f"SELECT {', '.join(columns)} FROM {quote(self.model._meta.db_table)} m {' '.join(joins)}"  # noqa: S608

    @cached_property
    def _shapes(self) -> list[tuple[type[Model], list[str]]]:
        models = [self.model] + [field.related_model for _, field in self.related]
        return [(model, [field.attname for field in model._meta.concrete_fields]) for model in models]

    def first(self, where: str, params: list) -> Model | None:
        """The first row of `select` + `where` (conditions on `m`, `r0` ..., ORDER BY, LIMIT, FOR UPDATE), or None."""
        with connection.cursor() as cursor:
            cursor.execute(f"{self.select} {where}", params)
            row = cursor.fetchone()
        if row is None:
            return None
        instances, start = [], 0
        for model, names in self._shapes:
            instances.append(model.from_db(connection.alias, names, row[start : start + len(names)]))
            start += len(names)
        found = instances[0]
        for (name, _), instance in zip(self.related, instances[1:], strict=True):
            setattr(found, name, instance)
        return found

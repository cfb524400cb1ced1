"""Serializer fields that refuse what DRF would quietly coerce."""

from django.core.validators import ProhibitNullCharactersValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator


class StrictCharField(serializers.CharField):
    """A CharField that accepts only JSON strings (DRF would turn 123 into "123")."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A BooleanField that accepts only JSON true or false."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}]})
class IdField(serializers.Field):
    """An id given as a JSON integer or a non-empty string (a primary key or an upstream id)."""

    default_error_messages = {"invalid": "Must be an integer or a string id."}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # A string id is looked up as it is: keep out what the database cannot store or encode.
        self.validators.append(ProhibitNullCharactersValidator())
        self.validators.append(ProhibitSurrogateCharactersValidator())

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, str)) or data == "":
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value

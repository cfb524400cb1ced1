from rest_framework import serializers

from accounts.models import User
from chatsite.fields import StrictCharField


class UserSerializer(serializers.ModelSerializer):
    role = serializers.CharField(read_only=True, help_text="admin (staff) or user.")

    class Meta:
        model = User
        fields = ["id", "phone_number", "name", "is_verified", "date_joined", "email", "role"]


class AdminUserSerializer(UserSerializer):
    class Meta(UserSerializer.Meta):
        fields = [*UserSerializer.Meta.fields, "is_active", "last_login"]


class RegisterInput(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = StrictCharField(max_length=128, trim_whitespace=False)
    name = StrictCharField(max_length=150, required=False, allow_blank=True, default="")
    phone_number = StrictCharField(max_length=32, required=False, allow_blank=True, allow_null=True, default=None)

    def to_internal_value(self, data):
        if isinstance(data, dict) and "email" in data and not isinstance(data["email"], str):
            raise serializers.ValidationError({"email": ["Must be a string."]}, code="invalid")
        return super().to_internal_value(data)


class LoginInput(serializers.Serializer):
    email = StrictCharField(max_length=254, required=False)
    phone_number = StrictCharField(max_length=32, required=False)
    password = StrictCharField(max_length=128, trim_whitespace=False)

    def validate(self, attrs):
        if not attrs.get("email") and not attrs.get("phone_number"):
            raise serializers.ValidationError("Give an email or a phone_number.", code="required")
        return attrs


class VerifyInput(serializers.Serializer):
    token = StrictCharField(max_length=500)


class RoleInput(serializers.Serializer):
    # The stock message repeats the input, and a lone surrogate in it cannot be rendered as UTF-8.
    role = serializers.ChoiceField(
        choices=["admin", "user"], error_messages={"invalid_choice": "Must be admin or user."}
    )

"""Password rules beyond Django's."""

from django.core.exceptions import ValidationError

from chatsite.text import visible_count


class VisiblePasswordValidator:
    """At least `min_visible` characters a person can see: twelve spaces, or zero-width spaces, are no password."""

    def __init__(self, min_visible: int = 8) -> None:
        self.min_visible = min_visible

    def validate(self, password: str, user=None) -> None:
        if visible_count(password) < self.min_visible:
            raise ValidationError(
                f"The password needs at least {self.min_visible} characters that are not spaces or invisible.",
                code="password_not_visible",
            )

    def get_help_text(self) -> str:
        return f"Your password must contain at least {self.min_visible} characters that are not spaces or invisible."

from django.contrib.auth.backends import ModelBackend

from accounts.models import User, normalize_phone


class EmailOrPhoneBackend(ModelBackend):
    """Log in with an email address or an E.164 phone number."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        identifier = (username or kwargs.get("email") or kwargs.get("phone_number") or "").strip()
        if not identifier or password is None:
            return None
        if "@" in identifier:
            user = User.objects.filter(email__iexact=identifier).first()
        else:
            user = User.objects.filter(phone_number=normalize_phone(identifier)).first()
        if user is None:
            # Spend the time a real check would, so timing does not reveal who has an account.
            User().set_password(password)
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None

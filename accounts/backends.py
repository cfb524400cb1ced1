from django.contrib.auth.backends import ModelBackend
from django.db import connection

from accounts.models import User, normalize_phone
from accounts.throttle import login_begin, login_end
from chatsite.rows import Joined

_USER = Joined(User)


class EmailOrPhoneBackend(ModelBackend):
    """Log in with an email address or an E.164 phone number.

    Every sign-in (the API, the page, the admin) comes here, so the throttle lives here: past
    the limit for the account typed or the client address it raises TooManyAttempts, before
    the password is looked at.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        identifier = (username or kwargs.get("email") or kwargs.get("phone_number") or "").strip()
        if not identifier or password is None:
            return None
        account = identifier.lower() if "@" in identifier else (normalize_phone(identifier) or identifier)
        login_begin(request, account)
        user = self._check(identifier, password)
        login_end(request, account, succeeded=user is not None)
        return user

    def _check(self, identifier: str, password: str):
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

    def get_user(self, user_id):
        """The signed-in user of a request (every request with a session asks): one statement written once."""
        if connection.vendor != "postgresql":
            return super().get_user(user_id)
        user = _USER.first("WHERE m.id = %s", [user_id])
        return user if user is not None and self.user_can_authenticate(user) else None

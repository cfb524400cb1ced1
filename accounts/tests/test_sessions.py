"""Who a request's session signs in: the session store (chatsite.sessions) and the backend's get_user."""

from datetime import timedelta

from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.backends import EmailOrPhoneBackend
from chatsite.sessions import SessionStore

ME = "/api/users/"


def test_a_signed_in_request_reads_its_session_and_its_user_in_two_statements(api_client, user):
    with CaptureQueriesContext(connection) as queries:
        response = api_client.get(ME)
    assert response.status_code == 200 and response.json()["email"] == user.email
    reads = [query["sql"] for query in queries.captured_queries]
    assert "django_session" in reads[0] and "accounts_user" in reads[1]


def test_an_expired_session_signs_nobody_in(api_client):
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
    assert api_client.get(ME).status_code in (401, 403)


def test_a_missing_session_key_loads_nothing_and_is_forgotten(db):
    store = SessionStore(session_key="x" * 32)
    assert store.load() == {}
    assert store.session_key is None


def test_a_deactivated_user_is_signed_out_and_an_unknown_id_is_nobody(api_client, user):
    backend = EmailOrPhoneBackend()
    assert backend.get_user(user.pk) == user
    assert backend.get_user(user.pk + 1000) is None
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert backend.get_user(user.pk) is None
    assert api_client.get(ME).status_code in (401, 403)

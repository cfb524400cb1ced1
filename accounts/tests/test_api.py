import re

from django.core import mail
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tests.factories import PASSWORD, UserFactory
from billing.models import UserSubscription
from chatsite.tests.shapes import MESSAGE_KEYS, USER_KEYS, assert_session_shape
from sessions_app.tests.factories import ChatMessageFactory, ChatSessionFactory


def csrf_client() -> APIClient:
    client = APIClient(enforce_csrf_checks=True)
    token = client.get("/api/auth/csrf/").json()["csrfToken"]
    client.credentials(HTTP_X_CSRFTOKEN=token)
    return client


def test_register_creates_user_on_default_tier_and_logs_in(db, default_tier, django_capture_on_commit_callbacks):
    client = csrf_client()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/api/auth/register/",
            {"email": "Ada@Example.com", "password": PASSWORD, "name": "Ada", "phone_number": "+44 20 7946 0958"},
            format="json",
        )

    assert response.status_code == 201
    body = response.json()
    assert set(body) == USER_KEYS
    assert body["email"] == "ada@example.com"
    assert body["phone_number"] == "+442079460958"
    assert body["is_verified"] is False
    assert body["role"] == "user"
    user = User.objects.get(email="ada@example.com")
    assert UserSubscription.objects.get(user=user).subscription_type == default_tier
    assert client.get("/api/users/").json()["id"] == user.pk
    assert len(mail.outbox) == 1 and "verify" in mail.outbox[0].body


def test_verification_link_token_verifies_the_account(db, default_tier, django_capture_on_commit_callbacks):
    client = csrf_client()
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/api/auth/register/", {"email": "v@example.com", "password": PASSWORD}, format="json")
    token = re.search(r"/accounts/verify/([^/\s]+)/", mail.outbox[0].body).group(1)
    # Logging in rotated the CSRF token.
    client.credentials(HTTP_X_CSRFTOKEN=client.get("/api/auth/csrf/").json()["csrfToken"])

    response = client.post("/api/auth/verify/", {"token": token}, format="json")

    assert response.status_code == 200
    assert response.json()["is_verified"] is True
    assert User.objects.get(email="v@example.com").is_verified


def test_tampered_verification_token_is_refused(db):
    response = csrf_client().post("/api/auth/verify/", {"token": "not-a-token"}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_token"


def test_login_with_email(user):
    client = csrf_client()

    response = client.post("/api/auth/login/", {"email": "OWNER@example.com", "password": PASSWORD}, format="json")

    assert response.status_code == 200
    assert response.json()["email"] == "owner@example.com"
    assert client.get("/api/users/").status_code == 200


def test_login_with_phone_number(default_tier):
    UserFactory(email="phone@example.com", phone_number="+14155550123")
    client = csrf_client()

    response = client.post(
        "/api/auth/login/", {"phone_number": "+1 (415) 555-0123", "password": PASSWORD}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["email"] == "phone@example.com"


def test_login_with_wrong_password_is_refused(user):
    response = csrf_client().post("/api/auth/login/", {"email": user.email, "password": "nope"}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_credentials"


def test_logout_ends_the_session(api_client):
    assert api_client.post("/api/auth/logout/").json() == {"success": True}

    assert api_client.get("/api/users/").status_code == 401


def test_current_user_in_seed_shape(api_client, user):
    response = api_client.get("/api/users/")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == USER_KEYS
    assert body["id"] == user.pk
    assert body["phone_number"] is None
    assert body["date_joined"].endswith("Z")


# Staff endpoints


def test_admin_lists_users_with_roles(staff_client, user, staff):
    response = staff_client.get("/api/admin/users/")

    assert response.status_code == 200
    roles = {u["email"]: u["role"] for u in response.json()}
    assert roles == {"owner@example.com": "user", "staff@example.com": "admin"}
    assert response["X-Total-Count"] == "2"


def test_a_superuser_changes_a_users_role(superuser_client, user):
    response = superuser_client.patch(f"/api/admin/users/{user.pk}/role/", {"role": "admin"}, format="json")

    assert response.status_code == 200
    assert response.json()["role"] == "admin"
    user.refresh_from_db()
    assert user.is_staff is True


def test_admin_lists_a_users_chats_and_reads_their_messages(staff_client, user):
    session = ChatSessionFactory(user=user)
    ChatMessageFactory.create_batch(3, session=session)

    chats = staff_client.get(f"/api/admin/users/{user.pk}/chats/")
    messages = staff_client.get(f"/api/admin/chats/{session.pk}/messages/")

    assert chats.status_code == 200
    assert [c["id"] for c in chats.json()] == [session.pk]
    assert_session_shape(chats.json()[0])
    assert messages.status_code == 200
    assert len(messages.json()["messages"]) == 3
    assert set(messages.json()["messages"][0]) == MESSAGE_KEYS


def test_admin_endpoints_for_missing_objects_are_404(staff_client):
    assert staff_client.get("/api/admin/users/999999/chats/").status_code == 404
    assert staff_client.get("/api/admin/chats/999999/messages/").status_code == 404
    assert staff_client.patch("/api/admin/users/999999/role/", {"role": "user"}, format="json").status_code == 404


def test_admin_user_list_costs_a_constant_number_of_queries(staff_client, django_assert_max_num_queries):
    UserFactory.create_batch(50)

    # Queries: the session, the staff user, the page, the count.
    with django_assert_max_num_queries(4):
        response = staff_client.get("/api/admin/users/")
    assert len(response.json()) == 51

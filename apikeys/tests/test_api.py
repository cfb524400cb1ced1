"""The personal API keys endpoints (/api/api-keys/), the key check of /v1/, and the admin."""

import json

import pytest
from django.test import override_settings

from apikeys.models import KEY_PREFIX, ApiKey, key_hash
from apikeys.services import api_key_authenticate
from apikeys.tests.factories import make_key
from billing.models import UsageEvent
from billing.tests.factories import UsageEventFactory
from chatbots.tests.factories import AIModelFactory

pytestmark = pytest.mark.django_db
XSS = "<script>alert(1)</script>"


def test_creating_a_key_shows_it_once_and_keeps_only_its_hash(api_client, user):
    response = api_client.post("/api/api-keys/", {"name": "laptop"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert set(body) >= {"id", "name", "prefix", "key", "created_at", "last_used_at"}
    assert body["key"].startswith(KEY_PREFIX) and len(body["key"]) > 40
    assert body["key"].startswith(body["prefix"]) and body["prefix"] != body["key"]
    assert (body["name"], body["last_used_at"]) == ("laptop", None)
    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.user == user
    assert stored.key_hash == key_hash(body["key"]) and body["key"] not in stored.key_hash
    # Never again: not in the list, not in one key's answer.
    listed = api_client.get("/api/api-keys/").json()
    fields = {"id", "name", "prefix", "store_chats", "created_at", "last_used_at", "usage"}
    assert [set(item) for item in listed] == [fields]
    assert "key" not in api_client.get(f"/api/api-keys/{body['id']}/").json()
    assert body["key"] not in api_client.get("/api/api-keys/").content.decode()


def test_a_key_authenticates_only_while_it_is_not_revoked(user):
    api_key, full = make_key(user)

    assert api_key_authenticate(key=full) == api_key
    assert api_key_authenticate(key=full + "x") is None
    assert api_key_authenticate(key=full.removeprefix(KEY_PREFIX)) is None
    api_key.revoked_at = api_key.created_at
    api_key.save(update_fields=["revoked_at"])
    assert api_key_authenticate(key=full) is None


def test_revoking_a_key_takes_it_off_the_list_and_keeps_its_usage(api_client, user):
    api_key, full = make_key(user)
    UsageEventFactory(user=user, api_key=api_key)

    response = api_client.delete(f"/api/api-keys/{api_key.pk}/")

    assert response.status_code == 204
    assert api_client.get("/api/api-keys/").json() == []
    assert api_key_authenticate(key=full) is None
    assert UsageEvent.objects.get().api_key_id == api_key.pk  # the ledger still names it
    assert api_client.delete(f"/api/api-keys/{api_key.pk}/").status_code == 404


def test_another_users_key_is_404(api_client, other_user, staff_client):
    theirs, _ = make_key(other_user)

    for client in (api_client, staff_client):
        assert client.get(f"/api/api-keys/{theirs.pk}/").status_code == 404
        assert client.delete(f"/api/api-keys/{theirs.pk}/").status_code == 404
        assert client.patch(f"/api/api-keys/{theirs.pk}/", {"name": "mine"}, format="json").status_code == 404
        assert client.get("/api/api-keys/").json() == []
    theirs.refresh_from_db()
    assert (theirs.revoked_at, theirs.name) == (None, "laptop")


def test_anonymous_people_get_401(anon_client):
    assert anon_client.get("/api/api-keys/").status_code in (401, 403)
    assert anon_client.post("/api/api-keys/", {"name": "x"}, format="json").status_code in (401, 403)


@override_settings(MAX_API_KEYS_PER_USER=2)
def test_a_user_holds_at_most_max_api_keys_per_user(api_client, user):
    assert api_client.post("/api/api-keys/", {"name": "one"}, format="json").status_code == 201
    assert api_client.post("/api/api-keys/", {"name": "two"}, format="json").status_code == 201

    refused = api_client.post("/api/api-keys/", {"name": "three"}, format="json")

    assert refused.status_code == 400
    assert refused.json()["code"] == "too_many_keys"
    # A revoked key frees its place.
    api_client.delete(f"/api/api-keys/{ApiKey.objects.first().pk}/")
    assert api_client.post("/api/api-keys/", {"name": "three"}, format="json").status_code == 201


def test_a_name_is_required_and_kept_as_text(api_client):
    assert api_client.post("/api/api-keys/", {"name": "  "}, format="json").json()["code"] == "blank"
    assert api_client.post("/api/api-keys/", {}, format="json").status_code == 400
    assert api_client.post("/api/api-keys/", {"name": "x" * 101}, format="json").status_code == 400
    created = api_client.post("/api/api-keys/", {"name": XSS}, format="json").json()
    assert created["name"] == XSS


def test_the_list_shows_each_keys_usage_in_one_query(api_client, user, django_assert_max_num_queries):
    model = AIModelFactory()
    keys = [make_key(user, name=f"key {n}")[0] for n in range(5)]
    for n, api_key in enumerate(keys):
        UsageEventFactory.create_batch(n, user=user, ai_model=model, api_key=api_key, billed_tokens=10)
    UsageEventFactory(user=user, ai_model=model, api_key=keys[1], state=UsageEvent.State.RELEASED)
    UsageEventFactory(user=user, ai_model=model)  # from the pages: no key's

    # Queries: the session and its user, then the keys left-joined to their ledger rows and summed.
    with django_assert_max_num_queries(3):
        listed = api_client.get("/api/api-keys/").json()

    usage = {item["name"]: item["usage"] for item in listed}
    assert usage["key 4"] == {"messages": 4, "tokens": 40, "cost_usd": "0.00000000"}
    assert usage["key 1"]["messages"] == 1  # the released call counts nothing
    assert usage["key 0"]["messages"] == 0


def test_a_key_can_opt_in_to_keeping_its_calls_as_chats(api_client, user):
    api_key, _ = make_key(user)

    response = api_client.patch(f"/api/api-keys/{api_key.pk}/", {"store_chats": True}, format="json")

    assert response.status_code == 200 and response.json()["store_chats"] is True
    api_key.refresh_from_db()
    assert api_key.store_chats is True


# /v1/ in process: the key check and the shape of errors.


def test_v1_needs_no_session_and_no_csrf_only_the_key(anon_client, user, client):
    AIModelFactory(model_id="vendor/listed")
    _, full = make_key(user)

    response = anon_client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {full}")

    assert response.status_code == 200
    assert response.json()["object"] == "list"
    assert [m["id"] for m in response.json()["data"]] == ["vendor/listed"]
    # A signed-in session without a key is not enough.
    client.force_login(user)
    assert client.get("/v1/models").status_code == 401


def test_v1_errors_come_in_openais_shape(anon_client, user):
    _, full = make_key(user)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {full}"}

    missing = anon_client.get("/v1/models")
    unknown = anon_client.get("/v1/no-such-thing", **auth)
    bad_json = anon_client.post("/v1/chat/completions", "{not json", content_type="application/json", **auth)
    no_model = anon_client.post(
        "/v1/chat/completions", {"model": "x", "messages": [{"role": "user", "content": "Hi"}]},
        content_type="application/json", **auth,
    )  # fmt: skip

    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
    assert no_model.status_code == 404 and no_model.json()["error"]["code"] == "model_not_found"
    for response in (missing, unknown, bad_json, no_model):
        assert set(response.json()["error"]) >= {"message", "type", "code"}


# Admin.


def test_staff_list_and_revoke_keys_in_the_admin(admin_client, user, django_assert_max_num_queries):
    keys = [make_key(user, name=f"key {n}")[0] for n in range(3)]

    # Queries: session, user, count, count again, the page of keys joined to their users.
    with django_assert_max_num_queries(8):
        page = admin_client.get("/admin/apikeys/apikey/")
    assert page.status_code == 200
    assert keys[0].prefix in page.content.decode()
    assert "key_hash" not in page.content.decode()
    assert admin_client.get(f"/admin/apikeys/apikey/{keys[0].pk}/change/").status_code == 200

    response = admin_client.post(
        "/admin/apikeys/apikey/", {"action": "revoke", "_selected_action": [keys[0].pk, keys[1].pk]}
    )

    assert response.status_code == 302
    assert ApiKey.objects.filter(revoked_at__isnull=False).count() == 2
    assert admin_client.get("/admin/apikeys/apikey/add/").status_code == 403


def test_v1_models_costs_the_same_queries_however_many_models(anon_client, user, django_assert_max_num_queries):
    _, full = make_key(user)
    AIModelFactory.create_batch(12)

    # Queries: the key joined to its user, marking it used (at most once a minute), the models.
    with django_assert_max_num_queries(3):
        response = anon_client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {full}")

    assert len(response.json()["data"]) == 12


def test_the_keys_endpoints_are_in_the_api_docs(anon_client):
    schema = anon_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    assert {"get", "post"} <= set(schema["paths"]["/api/api-keys/"])
    assert {"get", "patch", "delete"} <= set(schema["paths"]["/api/api-keys/{id}/"])
    created = schema["components"]["schemas"]["ApiKeyCreated"]["properties"]
    assert {"id", "name", "prefix", "key", "created_at", "last_used_at"} <= set(created)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "vendor/listed", "messages": [{"role": "user", "content": "a\x00b"}], "store": True},
        {"model": "vendor/listed", "messages": [{"role": "user", "content": "\ud800"}]},
        {"model": "vendor/listed", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        {"model": "vendor/listed", "messages": [{"role": "user", "content": None}]},
        {"model": "vendor/listed", "messages": ["hi"]},
        {"model": "vendor/listed", "messages": [{"role": "user", "content": "Hi"}], "stop": ["a"] * 5},
        {"model": "vendor/listed", "messages": [{"role": "user", "content": "Hi"}], "stop": "\ud800"},
        {"model": "vendor/listed", "messages": [{"role": "user", "content": "Hi"}], "n": 2},
        {"model": "vendor/listed", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 0},
        {"model": "vendor/listed", "messages": [{"role": "user", "content": "Hi"}], "stream_options": "yes"},
        {"model": "vendor/listed", "messages": [{"role": "assistant", "content": "Only me"}]},
        {"model": ["vendor/listed"], "messages": [{"role": "user", "content": "Hi"}]},
        [],
    ],
)
def test_invalid_chat_completions_are_400_in_openais_shape_and_charge_nothing(anon_client, user, body):
    AIModelFactory(model_id="vendor/listed")
    _, full = make_key(user)

    response = anon_client.post(
        "/v1/chat/completions", json.dumps(body), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {full}",
    )  # fmt: skip

    assert response.status_code == 400, response.content
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert not UsageEvent.objects.exists()

import pytest

from accounts.models import User
from chatbots.tests.factories import AIModelFactory, ChatbotFactory
from chatsite.tests.shapes import AI_MODEL_KEYS, CHATBOT_KEYS
from sessions_app.tests.factories import ChatSessionFactory


def test_chatbot_list_shows_active_chatbots_in_seed_shape(api_client, chatbot):
    ChatbotFactory(name="Retired", is_active=False)
    chatbot.prompt_is_private = False
    chatbot.save(update_fields=["prompt_is_private"])

    response = api_client.get("/api/chatbots/")

    assert response.status_code == 200
    body = response.json()
    assert [c["name"] for c in body] == ["General Assistant"]
    assert set(body[0]) == CHATBOT_KEYS
    assert body[0] == {
        "id": chatbot.pk,
        "name": "General Assistant",
        "description": "A chatbot for tests",
        "image": None,
        "is_active": True,
        "system_prompt": "You are a helpful assistant.",
        "chatbot_type": "text",
        "prompt_is_private": False,
    }


def test_inactive_chatbot_detail_is_404(api_client):
    retired = ChatbotFactory(is_active=False)

    assert api_client.get(f"/api/chatbots/{retired.pk}/").status_code == 404


def test_chatbot_detail(api_client, chatbot):
    response = api_client.get(f"/api/chatbots/{chatbot.pk}/")

    assert response.status_code == 200
    assert response.json()["name"] == "General Assistant"


def test_ai_model_list_in_seed_shape_with_decimal_strings(api_client, ai_model):
    AIModelFactory(is_active=False)

    body = api_client.get("/api/ai-models/").json()

    assert len(body) == 1
    assert set(body[0]) == AI_MODEL_KEYS
    assert body[0]["model_id"] == "openai/gpt-4"
    assert body[0]["token_cost_multiplier"] == "1.00"
    assert body[0]["is_free"] is False


def test_ai_model_list_filters_by_model_type(api_client, ai_model):
    image = AIModelFactory(model_type="image", model_id="demo/image")

    body = api_client.get("/api/ai-models/?model_type=image").json()

    assert [m["id"] for m in body] == [image.pk]


def test_ai_model_detail(api_client, ai_model):
    response = api_client.get(f"/api/ai-models/{ai_model.pk}/")

    assert response.status_code == 200
    assert response.json()["model_id"] == "openai/gpt-4"


@pytest.mark.parametrize("path", ["/api/chatbots/", "/api/ai-models/"])
def test_catalogue_lists_cost_a_constant_number_of_queries(api_client, django_assert_max_num_queries, path):
    ChatbotFactory.create_batch(30)
    AIModelFactory.create_batch(30)

    # Queries: the session, the user, the list.
    with django_assert_max_num_queries(3):
        response = api_client.get(path)
    assert len(response.json()) == 30


def test_a_private_system_prompt_is_empty_for_users_and_shown_to_staff(api_client, staff_client, default_tier):
    secret = ChatbotFactory(name="Secret sauce", system_prompt="Our hidden instructions.")
    open_bot = ChatbotFactory(name="Open book", system_prompt="Be plain.", prompt_is_private=False)

    as_user = {bot["id"]: bot for bot in api_client.get("/api/chatbots/").json()}
    as_staff = {bot["id"]: bot for bot in staff_client.get("/api/chatbots/").json()}
    detail = api_client.get(f"/api/chatbots/{secret.pk}/").json()

    assert secret.prompt_is_private  # new chatbots start private
    assert as_user[secret.pk]["system_prompt"] == "" and detail["system_prompt"] == ""
    assert "system_prompt" in as_user[secret.pk]  # the seed's field stays in the shape
    assert as_user[open_bot.pk]["system_prompt"] == "Be plain."
    assert as_staff[secret.pk]["system_prompt"] == "Our hidden instructions."
    # Nor through a chat that uses it.
    chat = ChatSessionFactory(user=User.objects.get(email="owner@example.com"), chatbot=secret)
    assert api_client.get(f"/api/chat-sessions/{chat.pk}/").json()["chatbot"]["system_prompt"] == ""

import pytest

from chatbots.models import Chatbot

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows(chatbot, ai_model):
    return {"chatbot": chatbot, "aimodel": ai_model}


@pytest.mark.parametrize("model", ["chatbot", "aimodel"])
def test_chatbots_admin_changelist_add_and_change_pages_answer_200(admin_client, rows, model):
    assert admin_client.get(f"/admin/chatbots/{model}/").status_code == 200
    assert admin_client.get(f"/admin/chatbots/{model}/add/").status_code == 200
    assert admin_client.get(f"/admin/chatbots/{model}/{rows[model].pk}/change/").status_code == 200


def test_ai_model_change_page_has_a_pricing_group(admin_client, ai_model):
    response = admin_client.get(f"/admin/chatbots/aimodel/{ai_model.pk}/change/")

    fieldsets = {fieldset.name: [f for line in fieldset for f in line] for fieldset in response.context["adminform"]}
    assert "Pricing" in fieldsets
    pricing = [field.field.name for field in fieldsets["Pricing"]]
    assert pricing == ["token_cost_multiplier", "prompt_price_per_million", "completion_price_per_million"]


def test_chatbot_can_be_switched_off_from_the_changelist(admin_client, chatbot):
    response = admin_client.post(
        "/admin/chatbots/chatbot/",
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-MIN_NUM_FORMS": "0",
            "form-MAX_NUM_FORMS": "1000",
            "form-0-id": str(chatbot.pk),
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    assert Chatbot.objects.get(pk=chatbot.pk).is_active is False

from io import StringIO

import pytest
from django.core.management import call_command

from billing.models import SubscriptionType
from billing.tests.factories import SubscriptionTypeFactory
from chatbots.models import AIModel, Chatbot
from chatsite.demo import demo_seed

pytestmark = pytest.mark.django_db


def _seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_seed_demo_creates_tiers_chatbots_and_demo_models():
    output = _seed()

    assert "Demo data seeded" in output
    free = SubscriptionType.objects.get(sku="FREE")
    pro = SubscriptionType.objects.get(sku="PRO")
    assert (free.name, free.is_default, free.price, free.duration_days) == ("Free", True, 0, 30)
    assert free.hourly_max_messages > 0
    assert free.daily_image_generation_limit > 0
    assert (pro.name, pro.is_default, str(pro.price)) == ("Pro", False, "20.00")
    assert pro.daily_max_messages > free.daily_max_messages
    assert list(Chatbot.objects.values_list("name", "chatbot_type")) == [
        ("General Assistant", "text"),
        ("Image Studio", "image"),
    ]
    assert Chatbot.objects.get(name="General Assistant").system_prompt == "You are a helpful assistant."
    models = {m.model_id: m for m in AIModel.objects.all()}
    assert set(models) == {"demo/chat-free", "demo/chat-pro", "demo/image"}
    assert {m.provider for m in models.values()} == {"demo"}
    assert models["demo/chat-free"].is_free
    assert not models["demo/chat-pro"].is_free
    assert models["demo/chat-pro"].prompt_price_per_million > 0
    assert models["demo/image"].model_type == "image"


def test_seed_demo_is_idempotent():
    _seed()
    output = _seed()

    assert SubscriptionType.objects.count() == 2
    assert SubscriptionType.objects.filter(is_default=True).count() == 1
    assert Chatbot.objects.count() == 2
    assert AIModel.objects.count() == 3
    assert "tiers created: 0" in output
    assert "tiers kept: 2" in output


def test_seed_demo_reports_what_it_created_then_what_it_kept():
    first, second = demo_seed(), demo_seed()

    assert first == {
        "tiers_created": 2,
        "tiers_kept": 0,
        "chatbots_created": 2,
        "chatbots_kept": 0,
        "ai_models_created": 3,
        "ai_models_kept": 0,
    }
    assert second == {
        "tiers_created": 0,
        "tiers_kept": 2,
        "chatbots_created": 0,
        "chatbots_kept": 2,
        "ai_models_created": 0,
        "ai_models_kept": 3,
    }


def test_seed_demo_keeps_a_default_tier_staff_chose():
    chosen = SubscriptionTypeFactory(name="House", sku="HOUSE", is_default=True)

    _seed()
    _seed()

    assert list(SubscriptionType.objects.filter(is_default=True)) == [chosen]


def test_seed_demo_keeps_pro_as_the_default_when_staff_made_it_so():
    _seed()
    SubscriptionType.objects.filter(sku="FREE").update(is_default=False)
    SubscriptionType.objects.filter(sku="PRO").update(is_default=True)

    _seed()

    assert list(SubscriptionType.objects.filter(is_default=True).values_list("sku", flat=True)) == ["PRO"]


def test_seed_demo_never_overwrites_staff_edits():
    _seed()
    SubscriptionType.objects.filter(sku="FREE").update(hourly_max_messages=7)
    Chatbot.objects.filter(name="General Assistant").update(system_prompt="Be brief.")

    _seed()

    assert SubscriptionType.objects.get(sku="FREE").hourly_max_messages == 7
    assert Chatbot.objects.get(name="General Assistant").system_prompt == "Be brief."


def test_seed_demo_keeps_an_existing_free_tier(default_tier):
    _seed()

    assert SubscriptionType.objects.get(sku="FREE").pk == default_tier.pk
    assert SubscriptionType.objects.filter(is_default=True).count() == 1

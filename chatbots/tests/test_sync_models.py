"""sync_models: an OpenRouter-style catalogue from a file or from the upstream's GET /models."""

import json
import re
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from chatbots.models import AIModel
from chatbots.services import models_sync
from chatbots.tests.factories import AIModelFactory
from chatsite.testing.upstream import StubUpstream

pytestmark = pytest.mark.django_db

CATALOGUE = [
    {
        "id": "openai/gpt-4o-mini",
        "name": "OpenAI: GPT-4o-mini",
        "description": "Small and fast.",
        "context_length": 128000,
        "pricing": {"prompt": "0.00000015", "completion": "0.0000006", "request": "0", "image": "0"},
        "architecture": {"input_modalities": ["text", "image"], "output_modalities": ["text"]},
    },
    {
        "id": "meta-llama/llama-3.3-70b-instruct:free",
        "name": "Meta: Llama 3.3 70B Instruct (free)",
        "context_length": 65536,
        "pricing": {"prompt": "0.0000001", "completion": "0.0000001"},
        "architecture": {"output_modalities": ["text"]},
    },
    {
        "id": "vendor/zero-priced",
        "name": "Zero priced",
        "context_length": 4096,
        "pricing": {"prompt": "0", "completion": "0"},
    },
    {
        "id": "google/gemini-2.5-flash-image",
        "name": "Google: Gemini 2.5 Flash Image",
        "context_length": 32768,
        "pricing": {"prompt": "0.0000003", "completion": "0.0000025"},
        "architecture": {"input_modalities": ["image", "text"], "output_modalities": ["image", "text"]},
    },
    {
        "id": "vendor/old-style-image",
        "name": "Old style image",
        "pricing": {"prompt": "0.000001", "completion": "0.000002"},
        "architecture": {"modality": "text->image"},
    },
]


def sync(*args) -> str:
    out = StringIO()
    call_command("sync_models", *args, stdout=out)
    return out.getvalue()


def write(tmp_path, payload) -> str:
    path = tmp_path / "models.json"
    path.write_text(json.dumps(payload))
    return str(path)


def test_a_catalogue_file_creates_priced_inactive_models(tmp_path):
    output = sync("--file", write(tmp_path, {"data": CATALOGUE}))

    assert "created: 5" in output
    models = {m.model_id: m for m in AIModel.objects.all()}
    mini = models["openai/gpt-4o-mini"]
    assert (mini.name, mini.description, mini.context_length) == ("OpenAI: GPT-4o-mini", "Small and fast.", 128000)
    assert mini.prompt_price_per_million == Decimal("0.15")
    assert mini.completion_price_per_million == Decimal("0.6")
    assert (mini.provider, mini.model_type, mini.is_free, mini.is_active) == ("openai", "text", False, False)
    assert models["meta-llama/llama-3.3-70b-instruct:free"].is_free
    assert models["vendor/zero-priced"].is_free
    assert models["google/gemini-2.5-flash-image"].model_type == "image"
    assert models["google/gemini-2.5-flash-image"].completion_price_per_million == Decimal("2.5")
    assert models["vendor/old-style-image"].model_type == "image"
    assert not any(m.is_active for m in models.values())


def test_a_bare_list_file_works_too_and_activate_makes_new_models_active(tmp_path):
    sync("--file", write(tmp_path, CATALOGUE[:2]), "--activate")

    assert AIModel.objects.count() == 2
    assert all(m.is_active for m in AIModel.objects.all())


def test_the_catalogue_comes_from_the_upstreams_models_endpoint(upstream):
    upstream.set_models(CATALOGUE)

    output = sync()

    assert "created: 5" in output
    (request,) = upstream.requests
    assert (request["method"], request["path"]) == ("GET", "/v1/models")
    assert request["headers"]["Authorization"] == "Bearer test-key"
    assert AIModel.objects.get(model_id="openai/gpt-4o-mini").prompt_price_per_million == Decimal("0.15")
    # The models live at AI_BASE_URL, so none needs its own api_base.
    assert set(AIModel.objects.values_list("api_base", flat=True)) == {""}


def test_existing_models_are_updated_but_keep_their_activation_and_multiplier(upstream):
    AIModelFactory(
        model_id="openai/gpt-4o-mini",
        name="Mini (ours)",
        provider="demo",
        is_active=True,
        token_cost_multiplier=Decimal("2.50"),
        prompt_price_per_million=Decimal("9"),
    )
    AIModelFactory(model_id="vendor/zero-priced", is_active=False, token_cost_multiplier=Decimal("0.50"))
    upstream.set_models(CATALOGUE)

    counts = models_sync()

    assert counts == {"created": 3, "updated": 2, "unchanged": 0, "skipped": 0}
    mini = AIModel.objects.get(model_id="openai/gpt-4o-mini")
    assert (mini.is_active, mini.token_cost_multiplier) == (True, Decimal("2.50"))
    assert (mini.name, mini.provider, mini.prompt_price_per_million) == (
        "OpenAI: GPT-4o-mini",
        "openai",
        Decimal("0.15"),
    )
    zero = AIModel.objects.get(model_id="vendor/zero-priced")
    assert (zero.is_active, zero.token_cost_multiplier, zero.is_free) == (False, Decimal("0.50"), True)


def test_syncing_twice_changes_nothing_the_second_time():
    models_sync(catalogue=CATALOGUE)

    assert models_sync(catalogue=CATALOGUE) == {"created": 0, "updated": 0, "unchanged": 5, "skipped": 0}


def test_what_the_catalogue_does_not_say_is_kept():
    AIModelFactory(
        model_id="llama3.2",
        name="Llama 3.2 (local)",
        is_free=True,
        prompt_price_per_million=Decimal("1"),
        context_length=131072,
    )
    # An OpenAI-style /models item: no name, pricing or context length. OpenRouter's auto router prices at -1.
    catalogue = [
        {"id": "llama3.2", "object": "model", "owned_by": "library"},
        {"id": "openrouter/auto", "name": "Auto Router", "pricing": {"prompt": "-1", "completion": "-1"}},
    ]

    models_sync(catalogue=catalogue)

    local = AIModel.objects.get(model_id="llama3.2")
    assert (local.name, local.is_free, local.context_length) == ("Llama 3.2 (local)", True, 131072)
    assert local.prompt_price_per_million == Decimal("1")
    auto = AIModel.objects.get(model_id="openrouter/auto")
    assert (auto.is_free, auto.prompt_price_per_million) == (False, Decimal("0"))


def test_items_without_an_id_are_skipped():
    counts = models_sync(catalogue=[{"name": "no id"}, "not an object", {"id": ""}, CATALOGUE[0]])

    assert counts == {"created": 1, "updated": 0, "unchanged": 0, "skipped": 3}


def test_a_base_url_other_than_ai_base_url_becomes_the_models_api_base(upstream):
    with StubUpstream() as local:
        local.set_models([{"id": "qwen2.5:7b", "object": "model"}])

        output = sync("--base-url", local.base_url)

    assert "created: 1" in output
    assert AIModel.objects.get(model_id="qwen2.5:7b").api_base == local.base_url
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "Cannot read"),
        ("{not json", "is not valid JSON"),
        ('{"models": []}', 'neither {"data": [...]} nor a list'),
    ],
    ids=["missing", "not-json", "wrong-shape"],
)
def test_a_bad_file_is_a_clear_command_error(tmp_path, content, message):
    path = tmp_path / "models.json"
    if content is not None:
        path.write_text(content)

    with pytest.raises(CommandError, match=re.escape(message)):
        sync("--file", str(path))

    assert AIModel.objects.count() == 0


def test_an_upstream_failure_is_a_clear_command_error(upstream):
    for _ in range(3):
        upstream.enqueue_status(503)

    with pytest.raises(CommandError, match=r"Could not fetch the model catalogue: .*HTTP 503"):
        sync()


def test_an_unreachable_upstream_is_a_clear_command_error(refused_base_url, settings):
    settings.AI_RETRY_BACKOFF = 0

    with pytest.raises(CommandError, match="Could not fetch the model catalogue: Could not reach"):
        sync("--base-url", refused_base_url)

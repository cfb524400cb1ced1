from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.db.models import Q

from billing.models import UsageEvent
from billing.services import usage_reserve
from chatbots.models import AIModel, ContentType
from chatbots.providers import get_provider
from chatbots.providers.base import Usage, estimate_prompt_tokens
from chatbots.providers.openai import OpenAIProvider
from chatsite.errors import InvalidInput, UpstreamError

TEST_PROMPT = "Reply with one short sentence confirming you received this test message."


@dataclass(frozen=True)
class ModelTestResult:
    response: str
    event: UsageEvent


def model_test_usage(*, user, model_name: str) -> ModelTestResult:
    """Send one short prompt through a model and record its usage in the ledger."""
    model = (
        AIModel.objects.filter(is_active=True).filter(Q(model_id=model_name) | Q(name=model_name)).first()
        if "\x00" not in model_name
        else None
    )
    if model is None:
        raise InvalidInput("No active AI model has that model_id or name.", code="unknown_model")
    from sessions_app.lifecycle import Outcome, ReplyJob, reply_finish

    messages = [{"role": "user", "content": TEST_PROMPT}]
    event = usage_reserve(user=user, session=None, ai_model=model, prompt_tokens=estimate_prompt_tokens(messages))
    # A reply with no message: it ends, and is charged, like any other.
    job = ReplyJob(
        reply=None, event=event, session_pk=None, user_id=user.pk, model=model, messages=messages,
        prompt=TEST_PROMPT, is_image=False,
    )  # fmt: skip
    try:
        completion = async_to_sync(get_provider(model).complete)(model=model, messages=messages)
    except Exception as exc:
        error = exc if isinstance(exc, UpstreamError) else UpstreamError()
        reply_finish(job=job, outcome=Outcome(error=error))
        raise error from exc
    usage = Usage(completion.prompt_tokens, completion.completion_tokens, completion.cost_usd)
    finished = reply_finish(job=job, outcome=Outcome(content=completion.content, usage=usage))
    return ModelTestResult(response=completion.content, event=finished.event)


# The largest values AIModel's columns hold.
MAX_PRICE_PER_MILLION = Decimal("999999.999999")
MAX_CONTEXT_LENGTH = 2_147_483_647


def models_sync(
    *, catalogue: list[dict[str, Any]] | None = None, base_url: str | None = None, activate_new: bool = False
) -> dict[str, int]:
    """Import an OpenRouter-style model catalogue, fetched from the upstream's /models unless one is given.

    New models are created inactive unless `activate_new`; known models keep their
    `is_active`, `token_cost_multiplier` and whatever the catalogue does not say.
    A `base_url` other than AI_BASE_URL becomes the models' `api_base`.
    """
    if catalogue is None:
        # Fetched before the transaction: never wait on the upstream while holding one.
        catalogue = OpenAIProvider(base_url=base_url or settings.AI_BASE_URL, api_key=settings.AI_API_KEY).list_models()
    api_base = base_url.rstrip("/") if base_url and base_url.rstrip("/") != settings.AI_BASE_URL.rstrip("/") else ""
    entries = [entry for entry in (_catalogue_entry(item) for item in catalogue) if entry is not None]
    counts = {"created": 0, "updated": 0, "unchanged": 0, "skipped": len(catalogue) - len(entries)}
    with transaction.atomic():
        model_ids = [entry["model_id"] for entry in entries]
        known = AIModel.objects.select_for_update().in_bulk(model_ids, field_name="model_id")
        for entry in entries:
            if api_base:
                entry["api_base"] = api_base
            model = known.get(entry["model_id"])
            if model is None:
                entry.setdefault("name", entry["model_id"][:100])
                known[entry["model_id"]] = AIModel.objects.create(is_active=activate_new, **entry)
                counts["created"] += 1
                continue
            changed = [field for field, value in entry.items() if getattr(model, field) != value]
            for field in changed:
                setattr(model, field, entry[field])
            if changed:
                model.save(update_fields=changed)
            counts["updated" if changed else "unchanged"] += 1
    return counts


def _catalogue_entry(item: Any) -> dict[str, Any] | None:
    """AIModel fields from one catalogue item; only what the item states, so nothing known is overwritten blank."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return None
    model_id = item["id"].strip()
    if not model_id or len(model_id) > AIModel._meta.get_field("model_id").max_length:
        return None
    entry: dict[str, Any] = {"model_id": model_id, "provider": AIModel.Provider.OPENAI}
    if isinstance(item.get("name"), str) and item["name"].strip():
        entry["name"] = item["name"].strip()[:100]
    if isinstance(item.get("description"), str):
        entry["description"] = item["description"]
    context_length = item.get("context_length") or (item.get("top_provider") or {}).get("context_length")
    if isinstance(context_length, int) and not isinstance(context_length, bool) and context_length > 0:
        entry["context_length"] = min(context_length, MAX_CONTEXT_LENGTH)
    pricing = item.get("pricing")
    if isinstance(pricing, dict):
        prompt, completion = _price_per_million(pricing.get("prompt")), _price_per_million(pricing.get("completion"))
        # OpenRouter marks variable prices (its auto router) with -1: unknown, so neither priced nor free.
        if prompt is not None and completion is not None:
            entry["prompt_price_per_million"] = prompt
            entry["completion_price_per_million"] = completion
            entry["is_free"] = prompt == 0 and completion == 0
    if model_id.endswith(":free"):
        entry["is_free"] = True
    outputs = _output_modalities(item.get("architecture"))
    if outputs is not None:
        entry["model_type"] = ContentType.IMAGE if "image" in outputs else ContentType.TEXT
    return entry


def _price_per_million(per_token: Any) -> Decimal | None:
    if isinstance(per_token, bool) or not isinstance(per_token, str | int | float):
        return None
    try:
        price = Decimal(str(per_token)) * 1_000_000
    except InvalidOperation:
        return None
    if not price.is_finite() or price < 0:
        return None
    return min(price, MAX_PRICE_PER_MILLION).quantize(Decimal("0.000001"))


def _output_modalities(architecture: Any) -> list[str] | None:
    if not isinstance(architecture, dict):
        return None
    outputs = architecture.get("output_modalities")
    if isinstance(outputs, list):
        return [str(output) for output in outputs]
    modality = architecture.get("modality")  # the older spelling: "text+image->text"
    if isinstance(modality, str) and "->" in modality:
        return modality.split("->", 1)[1].split("+")
    return None

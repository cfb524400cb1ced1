from dataclasses import dataclass

from django.db.models import Q

from billing.models import UsageEvent
from billing.services import usage_release, usage_reserve, usage_settle
from chatbots.models import AIModel
from chatbots.providers import get_provider
from chatbots.providers.base import estimate_prompt_tokens
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
    messages = [{"role": "user", "content": TEST_PROMPT}]
    event = usage_reserve(user=user, session=None, ai_model=model, prompt_tokens=estimate_prompt_tokens(messages))
    try:
        completion = get_provider(model).complete(model=model, messages=messages)
    except Exception as exc:
        usage_release(event=event)
        raise exc if isinstance(exc, UpstreamError) else UpstreamError() from exc
    event = usage_settle(
        event=event,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        cost_usd=completion.cost_usd,
    )
    return ModelTestResult(response=completion.content, event=event)

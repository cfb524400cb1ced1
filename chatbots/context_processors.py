from django.conf import settings

from chatbots.models import AIModel


def provider(request):
    """Tell every page whether replies come from the offline demo provider."""
    if settings.AI_API_KEY:
        return {"demo_mode": False}

    def demo_mode() -> bool:
        # Without a key only models with their own api_base reach a real upstream.
        real = AIModel.objects.filter(is_active=True, provider=AIModel.Provider.OPENAI).exclude(api_base="")
        return not real.exists()

    # A callable: the query runs only on pages that show the banner (not in the admin).
    return {"demo_mode": demo_mode}

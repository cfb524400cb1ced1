from django.conf import settings


def provider(request):
    """Tell every page whether replies come from the offline demo provider."""
    return {"demo_mode": not settings.AI_API_KEY}

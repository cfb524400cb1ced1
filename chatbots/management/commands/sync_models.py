import json

from django.core.management.base import BaseCommand, CommandError

from chatbots.services import models_sync
from chatsite.errors import UpstreamError


class Command(BaseCommand):
    help = (
        "Import an OpenRouter-style model catalogue (prices, context length, free flag, image output) "
        "from the upstream's /models or from a JSON file. New models are created inactive unless --activate."
    )

    def add_arguments(self, parser):
        parser.add_argument("--file", help='A JSON file: {"data": [...]} as GET /models answers, or a bare list.')
        parser.add_argument("--base-url", help="Fetch from this OpenAI-compatible API instead of AI_BASE_URL.")
        parser.add_argument("--activate", action="store_true", help="Make new models active at once.")

    def handle(self, *args, **options):
        catalogue = _read_catalogue(options["file"]) if options["file"] else None
        try:
            counts = models_sync(catalogue=catalogue, base_url=options["base_url"], activate_new=options["activate"])
        except UpstreamError as exc:
            raise CommandError(f"Could not fetch the model catalogue: {exc.detail}") from exc
        summary = ", ".join(f"{key}: {value}" for key, value in counts.items())
        self.stdout.write(self.style.SUCCESS(f"Models synced ({summary})."))


def _read_catalogue(path: str) -> list:
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    except ValueError as exc:
        raise CommandError(f"{path} is not valid JSON: {exc}.") from exc
    items = data.get("data") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise CommandError(f'{path} holds neither {{"data": [...]}} nor a list of models.')
    return items

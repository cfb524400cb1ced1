from django.core.management.base import BaseCommand

from chatsite.demo import demo_seed


class Command(BaseCommand):
    help = "Create what is missing of the demo data: Free (default) and Pro tiers, demo chatbots and offline models."

    def handle(self, *args, **options):
        counts = demo_seed()
        summary = ", ".join(f"{key.replace('_', ' ')}: {value}" for key, value in counts.items())
        self.stdout.write(self.style.SUCCESS(f"Demo data seeded ({summary})."))

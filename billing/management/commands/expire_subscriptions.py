from django.core.management.base import BaseCommand

from billing.services import subscriptions_expire


class Command(BaseCommand):
    help = "Mark subscriptions whose period has ended as inactive."

    def handle(self, *args, **options):
        count = subscriptions_expire()
        self.stdout.write(f"Expired {count} subscriptions")

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from sessions_app.services import replies_reap_stale


class Command(BaseCommand):
    help = (
        "End replies still marked generating long after their last write (their process died): "
        "keep the text as partial, charge only it, release the rest."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than", type=int, default=15, metavar="MIN", help="minutes without a write (default 15)"
        )

    def handle(self, *args, older_than: int, **options):
        if older_than < 1:
            raise CommandError("--older-than must be at least 1 minute.")
        reaped = replies_reap_stale(older_than=timedelta(minutes=older_than))
        self.stdout.write(f"Ended {reaped} abandoned replies")

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from sessions_app.services import session_cleanup_empty


class Command(BaseCommand):
    help = "Delete chats that have no messages."

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=int,
            metavar="MIN",
            help="Only chats untouched for more than MIN minutes.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count the chats, delete nothing.")

    def handle(self, *args, older_than: int | None = None, dry_run: bool = False, **options):
        if older_than is not None and older_than < 0:
            raise CommandError("--older-than takes a number of minutes, 0 or more.")
        count = session_cleanup_empty(
            older_than=timedelta(minutes=older_than) if older_than is not None else None, dry_run=dry_run
        )
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(f"{verb} {count} empty chats")

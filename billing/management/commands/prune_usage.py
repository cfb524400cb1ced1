from datetime import datetime, time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from billing.services import LEDGER_KEPT, usage_prune


class Command(BaseCommand):
    help = (
        "Delete usage ledger rows older than a date; their usage stays counted in the hourly totals, "
        "and rows any current quota window still reads are kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("--before", required=True, metavar="DATE", help="YYYY-MM-DD or an ISO 8601 date-time")

    def handle(self, *args, before: str, **options):
        moment = parse_datetime(before)
        if moment is None:
            day = parse_date(before)
            if day is None:
                raise CommandError(f"--before must be a date (YYYY-MM-DD) or an ISO 8601 date-time, not {before!r}.")
            moment = datetime.combine(day, time.min)
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        kept_from = timezone.now() - LEDGER_KEPT
        if moment > kept_from:
            self.stdout.write(f"Rows after {kept_from:%Y-%m-%d %H:%M} are kept: rolling windows still read them.")
        deleted = usage_prune(before=moment)
        self.stdout.write(f"Pruned {deleted} ledger rows")

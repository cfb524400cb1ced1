"""SMS backends, chosen by the SMS_BACKEND setting (console by default)."""

import logging

from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


class ConsoleSMSBackend:
    def send(self, *, to: str, body: str) -> None:
        logger.info("SMS to %s: %s", to, body)


def send_sms(*, to: str, body: str) -> None:
    import_string(settings.SMS_BACKEND)().send(to=to, body=body)

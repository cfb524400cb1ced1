"""The database the app-server benchmarks share: a tier, a model and a chatbot, signed-in users, their chats.

Import it after `bench.common.setup()`: it uses the models. bench/capacity.py and bench/replies.py
each serve a database of their own.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connection, models
from django.utils import timezone
from django.utils.crypto import get_random_string

from accounts.models import User
from billing.models import ChatSessionUsage, SubscriptionType, UsageBucket, UsageEvent, UserSubscription
from chatbots.models import AIModel, Chatbot
from sessions_app.lifecycle import reply_reap
from sessions_app.models import ChatMessage, ChatSession, ReplyPiece


@dataclass
class People:
    tier: SubscriptionType
    model: AIModel
    chatbot: Chatbot
    users: list[User]
    warm_users: list[User]
    sessions: dict[int, str]  # user id -> session key
    csrf: str = field(default_factory=lambda: get_random_string(32))

    def cookie(self, user: User) -> str:
        """The Cookie header of `user`'s signed-in session, CSRF cookie included."""
        return f"{settings.SESSION_COOKIE_NAME}={self.sessions[user.pk]}; {settings.CSRF_COOKIE_NAME}={self.csrf}"


def prepare(count: int, *, warm_ups: int = 0, label: str = "capacity") -> People:
    """Migrate; clear what earlier runs left; the tier, model and chatbot; `count` users (and `warm_ups`), signed in."""
    call_command("migrate", verbosity=0, interactive=False)
    earlier_runs_clear()
    tier, _ = SubscriptionType.objects.update_or_create(
        sku="CAPACITY",
        defaults={
            "name": "Capacity benchmark",
            "duration_days": 3650,
            # Every limit set, none ever reached: every send still checks them all.
            **{f.name: 10**12 for f in SubscriptionType._meta.fields if isinstance(f, models.PositiveBigIntegerField)},
            "max_openrouter_cost_usd": Decimal(10**9),
        },
    )
    model, _ = AIModel.objects.update_or_create(
        model_id="bench/capacity",
        defaults={
            "name": "Capacity upstream",
            "provider": AIModel.Provider.OPENAI,
            "api_base": "",  # AI_BASE_URL, the run's upstream
            "prompt_price_per_million": Decimal(2),
            "completion_price_per_million": Decimal(6),
            "context_length": 8192,
            "is_active": True,
        },
    )
    chatbot, _ = Chatbot.objects.update_or_create(
        name="Capacity assistant", defaults={"system_prompt": "You are a helpful assistant.", "is_active": True}
    )
    emails = [f"{label}{n:05d}@bench.example" for n in range(count)] + [
        f"{label}-warm{n}@bench.example" for n in range(warm_ups)
    ]
    User.objects.bulk_create([User(email=email, name=email, password="!") for email in emails], ignore_conflicts=True)
    by_email = User.objects.in_bulk(emails, field_name="email")
    now = timezone.now()
    subscribed = set(UserSubscription.objects.filter(subscription_type=tier).values_list("user_id", flat=True))
    UserSubscription.objects.bulk_create(
        UserSubscription(user=user, subscription_type=tier, start_date=now - timedelta(days=1),
                         end_date=now + timedelta(days=3650))
        for user in by_email.values() if user.pk not in subscribed
    )  # fmt: skip
    # Signed in as a login would, without hashing N passwords or posting N logins.
    Session.objects.filter(expire_date__lt=now).delete()
    sessions, rows = {}, []
    for user in by_email.values():
        data = {
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: settings.AUTHENTICATION_BACKENDS[0],
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        }
        key = get_random_string(32)
        expires = now + timedelta(days=1)
        rows.append(Session(session_key=key, session_data=SessionStore().encode(data), expire_date=expires))
        sessions[user.pk] = key
    Session.objects.bulk_create(rows)
    users = [by_email[email] for email in emails[:count]]
    warm = [by_email[email] for email in emails[count:]]
    return People(tier=tier, model=model, chatbot=chatbot, users=users, warm_users=warm, sessions=sessions)


# What each run adds: its chats (with their messages, pieces and usage) and its users' sign-ins.
RUN_TABLES = [ChatSession, ChatMessage, ReplyPiece, UsageEvent, UsageBucket, ChatSessionUsage, Session]


def earlier_runs_clear() -> None:
    """Start every run from the same database: without the chats, usage and sign-ins of the runs before it.

    Kept, they grow with every run (here to a million messages and half a million chats), and
    PostgreSQL's autovacuum then goes through them while a later run is being measured.
    """
    name = connection.settings_dict["NAME"]
    if not name.startswith("chatsite_bench"):
        print(f"bench: {name} is not a benchmark's own database: what earlier runs left stays")
        return
    tables = ", ".join(connection.ops.quote_name(model._meta.db_table) for model in RUN_TABLES)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables}")
        cursor.execute(f"VACUUM ANALYZE {tables}")


def new_chats(people: People, users: list[User]) -> list[int]:
    chats = ChatSession.objects.bulk_create(
        ChatSession(user=user, chatbot=people.chatbot, ai_model=people.model) for user in users
    )
    return [chat.pk for chat in chats]


def sends_for(people: People, users: list[User], chats: list[int], label: str) -> list[dict]:
    """One streamed send per chat, as bench/capacity_client.py takes them: the chat, a unique message, the cookie."""
    return [
        {"chat": chat, "message": f"{label} user {i} {get_random_string(8)}", "cookie": people.cookie(user),
         "csrf": people.csrf}
        for i, (user, chat) in enumerate(zip(users, chats, strict=True))
    ]  # fmt: skip


def end_leftovers() -> int:
    """End every reply still `generating` (no server runs now): keep its text, settle or release its usage."""
    ended = 0
    for pk in ChatMessage.objects.filter(status=ChatMessage.Status.GENERATING).values_list("pk", flat=True):
        ended += reply_reap(pk, older_than=timedelta(0))
    return ended

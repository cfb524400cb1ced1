"""The benchmarks' data set in PostgreSQL: built once, then reused.

1,000 users on a tier whose limits never fill (every limit is still checked), 100 chats each
(100,000), 1,000,000 messages and 1,000,000 usage-ledger rows over the last 30 days with the
buckets the services keep beside them. The first CLIENTS users are the load tool's clients:
each has one chat of 500 messages, and the selective word SEARCH_WORD in one of its messages
(it is in about 200 of the million). The database is BENCH_DATABASE_URL
(default postgres://chatsite:chatsite@127.0.0.1:5432/chatsite_bench_app), created when missing.

The caller (bench/common.py's `setup`) points Django at that database before importing this.
"""

import time
from datetime import timedelta
from decimal import Decimal

from django.core.management import call_command
from django.db import connection, models, transaction
from django.utils import timezone

from accounts.models import User
from billing.models import SubscriptionType, UsageBucket, UsageEvent, UserSubscription
from chatbots.models import AIModel, Chatbot
from sessions_app.models import ChatMessage, ChatSession

VERSION = 1  # bump when the shape below changes: an older data set is rebuilt
USERS = 1_000
CHATS_PER_USER = 100
MESSAGES = 1_000_000
LEDGER_ROWS = 1_000_000
CLIENTS = 100  # users with a long chat, whom the load tool signs in as
LONG_CHAT = 500
SEARCH_WORD = "zanzibar"
SPAN = timedelta(days=30)
MODEL_ID = "bench/stub"
PACED_MODEL_ID = "bench/stub-paced"
SHIFT_AFTER = timedelta(hours=6)  # quota windows are relative to now: older ledgers are moved forward

WORDS = [
    "the", "a", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "river", "mountain", "recipe",
    "garden", "python", "django", "query", "index", "window", "budget", "travel", "weather", "music",
    "history", "planet", "engine", "letter", "summary", "report", "invoice", "meeting", "coffee", "morning",
    "evening", "question", "answer", "example", "function", "variable", "database", "server", "network",
]  # fmt: skip


def ensure(log=print) -> str:
    """Migrate, then build the data set unless a current one is there; say which it was."""
    call_command("migrate", verbosity=0, interactive=False)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS bench_dataset (version int, built_at timestamptz, moved_at timestamptz)"
        )
        cursor.execute("SELECT version, built_at, moved_at FROM bench_dataset")
        row = cursor.fetchone()
    if row and row[0] == VERSION:
        _, built_at, moved_at = row
        note = f"reused, built {built_at:%Y-%m-%d %H:%M} UTC"
        if timezone.now() - moved_at > SHIFT_AFTER:
            started = time.perf_counter()
            _move_ledger_forward(timezone.now() - moved_at)
            note += f"; its ledger moved forward to now in {time.perf_counter() - started:.0f} s"
        return note
    started = time.perf_counter()
    _build(log)
    return f"built in this run ({time.perf_counter() - started:.0f} s)"


def _sql(statement: str, params=None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def _build(log) -> None:
    log("bench: building the data set (once; later runs reuse it) ...")
    now = timezone.now()
    tables = [m._meta.db_table for m in (UsageBucket, UsageEvent, ChatMessage, ChatSession, UserSubscription)]
    _sql(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    _sql("DELETE FROM bench_dataset")
    User.objects.filter(email__endswith="@bench.example").delete()

    tier, _ = SubscriptionType.objects.update_or_create(
        sku="BENCH",
        defaults={
            "name": "Benchmark",
            "duration_days": 3650,
            # Every limit set, none ever filled: every window is summed and nothing is refused.
            **{f.name: 10**12 for f in SubscriptionType._meta.fields if isinstance(f, models.PositiveBigIntegerField)},
            "max_openrouter_cost_usd": Decimal(10**9),
        },
    )
    model, _ = AIModel.objects.update_or_create(
        model_id=MODEL_ID,
        defaults={
            "name": "Bench stub",
            "provider": AIModel.Provider.OPENAI,
            "api_base": "http://127.0.0.1:9/v1",  # set to the local upstream by each run
            "prompt_price_per_million": Decimal(2),
            "completion_price_per_million": Decimal(6),
            "context_length": 8192,
        },
    )
    chatbot, _ = Chatbot.objects.update_or_create(
        name="Bench assistant", defaults={"system_prompt": "You are a helpful assistant.", "is_active": True}
    )

    User.objects.bulk_create(
        [User(email=f"user{n:04d}@bench.example", name=f"Bench {n}", password="!") for n in range(USERS)]
    )
    users = list(User.objects.filter(email__endswith="@bench.example").order_by("email").values_list("pk", flat=True))
    UserSubscription.objects.bulk_create(
        UserSubscription(user_id=pk, subscription_type=tier, start_date=now - SPAN, end_date=now + timedelta(days=3650))
        for pk in users
    )
    log(f"bench: {len(users)} users")

    chats = ChatSession._meta.db_table
    # Chat i belongs to user i % USERS; the first CLIENTS chats are the clients' long chats.
    _sql(
        f"""
        INSERT INTO {chats} (user_id, chatbot_id, ai_model_id, title, auto_generate_title,
                             created_at, updated_at, is_active, pinned)
        SELECT (%(users)s::bigint[])[1 + i %% %(n_users)s], %(chatbot)s, %(model)s,
               'Chat ' || i, false,
               %(now)s - make_interval(secs => (%(total)s - i) * %(span)s / %(total)s) - interval '1 hour',
               %(now)s - make_interval(secs => (%(total)s - i) * %(span)s / %(total)s),
               true, false
        FROM generate_series(0, %(total)s - 1) AS i
        """,
        {
            "users": users, "n_users": len(users), "chatbot": chatbot.pk, "model": model.pk, "now": now,
            "total": USERS * CHATS_PER_USER, "span": SPAN.total_seconds(),
        },
    )  # fmt: skip
    first_chat = ChatSession.objects.order_by("pk").values_list("pk", flat=True)[0]
    log(f"bench: {USERS * CHATS_PER_USER} chats")

    messages = ChatMessage._meta.db_table
    long_total = CLIENTS * LONG_CHAT
    # Message i: the first CLIENTS * LONG_CHAT fill the long chats, the rest go round the other chats.
    _sql(
        f"""
        INSERT INTO {messages} (message_id, session_id, message_type, content, tokens_count, image_url,
                                created_at, updated_at, disabled, ai_model_id, status, error_code,
                                error_detail, request_hash)
        SELECT gen_random_uuid(), chat,
               CASE WHEN i %% 2 = 0 THEN 'user' ELSE 'assistant' END,
               CASE WHEN i < %(long_total)s AND i %% %(long)s = %(long)s / 2 OR i %% 10007 = 0
                    THEN 'Tell me about ' || %(word)s || ' and its ' || (%(words)s::text[])[1 + i %% %(n_words)s]
                    ELSE 'Message ' || i || ': ' || (%(words)s::text[])[1 + i %% %(n_words)s] || ' '
                         || (%(words)s::text[])[1 + (i / 7) %% %(n_words)s] || ' '
                         || (%(words)s::text[])[1 + (i / 13) %% %(n_words)s] || ' and '
                         || (%(words)s::text[])[1 + (i / 31) %% %(n_words)s] || ' '
                         || repeat('with some more words of text ', 1 + i %% 6) END,
               20 + i %% 200, '',
               %(now)s - make_interval(secs => (%(total)s - i) * %(span)s / %(total)s),
               %(now)s - make_interval(secs => (%(total)s - i) * %(span)s / %(total)s),
               false, %(model)s, 'complete', '', '', ''
        FROM (
            SELECT i, CASE WHEN i < %(long_total)s THEN %(first_chat)s + i / %(long)s
                           ELSE %(first_chat)s + %(clients)s
                                + (i - %(long_total)s) %% (%(chats)s - %(clients)s) END AS chat
            FROM generate_series(0, %(total)s - 1) AS i
        ) AS numbered
        """,
        {
            "long_total": long_total, "long": LONG_CHAT, "word": SEARCH_WORD, "words": WORDS, "n_words": len(WORDS),
            "now": now, "total": MESSAGES, "span": SPAN.total_seconds(), "model": model.pk,
            "first_chat": first_chat, "clients": CLIENTS, "chats": USERS * CHATS_PER_USER,
        },
    )  # fmt: skip
    log(f"bench: {MESSAGES} messages")

    _sql(
        f"""
        INSERT INTO {UsageEvent._meta.db_table} (
            user_id, ai_model_id, kind, is_free_model, prompt_tokens, completion_tokens,
            billed_tokens, cost_usd, state, created_at)
        SELECT (%(users)s::bigint[])[1 + i %% %(n_users)s], %(model)s, 'message', false,
               20 + i %% 200, 50 + i %% 300, 70 + i %% 200 + i %% 300,
               ((20 + i %% 200) * 2 + (50 + i %% 300) * 6) / 1000000.0, 'settled',
               %(now)s - make_interval(secs => (%(total)s - i) * %(span)s / %(total)s)
        FROM generate_series(0, %(total)s - 1) AS i
        """,
        {"users": users, "n_users": len(users), "model": model.pk, "now": now, "total": LEDGER_ROWS,
         "span": SPAN.total_seconds()},
    )  # fmt: skip
    rebuild_buckets()
    log(f"bench: {LEDGER_ROWS} ledger rows and their buckets")
    _sql("VACUUM ANALYZE")
    _sql("INSERT INTO bench_dataset VALUES (%s, %s, %s)", [VERSION, now, now])


def rebuild_buckets() -> None:
    """The hour and day buckets the services keep in step with the ledger (released rows count nowhere)."""
    _sql(f"TRUNCATE {UsageBucket._meta.db_table}")
    _sql(
        f"""
        INSERT INTO {UsageBucket._meta.db_table} (user_id, span, hour, klass, messages, tokens, cost_usd)
        SELECT user_id, span.name, date_trunc(span.name, created_at, 'UTC'),
               CASE WHEN kind = 'image' THEN 'image' WHEN is_free_model THEN 'free' ELSE 'paid' END,
               count(*), sum(billed_tokens), sum(cost_usd)
        FROM {UsageEvent._meta.db_table} CROSS JOIN (VALUES ('hour'), ('day')) AS span (name)
        WHERE state <> 'released'
        GROUP BY 1, 2, 3, 4
        """
    )


def _move_ledger_forward(by: timedelta) -> None:
    """Keep the ledger's last 30 days ending now, as a live service's would."""
    with transaction.atomic():
        _sql(f"UPDATE {UsageEvent._meta.db_table} SET created_at = created_at + %s", [by])
        rebuild_buckets()
        _sql("UPDATE bench_dataset SET moved_at = now()")
    _sql(f"VACUUM ANALYZE {UsageEvent._meta.db_table}, {UsageBucket._meta.db_table}")


def point_models_at(*, instant: str, paced: str) -> None:
    """Point the data set's model at the instant upstream, and a copy of it at the paced one."""
    model = AIModel.objects.get(model_id=MODEL_ID)
    model.api_base, model.is_active = instant, True
    model.save(update_fields=["api_base", "is_active"])
    model.pk, model.model_id, model.name, model.api_base = None, PACED_MODEL_ID, "Bench stub, paced", paced
    AIModel.objects.update_or_create(
        model_id=PACED_MODEL_ID, defaults={f.name: getattr(model, f.name) for f in AIModel._meta.concrete_fields[1:]}
    )


def clients(count: int = CLIENTS) -> list[dict]:
    """The first `count` users signed in, each with their long chat, as the load tool presents them."""
    from bench.load import sign_in

    users = User.objects.filter(email__endswith="@bench.example").order_by("email")[:count]
    chatbot = Chatbot.objects.get(name="Bench assistant")
    models = AIModel.objects.in_bulk([MODEL_ID, PACED_MODEL_ID], field_name="model_id")
    return sign_in(users, chatbot=chatbot, model=models[MODEL_ID], paced_model=models[PACED_MODEL_ID])

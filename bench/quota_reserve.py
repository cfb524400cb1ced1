"""Benchmark: billing.services.usage_reserve with an empty ledger and with 1,000,000 ledger rows (SPEC 8).

    .venv/bin/python bench/quota_reserve.py        # or `make bench`

DATABASE_URL defaults to BENCH_DATABASE_URL, or to make bench's database
(postgres://chatsite:chatsite@127.0.0.1:5432/chatsite_bench_app). The two ledgers are two
schemas of that database, each migrated here: `bench_empty`, emptied on every run, and
`bench_loaded`, loaded once with 1,000,000 rows and reused while it is less than a day old
(quota windows are relative to now). Reservations alternate between the two
in blocks, so that whatever else the machine does weighs on both alike; each reservation is
released at once so no limit fills. The results replace their section of BENCHMARKS.md.
"""
# ruff: noqa: E402

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import common

os.environ.setdefault("DATABASE_URL", os.environ.get("BENCH_DATABASE_URL", common.DEFAULT_URL))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-this-process-serves-nothing")

import django

django.setup()

from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from bench.dataset import rebuild_buckets
from billing.models import SubscriptionType, UsageBucket, UsageEvent
from billing.quotas import Usage, floor_hour
from billing.services import subscription_assign, subscription_current, usage_release, usage_reserve
from chatbots.models import AIModel

TOTAL_ROWS = 1_000_000
BENCH_USER_ROWS = 200_000  # every fifth row; the rest go round the other users
OTHER_USERS = 999
SPAN = timedelta(days=60)
STALE_AFTER = timedelta(days=1)
SUBSCRIBED_FOR = timedelta(days=20)
PROMPT_TOKENS = 500
SECTION = "## Quota reservation: 0 vs 1,000,000 ledger rows"
TARGET = 1.2

# One statement: rows in time order, as a ledger grows, the benchmarked user's every fifth.
# Classes and states cycle: 4% images, 16% free-model messages, the rest paid; 2% released.
LOAD_LEDGER = """
INSERT INTO billing_usageevent (
    user_id, ai_model_id, kind, is_free_model, prompt_tokens, completion_tokens,
    billed_tokens, cost_usd, state, created_at
)
SELECT
    CASE WHEN i %% 5 = 0 THEN %(user)s ELSE (%(others)s::bigint[])[1 + i %% %(other_count)s] END,
    CASE WHEN klass = 'free' THEN %(free_model)s ELSE %(paid_model)s END,
    CASE WHEN klass = 'image' THEN 'image' ELSE 'message' END,
    klass = 'free',
    prompt,
    completion,
    CASE WHEN released THEN 0 ELSE prompt + completion END,
    CASE WHEN released OR klass = 'free' THEN 0
         WHEN klass = 'image' THEN 0.04
         ELSE (prompt * 2 + completion * 6) / 1000000.0 END,
    CASE WHEN released THEN 'released' ELSE 'settled' END,
    %(now)s - make_interval(secs => (%(total)s - i) * %(span)s::double precision / %(total)s)
FROM (
    SELECT
        i,
        CASE WHEN (i / 5) %% 25 = 0 THEN 'image' WHEN (i / 5) %% 5 = 0 THEN 'free' ELSE 'paid' END AS klass,
        (i / 5) %% 50 = 7 AS released,
        20 + i %% 200 AS prompt,
        CASE WHEN (i / 5) %% 25 = 0 THEN 0 ELSE 50 + i %% 300 END AS completion
    FROM generate_series(1, %(total)s) AS i
) AS rows
"""


@dataclass
class Ledger:
    """One schema's ledger, the user whose reservations are timed on it, and the timings."""

    label: str
    schema: str
    rows_kept: int  # ids above this are the benchmark's own reservations, deleted after each block
    user: User | None = None
    model: AIModel | None = None
    reserve: list[float] = field(default_factory=list)  # usage_reserve, call to commit
    load: list[float] = field(default_factory=list)  # Usage.load: builds and runs its sums, reads the result
    sums: list[float] = field(default_factory=list)  # the same SQL, sent as it is
    queries: list[str] = field(default_factory=list)
    plans: list[dict] = field(default_factory=list)
    # Per reservation of a separate diagnostic run: each statement's time, by what it is.
    statements: dict[str, list[float]] = field(default_factory=dict)


# What a reservation's statements are, by how each begins.
STATEMENTS = {
    'SELECT "billing_usersubscription"': "the current subscription, locked",
    "SELECT piece, klass": "every quota sum (`Usage.load`)",
    'INSERT INTO "billing_usageevent"': "the ledger row",
    "INSERT INTO billing_usagebucket": "its hour and day buckets",
}


def use_schema(schema: str) -> None:
    """Reconnect with `schema` first on the search path: the same tables, another ledger."""
    connection.close()
    connection.settings_dict.setdefault("OPTIONS", {})["options"] = f"-c search_path={schema}"
    connection.ensure_connection()


def prepare(ledger: Ledger) -> None:
    """Migrate the schema and set up the benchmarked user on a fresh subscription."""
    connection.close()
    connection.settings_dict.setdefault("OPTIONS", {}).pop("options", None)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {ledger.schema}")
    use_schema(ledger.schema)
    call_command("migrate", verbosity=0, interactive=False)
    # Every limit unlimited but one that never fills: the check still sums every window.
    tier, _ = SubscriptionType.objects.update_or_create(
        sku="BENCH", defaults={"name": "Benchmark", "duration_days": 30, "monthly_max_messages": 10**12}
    )
    ledger.user, _ = User.objects.get_or_create(email="bench@example.com", defaults={"name": "Benchmark"})
    ledger.model, _ = AIModel.objects.update_or_create(
        model_id="bench/paid",
        defaults={
            "name": "Bench paid",
            "provider": AIModel.Provider.DEMO,
            "prompt_price_per_million": Decimal(2),
            "completion_price_per_million": Decimal(6),
        },
    )
    AIModel.objects.update_or_create(
        model_id="bench/free", defaults={"name": "Bench free", "provider": AIModel.Provider.DEMO, "is_free": True}
    )
    # Mid-period, as most subscriptions are: the period's limits sum 20 days of buckets.
    subscription_assign(user=ledger.user, subscription_type=tier, start=timezone.now() - SUBSCRIBED_FOR)
    forget_own_reservations(ledger)


def forget_own_reservations(ledger: Ledger) -> None:
    """Release (so buckets step back) and delete the benchmark's own rows, including an interrupted run's."""
    own = UsageEvent.objects.filter(user=ledger.user, pk__gt=ledger.rows_kept)
    for event in own.filter(state=UsageEvent.State.RESERVED):
        usage_release(event=event)
    own.delete()
    UsageBucket.objects.filter(user=ledger.user, messages=0, tokens=0, cost_usd=0).delete()


def empty(ledger: Ledger) -> None:
    use_schema(ledger.schema)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE billing_usageevent, billing_usagebucket RESTART IDENTITY")


def load(ledger: Ledger) -> str:
    """Load the 1,000,000 rows and their buckets, unless a fresh enough copy is there already."""
    newest = UsageEvent.objects.filter(pk__lte=TOTAL_ROWS).order_by("-created_at").values_list("created_at", flat=True)
    count = UsageEvent.objects.filter(pk__lte=TOTAL_ROWS).count()
    has_days = UsageBucket.objects.filter(span=UsageBucket.Span.DAY).exists()
    if count == TOTAL_ROWS and newest[0] > timezone.now() - STALE_AFTER and has_days:
        age = timezone.now() - newest[0]
        # Earlier runs' writes cleared the visibility map of the pages they touched and left the
        # rows they deleted; autovacuum would have tidied both on a table that has been there a while.
        vacuum()
        return f"reused from an earlier run, its newest row {age.total_seconds() / 3600:.1f} h old, vacuumed again"
    started = time.perf_counter()
    others = [User(email=f"bench-other-{n}@example.com", name=f"Other {n}", password="!") for n in range(OTHER_USERS)]
    User.objects.bulk_create(others, ignore_conflicts=True)
    other_ids = list(User.objects.filter(email__startswith="bench-other-").order_by("pk").values_list("pk", flat=True))
    free_model = AIModel.objects.get(model_id="bench/free")
    empty(ledger)
    with connection.cursor() as cursor:
        cursor.execute(
            LOAD_LEDGER,
            {
                "user": ledger.user.pk,
                "others": other_ids,
                "other_count": len(other_ids),
                "paid_model": ledger.model.pk,
                "free_model": free_model.pk,
                "now": timezone.now(),
                "total": TOTAL_ROWS,
                "span": SPAN.total_seconds(),
            },
        )
    rebuild_buckets()
    vacuum()
    return f"loaded by this run in {time.perf_counter() - started:.1f} s"


def vacuum() -> None:
    """As autovacuum would leave an old table: statistics and the visibility map up to date.

    INDEX_CLEANUP ON: the rows earlier runs reserved and deleted lie in the last hours, where
    the quota sums read, and a VACUUM that finds few dead rows leaves their index entries.
    """
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE, INDEX_CLEANUP ON) billing_usageevent")
        cursor.execute("VACUUM (ANALYZE, INDEX_CLEANUP ON) billing_usagebucket")


def run_block(ledger: Ledger, *, count: int, diagnostic_count: int, warmup: int) -> None:
    use_schema(ledger.schema)
    for n in range(warmup + count):
        started = time.perf_counter()
        event = usage_reserve(user=ledger.user, session=None, ai_model=ledger.model, prompt_tokens=PROMPT_TOKENS)
        elapsed = time.perf_counter() - started
        usage_release(event=event)
        if n >= warmup:
            ledger.reserve.append(elapsed)
    if not ledger.queries:
        with CaptureQueriesContext(connection) as captured:
            event = usage_reserve(user=ledger.user, session=None, ai_model=ledger.model, prompt_tokens=PROMPT_TOKENS)
        usage_release(event=event)
        ledger.queries = [query["sql"] for query in captured.captured_queries]

    # Where the time goes: the quota sums as Usage.load builds and sends them, then their SQL alone.
    subscription = subscription_current(user=ledger.user)
    with CaptureQueriesContext(connection) as captured:
        Usage(subscription, timezone.now()).load()
    sums = [query["sql"] for query in captured.captured_queries]
    with connection.cursor() as cursor:
        for n in range(warmup + diagnostic_count):
            started = time.perf_counter()
            Usage(subscription, timezone.now()).load()
            middle = time.perf_counter()
            for sql in sums:
                cursor.execute(sql)
                cursor.fetchall()
            if n >= warmup:
                ledger.load.append(middle - started)
                ledger.sums.append(time.perf_counter() - middle)

    # And each statement of a reservation, timed from the call to its result.
    spent: dict[str, float] = {}

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            name = next((name for start, name in STATEMENTS.items() if sql.lstrip().startswith(start)), "other")
            spent[name] = spent.get(name, 0) + time.perf_counter() - started

    for n in range(warmup + diagnostic_count):
        spent.clear()
        started = time.perf_counter()
        with connection.execute_wrapper(timed):
            event = usage_reserve(user=ledger.user, session=None, ai_model=ledger.model, prompt_tokens=PROMPT_TOKENS)
        elapsed = time.perf_counter() - started
        usage_release(event=event)
        if n >= warmup:
            spent["the rest: Python, BEGIN, COMMIT"] = elapsed - sum(spent.values())
            spent["the whole reservation"] = elapsed
            for name, seconds in spent.items():
                ledger.statements.setdefault(name, []).append(seconds)
    forget_own_reservations(ledger)


def explain(ledger: Ledger, *, verbose: bool) -> None:
    """EXPLAIN ANALYZE the quota sums of Usage.load: every scan in the plan, by table and kind."""
    use_schema(ledger.schema)
    subscription = subscription_current(user=ledger.user)
    with CaptureQueriesContext(connection) as captured:
        Usage(subscription, timezone.now()).load()
    with connection.cursor() as cursor:
        for sql in [query["sql"] for query in captured.captured_queries]:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
            result = cursor.fetchone()[0][0]
            scans: dict[tuple[str, str], dict] = {}
            nodes = [result["Plan"]]
            while nodes:
                node = nodes.pop()
                nodes += node.get("Plans", [])
                if "Relation Name" in node:
                    scan = scans.setdefault(
                        (node["Relation Name"], node["Node Type"]), {"count": 0, "rows": 0, "heap_fetches": 0}
                    )
                    scan["count"] += 1
                    scan["rows"] += node["Actual Rows"] * node["Actual Loops"]
                    scan["heap_fetches"] += node.get("Heap Fetches", 0)
            ledger.plans.append(
                {
                    "scans": scans,
                    "buffers": result["Plan"]["Shared Hit Blocks"] + result["Plan"]["Shared Read Blocks"],
                    "planning_ms": result["Planning Time"],
                    "ms": result["Execution Time"],
                }
            )
            if verbose:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                plan = "\n".join(row[0] for row in cursor.fetchall())
                print(f"\n-- {ledger.label}: {sql[:100]}...\n{plan}")


def stats(times: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return {
        "p50": cuts[49] * 1000,
        "p95": cuts[94] * 1000,
        "p99": cuts[98] * 1000,
        "mean": statistics.fmean(times) * 1000,
    }


def report(empty_ledger: Ledger, loaded: Ledger, *, data: str, args: argparse.Namespace) -> str:
    ledgers = (empty_ledger, loaded)
    figures = {ledger.label: stats(ledger.reserve) for ledger in ledgers}
    rows = [
        f"| {ledger.label} | {len(ledger.reserve)} | {figures[ledger.label]['p50']:.2f} | "
        f"{figures[ledger.label]['p95']:.2f} | {figures[ledger.label]['p99']:.2f} | "
        f"{figures[ledger.label]['mean']:.2f} | {_statements(ledger.queries)} |"
        for ledger in ledgers
    ]
    ratio_p50 = figures[loaded.label]["p50"] / figures[empty_ledger.label]["p50"]
    ratio_mean = figures[loaded.label]["mean"] / figures[empty_ledger.label]["mean"]
    met = "met" if max(ratio_p50, ratio_mean) <= TARGET else "**not met**"
    parts = []
    for ledger in ledgers:
        load, sums = stats(ledger.load), stats(ledger.sums)
        parts.append(
            f"| {ledger.label} | {load['p50']:.2f} | {load['mean']:.2f} | {sums['p50']:.2f} | {sums['mean']:.2f} |"
        )
    sums_ratio = stats(loaded.sums)["p50"] / stats(empty_ledger.sums)["p50"]
    added = figures[loaded.label]["p50"] - figures[empty_ledger.label]["p50"]
    sums_added = stats(loaded.sums)["p50"] - stats(empty_ledger.sums)["p50"]
    scans = [
        f"| {ledger.label} | `{table}` | {scan['count']} {node} | {scan['rows']:,} | {scan['heap_fetches']:,} |"
        for ledger in ledgers
        for plan in ledger.plans
        for (table, node), scan in sorted(plan["scans"].items())
    ]
    plans = [
        f"| {ledger.label} | {plan['buffers']:,} | {plan['planning_ms']:.2f} | {plan['ms']:.2f} |"
        for ledger in ledgers
        for plan in ledger.plans
    ]
    statements = [
        f"| {name} | {stats(empty_ledger.statements[name])['p50']:.2f} | {stats(loaded.statements[name])['p50']:.2f} "
        f"| {stats(loaded.statements[name])['p50'] - stats(empty_ledger.statements[name])['p50']:+.2f} |"
        for name in [*STATEMENTS.values(), "the rest: Python, BEGIN, COMMIT", "the whole reservation"]
        if name in empty_ledger.statements and name in loaded.statements
    ]
    query_list = "\n".join(f"{n}. `{_short(sql)}`" for n, sql in enumerate(loaded.queries, 1))
    per_block = args.count // args.blocks
    return f"""{SECTION}

What is timed: one call of `billing.services.usage_reserve` (a paid-model message, {PROMPT_TOKENS}
estimated prompt tokens) for one user, from the call to its commit: finding the current
subscription, locking it, summing every quota window (`billing.quotas.Usage.load`), the
check, the ledger row and its hourly bucket. Each reservation is released at once (not timed)
so no limit fills. The tier has every limit unlimited but `monthly_max_messages` (10^12); the
check sums every window anyway. The subscription began {SUBSCRIBED_FOR.days} days ago.

- Machine: {common.machine()}; run {timezone.now():%Y-%m-%d %H:%M} UTC on a machine shared with other work
  (1-minute load average {args.load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end).
- Data set: empty = schema `bench_empty`, no ledger rows at all. Loaded = schema `bench_loaded`,
  {TOTAL_ROWS:,} `UsageEvent` rows over the last {SPAN.days} days in time order ({BENCH_USER_ROWS:,} for the
  benchmarked user, one every ~26 s; {TOTAL_ROWS - BENCH_USER_ROWS:,} for {OTHER_USERS} other users;
  4% images, 16% free-model messages, 2% released), their `UsageBucket` rows, then
  `VACUUM (ANALYZE, INDEX_CLEANUP ON)`;
  {data}.
- Command: `make bench` = `.venv/bin/python bench/quota_reserve.py`, with DATABASE_URL
  `{common.masked(os.environ["DATABASE_URL"])}`: {args.blocks} blocks per ledger, alternating,
  of {per_block} timed reservations after {args.warmup} untimed ones.

| ledger | reservations | p50 ms | p95 ms | p99 ms | mean ms | SQL statements per reservation |
|---|---:|---:|---:|---:|---:|---:|
{rows[0]}
{rows[1]}

Loaded / empty: p50 **{ratio_p50:.2f}x**, mean **{ratio_mean:.2f}x**; target <= {TARGET}x (SPEC 8): {met}.
The loaded ledger adds {added:.2f} ms at p50; the quota sums' SQL, sent alone, adds {sums_added:.2f} ms.
{edge_note(args)}

Where the time goes ({args.blocks * args.diagnostic_count} runs per ledger): `Usage.load` as it builds
and sends its sums and reads the result, and the same SQL sent as it is.

| ledger | `Usage.load` p50 ms | mean ms | its SQL alone p50 ms | mean ms |
|---|---:|---:|---:|---:|
{parts[0]}
{parts[1]}

The SQL alone, loaded / empty: p50 {sums_ratio:.1f}x. `EXPLAIN (ANALYZE, BUFFERS)` of the quota
sums (`--explain` prints the plans), its scans:

| ledger | table | scans | rows | heap fetches |
|---|---|---|---:|---:|
{chr(10).join(scans)}

and the statement as a whole:

| ledger | buffers | planning ms | execution ms |
|---|---:|---:|---:|
{chr(10).join(plans)}

Each statement of a reservation ({args.blocks * args.diagnostic_count} more reservations per ledger, each
statement timed from the call to its result), p50:

| part of a reservation | empty ms | loaded ms | loaded - empty |
|---|---:|---:|---:|
{chr(10).join(statements)}

The statements of one reservation (loaded ledger):

{query_list}
"""


def edge_note(args: argparse.Namespace) -> str:
    """How long the rolling windows' partial first hours were: the part of each window read from the ledger."""
    first, last = args.timed_from, args.timed_to
    if floor_hour(first) != floor_hour(last):
        lengths = "anything from 0 to 60 min, the run crossing an hour"
    else:
        lengths = f"{60 - last.minute - last.second / 60:.0f} to {60 - first.minute - first.second / 60:.0f} min"
    return (
        f"Timed {first:%H:%M}-{last:%H:%M} UTC. A rolling window's partial first hour is read from the ledger "
        f"and lasts from its start to the next whole hour: here {lengths}, the same in every rolling window."
    )


def _statements(queries: list[str]) -> str:
    """How many statements, not counting BEGIN and COMMIT."""
    return str(sum(1 for sql in queries if sql not in ("BEGIN", "COMMIT"))) + " + BEGIN/COMMIT"


def _short(sql: str) -> str:
    sql = " ".join(sql.split())
    tail = " ... FOR UPDATE" if sql.endswith("FOR UPDATE") else ""
    return sql if len(sql) <= 110 else sql[:100] + (tail or "...")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="timed reservations per ledger (default 2000)")
    parser.add_argument("--blocks", type=int, default=5, help="alternating blocks they are split into (default 5)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed runs before each block's timed ones")
    parser.add_argument(
        "--diagnostic-count", type=int, default=100, help="timed Usage.load and raw-SQL runs per block (default 100)"
    )
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of the quota sums")
    parser.add_argument("--no-write", action="store_true", help="print the results without touching BENCHMARKS.md")
    args = parser.parse_args()
    args.load_before = os.getloadavg()[0]
    if connection.vendor != "postgresql":
        sys.exit("bench/quota_reserve.py needs PostgreSQL: set DATABASE_URL.")

    empty_ledger = Ledger("empty (0 rows)", "bench_empty", rows_kept=0)
    loaded = Ledger(f"loaded ({TOTAL_ROWS:,} rows)", "bench_loaded", rows_kept=TOTAL_ROWS)
    prepare(empty_ledger)
    empty(empty_ledger)
    prepare(loaded)
    data = load(loaded)
    print(f"data set: {data}", flush=True)

    args.timed_from = timezone.now()
    for block in range(args.blocks):
        # Alternate which ledger goes first, so neither always follows the other.
        order = (empty_ledger, loaded) if block % 2 == 0 else (loaded, empty_ledger)
        for ledger in order:
            run_block(
                ledger, count=args.count // args.blocks, diagnostic_count=args.diagnostic_count, warmup=args.warmup
            )
        print(f"block {block + 1}/{args.blocks} done", flush=True)
    args.timed_to = timezone.now()
    explain(empty_ledger, verbose=args.explain)
    explain(loaded, verbose=args.explain)

    text = report(empty_ledger, loaded, data=data, args=args)
    print("\n" + text)
    if not args.no_write:
        common.write_section(SECTION, text)
        print(f"written to {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()

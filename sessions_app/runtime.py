"""The runtime of replies: tasks on the event loop, the registry of live replies, notifications between servers.

Every reply runs as an asyncio task on one long-lived loop per process: the ASGI worker's
own loop (chatsite.asgi starts the runtime from the server's lifespan), or, where there is
no such loop (WSGI, the test client, management commands), a loop on a thread of its own.
A reply holds no database connection while it waits on the upstream or on a client: every
database call goes through `db()`, which borrows a pooled connection on a small thread pool
and gives it back at once.

What other servers must see lives in PostgreSQL; LISTEN/NOTIFY only wakes them:
- `stop:<pk>`            a stop made anywhere; the server running the reply ends it;
- `follow:<pk>:<offset>` someone on another server follows the reply from `offset`;
                         its server answers with the text from there, then every new piece;
- `piece:<pk>:<offset>:<text>` and `end:<pk>` for those followers.
Without PostgreSQL (SQLite, one process), or while the listening connection is down,
the same things are found by reading the database a few times a second.

The domain (states, charges, the finish) is `lifecycle.py`; this module only runs it.
"""

import asyncio
import contextlib
import contextvars
import logging
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, InterfaceError, OperationalError, connection, connections
from django.utils import timezone

from chatbots.providers import get_provider
from chatbots.providers.base import Usage
from chatsite.errors import ChatsiteError, Interrupted, TooManyStreams, UpstreamError, UpstreamTimeout
from sessions_app import lifecycle
from sessions_app.lifecycle import Finished, Outcome, ReplyJob
from sessions_app.models import ChatMessage

logger = logging.getLogger(__name__)
Status = ChatMessage.Status

CHANNEL = "chatsite"
# NOTIFY payloads are limited to 8000 bytes; longer text goes in several.
NOTIFY_TEXT_BYTES = 7000
# While a reply grows, its new text is saved this often (one statement for all the
# replies of a process), so a crash loses at most this much of it.
FLUSH_SECONDS = 0.5
# Replies running here are marked alive this often; one unmarked for lifecycle.ORPHANED_AFTER
# has no server left, and whoever waits for it ends it.
HEARTBEAT_SECONDS = 10.0
# Stops made elsewhere are looked for in the database this often without notifications, and
# every REPLY_RECHECK_SECONDS with them (in case one was lost while the listener reconnected).
STOP_POLL_SECONDS = 0.5
# A follower on another server re-reads the database every REPLY_RECHECK_SECONDS while
# notifications are silent (they carry the pieces; this catches a missed one and a dead
# server), and this often without notifications.
FOLLOW_POLL_SECONDS = 0.25
# A finish that cannot reach the database is tried again for this long.
FINISH_RETRY_SECONDS = 30.0
LISTEN_RETRY_SECONDS = 1.0
# At shutdown, the replies ended at once get this long to save themselves.
FINISH_AT_SHUTDOWN_SECONDS = 5.0


# Database calls from the loop.

_executor: ThreadPoolExecutor | None = None


def _db_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=settings.DB_THREADS, thread_name_prefix="chatsite-db")
    return _executor


def connections_release() -> None:
    """Give this thread's database connections back (to the pool, where there is one)."""
    for opened in connections.all(initialized_only=True):
        # Inside a transaction (a test's, or a caller's atomic block) the connection stays.
        if not opened.in_atomic_block:
            opened.close()


def sync_step(fn: Callable) -> Callable:
    """`fn` as an awaitable step of an async view: run in the request's thread, its connections given back after."""

    def releasing(*args, **kwargs):
        return _call_releasing(fn, args, kwargs)

    return sync_to_async(releasing)


def _call_releasing(fn: Callable, args: tuple, kwargs: dict) -> Any:
    try:
        return fn(*args, **kwargs)
    finally:
        with contextlib.suppress(DatabaseError):
            connections_release()


async def db(fn: Callable, /, *args, **kwargs) -> Any:
    """Run a database function off the loop and give its connection back at once.

    On the runtime's loop it runs on a small pool of threads (DB_THREADS), so a process
    never holds more connections than that for its replies. Elsewhere (a view run by the
    test client through async_to_sync) it runs in the calling thread, inside its transaction.
    """
    loop = asyncio.get_running_loop()
    if loop is _runtime.loop:
        return await loop.run_in_executor(_db_executor(), _call_releasing, fn, args, kwargs)
    return await sync_to_async(fn, thread_sensitive=True)(*args, **kwargs)


# Live replies.


class LiveReply:
    """A reply running in this process: its text so far, for followers to wait on."""

    def __init__(self, job: ReplyJob) -> None:
        self.job = job
        self.pk = job.reply_pk  # None: a call with no message (the OpenAI-compatible API)
        # Its key among the live replies: a call with no message goes by its reservation, negated.
        self.key = self.pk if self.pk is not None else -job.event.pk
        self.user_id = job.user_id
        self.content = ""
        self.image_url = ""
        self.image: bytes | None = None  # a generated image's bytes, kept for a call with no chat
        self.outcome: Outcome | None = None
        self.flushed_to = 0  # the text before this offset is saved as pieces
        self.finishing = False  # the finish has begun: no more pieces are written
        self.finished = False
        self.result: Finished | None = None
        self.title: str | None = None
        self.stop_requested = False
        self.interrupted = False
        self.remote_followers = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task | None = None
        self.upstream: asyncio.Task | None = None
        # Who waits for the next text, each with when it gives up; one timer for all of them.
        self._waiters: list[tuple[asyncio.Future, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._cancelled = False

    def append(self, text: str) -> None:
        start = len(self.content)
        self.content += text
        self._wake()
        if self.remote_followers:
            _runtime.publish_text(self.pk, start, text)

    def end(self) -> None:
        self.finished = True
        self._wake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.remote_followers:
            _runtime.publish(f"end:{self.pk}")

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter, _ in waiters:
            _resolve(waiter, True)

    async def wait(self, offset: int, timeout: float) -> bool:
        """Wait until there is text past `offset` or the reply has ended; False after `timeout` seconds.

        Called on the reply's loop, once per piece of every stream that follows it. One timer
        serves all of its waits: it is moved only when it fires before the first of them gives up
        (a wait normally ends with the next piece, long before), not set and cancelled at each.
        """
        if len(self.content) > offset or self.finished:
            return True
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        deadline = loop.time() + timeout
        self._waiters.append((waiter, deadline))
        if self._timer is None or self._timer.when() > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(deadline, self._expire, loop)
        return await waiter

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give up the waits whose time is over; set the timer again for the next one to end."""
        self._timer = None
        now, waiting = loop.time(), []
        for waiter, deadline in self._waiters:
            if waiter.done():
                continue  # its stream went away
            if deadline <= now:
                waiter.set_result(False)
            else:
                waiting.append((waiter, deadline))
        self._waiters = waiting
        if waiting:
            self._timer = loop.call_at(min(deadline for _, deadline in waiting), self._expire, loop)

    def stop(self, *, interrupted: bool = False) -> None:
        """End the upstream call (from any thread); the reply then finishes as stopped, or interrupted."""
        self.stop_requested = not interrupted or self.stop_requested
        self.interrupted = self.interrupted or interrupted
        if self.loop is None or self.upstream is None or self._cancelled:
            return  # not started yet (_generate looks at the flags first), or cancelled already
        # Once only: a second cancel() of a task that is unwinding the first can be taken by
        # the HTTP client's own cancel scopes for theirs, and the call would go on.
        self._cancelled = True
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.upstream.cancel()
        else:
            with contextlib.suppress(RuntimeError):  # its loop has closed: it ended meanwhile
                self.loop.call_soon_threadsafe(self.upstream.cancel)


def _resolve(waiter: asyncio.Future, value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


_live: dict[int, LiveReply] = {}


def live_get(reply_pk: int) -> LiveReply | None:
    """The reply's run if it is in this process."""
    return _live.get(reply_pk)


def live_on_this_loop(reply_pk: int) -> LiveReply | None:
    live = _live.get(reply_pk)
    if live is None:
        return None
    try:
        return live if live.loop is asyncio.get_running_loop() else None
    except RuntimeError:
        return None


def reply_stop_local(reply_pk: int) -> bool:
    """Stop this process's run of the reply; False if it does not run here."""
    live = _live.get(reply_pk)
    if live is None:
        return False
    live.stop()
    return True


# Running a reply.


async def _produce(live: LiveReply) -> Usage | None:
    job = live.job
    provider = get_provider(job.model)
    if job.is_image:
        image = await provider.generate_image(model=job.model, prompt=job.prompt)
        if live.pk is None:
            live.image = image.png
        live.image_url = await db(_store_image, job.session_pk, image.png, image.content_type)
        return Usage(image.prompt_tokens, 0, image.cost_usd)
    usage = None
    stream = provider.stream(model=job.model, messages=job.messages, options=job.options)
    try:
        async for event in stream:
            if event.usage is not None:
                usage = event.usage
            if event.text:
                live.append(event.text)
    finally:
        await stream.aclose()  # hangs up on the upstream, also when cancelled mid-read
    return usage


IMAGE_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


def _store_image(session_pk: int | None, data: bytes, content_type: str) -> str:
    extension = IMAGE_EXTENSIONS.get(content_type, "png")
    folder = session_pk if session_pk is not None else "api"
    name = default_storage.save(f"generated/{folder}/{time.time_ns():x}.{extension}", ContentFile(data))
    return default_storage.url(name)


async def _generate(live: LiveReply) -> Outcome:
    """Call the upstream; say what happened, never raise."""
    usage, error = None, None
    live.upstream = asyncio.get_running_loop().create_task(_produce(live))
    if live.stop_requested or live.interrupted:
        live.upstream.cancel()  # stopped before it began
    try:
        usage = await live.upstream
    except asyncio.CancelledError:
        if not live.upstream.cancelled():
            raise  # this task itself was cancelled, not its upstream call
    except ChatsiteError as exc:
        error = exc
    except Exception as exc:
        logger.exception("reply %s failed", live.pk)
        error = UpstreamError()
        error.__cause__ = exc
    if live.interrupted:
        error = Interrupted()
    elif live.stop_requested:
        error = None  # the hang-up of a stop, not a failure
    return Outcome(
        content=live.content,
        image_url=live.image_url,
        usage=usage,
        stopped=live.stop_requested and not live.interrupted,
        error=error,
        flushed=live.flushed_to > 0,
    )


async def _finish(live: LiveReply, outcome: Outcome) -> Finished:
    """Finish the reply, waiting for the database while it is away; the finish is safe to run twice."""
    async with _runtime.write_lock():
        live.finishing = True  # the flusher writes no more pieces of it
    deadline = time.monotonic() + FINISH_RETRY_SECONDS
    pause = 0.1
    while True:
        try:
            return await db(lifecycle.reply_finish, job=live.job, outcome=outcome, touch=True, title=live.title)
        except (OperationalError, InterfaceError):
            if time.monotonic() + pause > deadline:
                raise
            logger.warning("reply %s: the database is unavailable; finishing again in %.1f s", live.pk, pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


async def _run(live: LiveReply) -> Finished | None:
    """Run a begun reply to its end: call the upstream, save the text, settle or release the usage."""
    from sessions_app.titles import title_summarize

    live.loop = asyncio.get_running_loop()
    _runtime.ensure_started()
    try:
        outcome = await _generate(live)
        live.outcome = outcome
        job = live.job
        # Named in the finish's transaction, so `done` can carry the chat's new title.
        if job.title_from is not None and (outcome.error is None or outcome.produced):
            live.title = await title_summarize(job.title_from)
        finished = await _finish(live, outcome)
        live.result = finished
        return finished
    except Exception:
        logger.exception("reply %s: its finish failed; the reaper ends it", live.pk)
        return None
    finally:
        _live.pop(live.key, None)
        live.end()


def _register(job: ReplyJob) -> LiveReply:
    live = LiveReply(job)
    _live[live.key] = live
    return live


def reply_start(job: ReplyJob) -> LiveReply:
    """Run a begun reply as a task on the runtime's loop and return at once; it runs to its end without a client."""
    live = _register(job)
    loop = _runtime.ensure_loop()
    if _running_loop() is loop:
        live.task = loop.create_task(_run(live), context=contextvars.Context())
    else:
        asyncio.run_coroutine_threadsafe(_run(live), loop)
    return live


async def reply_run_here(job: ReplyJob) -> Finished | None:
    """Run a begun reply as a task on this loop and wait for its end; a caller that goes away leaves it running."""
    return (await reply_run_live(job)).result


async def reply_run_live(job: ReplyJob) -> LiveReply:
    """`reply_run_here`, returning the run itself: its text, image and outcome as well as its result."""
    live = _register(job)
    loop = asyncio.get_running_loop()
    # A context of its own: the reply is nobody's request.
    live.task = loop.create_task(_run(live), context=contextvars.Context() if loop is _runtime.loop else None)
    await asyncio.shield(live.task)
    return live


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def reply_wait(reply_pk: int) -> None:
    """Wait until a reply, run here or on another server, is no longer generating; end it if its server died."""
    live = live_on_this_loop(reply_pk)
    if live is not None and live.task is not None:
        await asyncio.shield(live.task)
        return
    while _live.get(reply_pk) is not None:  # runs in this process, on the runtime's loop
        await asyncio.sleep(0.02)
    while True:
        reply = await db(lambda: ChatMessage.objects.filter(pk=reply_pk).only("status", "updated_at").first())
        if reply is None or reply.status != Status.GENERATING:
            return
        orphaned = lifecycle.reply_orphaned(reply) and _live.get(reply_pk) is None
        if orphaned and await db(lifecycle.reply_reap, reply_pk):
            continue
        await asyncio.sleep(FOLLOW_POLL_SECONDS)


async def reply_complete(*, reply: ChatMessage, job: ReplyJob | None) -> ChatMessage:
    """Run a begun reply here (or wait for an earlier run of it) and return it; raise its error if it failed."""
    reply_pk_waited = reply.pk
    if job is not None:
        finished = await reply_run_here(job)
        reply = finished.reply if finished is not None else None
    else:
        await reply_wait(reply.pk)
        reply = None
    if reply is None:  # a replay, its chat deleted meanwhile, or a finish that failed
        reply_pk = job.reply_pk if job is not None else reply_pk_waited
        reply = await db(lambda: ChatMessage.objects.select_related("ai_model").get(pk=reply_pk))
    if reply.status == Status.FAILED:
        error_class = UpstreamTimeout if reply.error_code == UpstreamTimeout.code else UpstreamError
        raise error_class(reply.error_detail or None)
    return reply


def reply_complete_blocking(*, reply: ChatMessage, job: ReplyJob | None) -> ChatMessage:
    """`reply_complete` for synchronous callers (tests, commands): no connection is held meanwhile."""
    connections_release()
    return _blocking(reply_complete(reply=reply, job=job))


def _blocking(coroutine):
    """Run a coroutine from synchronous code and return its result."""
    from asgiref.sync import async_to_sync

    if _running_loop() is None:

        async def run():
            return await coroutine

        return async_to_sync(run)()
    # A loop runs in this thread already (a test driving a browser): run it on the runtime's.
    return asyncio.run_coroutine_threadsafe(coroutine, _runtime.ensure_loop()).result()


# Fair shares.

_follows: Counter[int] = Counter()
_follows_lock = threading.Lock()


@contextlib.contextmanager
def follow_slot(user_id: int) -> Iterator[None]:
    """Hold one of the user's open follow streams in this process, or raise TooManyStreams."""
    with _follows_lock:
        if _follows[user_id] >= settings.MAX_FOLLOW_STREAMS_PER_USER:
            raise TooManyStreams(
                f"You have {settings.MAX_FOLLOW_STREAMS_PER_USER} replies open already; close one first."
            )
        _follows[user_id] += 1
    try:
        yield
    finally:
        with _follows_lock:
            _follows[user_id] -= 1
            if _follows[user_id] <= 0:
                del _follows[user_id]


# The runtime itself: its loop, the flusher and the listener.


class _Runtime:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.listening = False
        self.tasks: list[asyncio.Task] = []
        self._lock = threading.Lock()
        self._write_lock: asyncio.Lock | None = None
        self._outbox: list[str] = []
        self._outbox_ready: asyncio.Event | None = None
        self.subscribers: dict[int, set[asyncio.Queue]] = defaultdict(set)

    # The loop.

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make `loop` (the ASGI worker's, or a thread's) the one replies run on."""
        from chatbots.providers.http import share_client_on

        with self._lock:
            self.loop = loop
        share_client_on(loop)

    def ensure_loop(self) -> asyncio.AbstractEventLoop:
        """The runtime's loop, started on a thread of its own if no server gave one."""
        with self._lock:
            if self.loop is not None and not self.loop.is_closed():
                return self.loop
            ready = threading.Event()
            loop = asyncio.new_event_loop()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            self.thread = threading.Thread(target=run, name="chatsite-replies", daemon=True)
            self.thread.start()
            ready.wait()
        self.attach(loop)
        return loop

    def ensure_started(self) -> None:
        """Start the flusher and the listener on the running loop (the runtime's), once."""
        if self.tasks or asyncio.get_running_loop() is not self.loop:
            return
        self._write_lock = asyncio.Lock()
        self._outbox_ready = asyncio.Event()
        self.tasks = [self.loop.create_task(self._write_loop(), context=contextvars.Context())]
        if _notifications_possible():
            self.tasks.append(self.loop.create_task(self._listen(), context=contextvars.Context()))
            self.tasks.append(self.loop.create_task(self._publish_loop(), context=contextvars.Context()))

    def write_lock(self) -> asyncio.Lock | contextlib.AbstractAsyncContextManager:
        if self._write_lock is None or asyncio.get_running_loop() is not self.loop:
            return contextlib.nullcontext()
        return self._write_lock

    def lives_here(self) -> list[LiveReply]:
        return [live for live in list(_live.values()) if live.loop is self.loop and live.loop is not None]

    def replies_here(self) -> list[LiveReply]:
        """The live replies of this loop that have a message: saved as they grow, marked alive, stoppable by pk."""
        return [live for live in self.lives_here() if live.pk is not None]

    # Saving text, marking replies alive, and (without notifications) looking for stops.

    async def _write_loop(self) -> None:
        last_heartbeat = time.monotonic()
        next_stop_poll = time.monotonic()
        while True:
            await asyncio.sleep(min(FLUSH_SECONDS, HEARTBEAT_SECONDS))
            try:
                await self._flush()
                lives = self.replies_here()
                if lives and time.monotonic() >= next_stop_poll:
                    next_stop_poll = time.monotonic() + (
                        settings.REPLY_RECHECK_SECONDS if self.listening else STOP_POLL_SECONDS
                    )
                    for pk in await db(_stopped_among, [live.pk for live in lives]):
                        reply_stop_local(pk)
                if time.monotonic() - last_heartbeat >= HEARTBEAT_SECONDS:
                    last_heartbeat = time.monotonic()
                    if lives:
                        await db(_mark_alive, [live.pk for live in lives])
            except (OperationalError, InterfaceError):
                logger.warning("the reply writer cannot reach the database; it tries again")
            except Exception:
                logger.exception("the reply writer failed; it goes on")

    async def _flush(self) -> None:
        async with self.write_lock():
            batch = [
                (live, len(live.content))
                for live in self.replies_here()
                if not live.finishing and len(live.content) > live.flushed_to
            ]
            if not batch:
                return
            # One statement for every reply of this process that grew since the last flush.
            pieces = [(live.pk, live.flushed_to, live.content[live.flushed_to : end]) for live, end in batch]
            await db(lifecycle.pieces_append, pieces)
            for live, end in batch:
                live.flushed_to = end

    # Notifications.

    def publish(self, payload: str) -> None:
        """Send a notification to every server (from the loop); sent in order, batched."""
        if self._outbox_ready is None:
            return
        self._outbox.append(payload)
        self._outbox_ready.set()

    def publish_text(self, reply_pk: int, start: int, text: str) -> None:
        for offset, part in _split_for_notify(start, text):
            self.publish(f"piece:{reply_pk}:{offset}:{part}")

    async def _publish_loop(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, []
            try:
                await db(notify_many, batch)
            except (OperationalError, InterfaceError):
                logger.warning("notifications could not be sent; followers elsewhere read the database")
            except Exception:
                logger.exception("notifications could not be sent")

    async def _listen(self) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(_listen_conninfo(), autocommit=True) as listener:
                    await listener.execute(f"LISTEN {CHANNEL}")
                    self.listening = True
                    async for notice in listener.notifies():
                        self._dispatch(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.listening:
                    logger.warning("the notification listener lost its connection (%s); it reconnects", exc)
            finally:
                self.listening = False
            await asyncio.sleep(LISTEN_RETRY_SECONDS)

    def _dispatch(self, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        pk_text, _, rest = rest.partition(":")
        if not pk_text.isdecimal():
            return
        pk = int(pk_text)
        if kind == "stop":
            reply_stop_local(pk)
        elif kind == "follow":
            live = _live.get(pk)
            if live is not None and live.loop is self.loop and not live.finished:
                live.remote_followers = True
                offset = int(rest) if rest.isdecimal() else 0
                self.publish_text(pk, offset, live.content[offset:])
        elif kind in ("piece", "end"):
            for queue in self.subscribers.get(pk, ()):
                queue.put_nowait((kind, rest))

    @contextlib.contextmanager
    def subscription(self, reply_pk: int) -> Iterator[asyncio.Queue]:
        queue: asyncio.Queue = asyncio.Queue()
        self.subscribers[reply_pk].add(queue)
        try:
            yield queue
        finally:
            self.subscribers[reply_pk].discard(queue)
            if not self.subscribers[reply_pk]:
                del self.subscribers[reply_pk]

    # Shutting down.

    async def stop(self, *, grace: float) -> None:
        """Let the replies of this loop finish for up to `grace` seconds, end the rest at once, then stop."""
        lives = self.lives_here()
        tasks = [live.task for live in lives if live.task is not None]
        if tasks:
            logger.info("waiting up to %.0f s for %d replies to finish", grace, len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                logger.warning("ending %d replies still running after %.0f s", len(pending), grace)
                for live in self.lives_here():
                    live.stop(interrupted=True)
                await asyncio.wait(pending, timeout=FINISH_AT_SHUTDOWN_SECONDS)
        await self._flush()
        if self._outbox:
            with contextlib.suppress(Exception):
                await db(notify_many, self._outbox)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        from chatbots.providers.http import close_shared_client

        await close_shared_client()

    def shutdown_thread(self, *, grace: float = 30.0) -> None:
        """Stop the loop thread started by ensure_loop (tests, management commands)."""
        loop = self.loop
        if loop is None or self.thread is None or loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.stop(grace=grace), loop).result(timeout=grace + 15)
        loop.call_soon_threadsafe(loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            loop.close()
        with self._lock:
            self.loop, self.thread = None, None
        global _executor
        if _executor is not None:
            _executor.submit(connections_release).result()
            _executor.shutdown(wait=True)
            _executor = None


_runtime = _Runtime()


def runtime() -> _Runtime:
    return _runtime


def _split_for_notify(start: int, text: str) -> Iterator[tuple[int, str]]:
    offset, part, size = start, [], 0
    for character in text:
        width = len(character.encode("utf-8", "surrogatepass"))
        if size + width > NOTIFY_TEXT_BYTES:
            yield offset, "".join(part)
            offset, part, size = offset + len(part), [], 0
        part.append(character)
        size += width
    if part or not text:
        yield offset, "".join(part)


def _notifications_possible() -> bool:
    return connection.vendor == "postgresql"


def listener_name() -> str:
    """The listener's application_name in pg_stat_activity: which process it belongs to."""
    return f"chatsite listener {os.getpid()}"


def _listen_conninfo() -> str:
    """Where the listener connects: LISTEN needs a session of its own (not a PgBouncer transaction)."""
    import psycopg.conninfo

    from chatsite.database import conninfo

    base = settings.DATABASE_LISTEN_URL or conninfo()
    return psycopg.conninfo.make_conninfo(base, application_name=listener_name())


def notify(payload: str) -> None:
    """Notify every server, when the caller's transaction commits (PostgreSQL only)."""
    if _notifications_possible():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload])


def notify_many(payloads: list[str]) -> None:
    if payloads and _notifications_possible():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_notify(%s, payload) FROM unnest(%s::text[]) WITH ORDINALITY AS p(payload, n) ORDER BY n",
                [CHANNEL, payloads],
            )


def _stopped_among(pks: list[int]) -> list[int]:
    return list(ChatMessage.objects.filter(pk__in=pks, status=Status.STOPPED).values_list("pk", flat=True))


def _mark_alive(pks: list[int]) -> None:
    ChatMessage.objects.filter(pk__in=pks, status=Status.GENERATING).update(updated_at=timezone.now())


# Following a reply from any server.


async def follow_remote(reply_pk: int, offset: int) -> AsyncIterator[tuple[str, Any]]:
    """Yield ("text", str) pieces of a reply that runs elsewhere, then return when it has ended.

    Reads the database first and whenever notifications fall silent; between reads the
    pieces come by notification from the server that runs it.
    """
    listening = _runtime.listening and _running_loop() is _runtime.loop
    with _runtime.subscription(reply_pk) if listening else contextlib.nullcontext() as queue:
        asked_from = None
        while True:
            reply, text = await db(lifecycle.reply_read, reply_pk)
            if reply is None:
                return
            if len(text) > offset:
                yield "text", text[offset:]
                offset = len(text)
            if reply.status != Status.GENERATING:
                return
            local = live_on_this_loop(reply_pk)
            if local is not None:
                yield "local", local  # it runs here after all (or began here meanwhile)
                return
            if lifecycle.reply_orphaned(reply) and _live.get(reply_pk) is None:
                await db(lifecycle.reply_reap, reply_pk)
                continue  # read how it ended
            if queue is None:
                yield "idle", None
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
                continue
            if asked_from != offset:
                await db(notify, f"follow:{reply_pk}:{offset}")
                asked_from = offset
            while True:
                try:
                    kind, rest = await asyncio.wait_for(queue.get(), settings.REPLY_RECHECK_SECONDS)
                except TimeoutError:
                    yield "idle", None
                    break  # read the database again
                if kind == "end":
                    break
                start_text, _, piece = rest.partition(":")
                start = int(start_text) if start_text.isdecimal() else -1
                if start < 0 or start > offset:
                    asked_from = None  # a gap: ask again from where we are
                    break
                if start + len(piece) > offset:
                    yield "text", piece[offset - start :]
                    offset = start + len(piece)


# For tests and commands: wait until no reply runs in this process.


def wait_idle(timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while _live and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _live


def reply_wait_blocking(reply_pk: int) -> None:
    """`reply_wait` for synchronous callers (tests, commands)."""
    _blocking(reply_wait(reply_pk))

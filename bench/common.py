"""What the benchmarks share: the machine's description, figures, and their sections of BENCHMARKS.md."""

import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import django
import psutil
import psycopg
import requests
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
WORK = ROOT / "bench" / ".work"  # clients, samples and logs of the last run; not committed
DEFAULT_URL = "postgres://chatsite:chatsite@127.0.0.1:5432/chatsite_bench_app"
CAPACITY_SECTION = "## Capacity: streamed replies at once"  # written by bench/capacity.py
REPLIES_SECTION = "## Replies across servers"  # written by bench/replies.py


def own_database_url(name: str, *, override: str) -> str:
    """The URL of a database of its own for one benchmark: `override` from the environment, else
    BENCH_DATABASE_URL's server with the database `name`."""
    if url := os.environ.get(override):
        return url
    return urlunsplit(urlsplit(os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))._replace(path=f"/{name}"))


def setup(url: str | None = None) -> str:
    """Point this process's Django at the benchmarks' database, or `url`, (created when missing) and set it up."""
    url = url or os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    create_database(url)
    os.environ.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        SECRET_KEY=os.environ.get("SECRET_KEY") or "benchmark-only-this-process-serves-nothing",
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,testserver",
        SECURE_SSL_REDIRECT="0",
        SESSION_COOKIE_SECURE="0",
        CSRF_COOKIE_SECURE="0",
        TITLE_MODEL="",
        AI_API_KEY="",
        OPENROUTER_API_KEY="",
    )
    django.setup()
    WORK.mkdir(parents=True, exist_ok=True)
    return url


def create_database(url: str) -> None:
    """Create the database of `url` through the server's `postgres` database, unless it exists."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
        cursor.execute("SHOW synchronous_commit")
        sync = cursor.fetchone()[0]
    cpus = len(os.sched_getaffinity(0))
    return (
        f"{cpus} CPUs (nproc), {model}; PostgreSQL {pg} on 127.0.0.1 (synchronous_commit {sync}); "
        f"Python {platform.python_version()}, Django {django.get_version()}, {platform.system()} {platform.release()}"
    )


def load_average() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urlunsplit(parts)


def percentiles(times: list[float]) -> dict[str, float]:
    """p50, p95, p99 and mean of `times` (ms), exact over the samples."""
    if not times:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "mean": float("nan")}
    cuts = statistics.quantiles(times, n=100, method="inclusive") if len(times) > 1 else [times[0]] * 99
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "mean": statistics.fmean(times)}


def nearest_rank(values: list[float], q: float) -> float:
    """The smallest value at or above which a fraction q of `values` lies (math.inf counts as endless)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def write_section(heading: str, text: str, *, before: str | None = None) -> None:
    """Replace the section under `heading` (up to the next "## ") in BENCHMARKS.md, or add it.

    A new section goes in front of the section headed `before` when there is one, else at the end.
    """
    current = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    section = text.rstrip() + "\n"
    if heading in current:
        head, rest = current.split(heading, 1)
        following = rest.find("\n## ")
        current = head + section + (rest[following + 1 :] if following >= 0 else "")
    elif before and before in current:
        head, rest = current.split(before, 1)
        current = head + section + "\n" + before + rest
    else:
        current = current.rstrip() + "\n\n" + section
    BENCHMARKS.write_text(current.rstrip() + "\n")


class Process:
    """A server or upstream in a process group of its own, its output in bench/.work/<name>.log."""

    def __init__(self, name: str, command: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.name, self.command, self.cwd, self.env = name, command, cwd, env
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        with open(WORK / f"{self.name}.log", "wb") as log:
            self.popen = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self) -> str:
        return (WORK / f"{self.name}.log").read_text(errors="replace")[-3000:]

    def wait_ready(self, url: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode} while starting:\n{self.log()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready at {url} within {seconds:.0f} s:\n{self.log()}")

    def workers(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.popen.pid).children(recursive=True)
        return []

    def stop(self) -> None:
        """SIGTERM (a graceful stop), SIGKILL to the whole group if it lingers; return once none of it is left."""
        if self.popen is None:
            return
        group = self.popen.pid  # start_new_session: the group id is the first process's pid
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _kill_group(group)
                self.popen.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _group_alive(group):
            if time.monotonic() > deadline:
                _kill_group(group)
                deadline = time.monotonic() + 10
            time.sleep(0.1)


def _group_alive(group: int) -> bool:
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if process.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(process.pid) == group:
                return True
    return False


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


class Upstream:
    """A local OpenAI-compatible upstream process whose chat replies are `pieces` time-stamped pieces."""

    def __init__(self, name: str, *, pieces: int, delay: float) -> None:
        from chatsite.testing.appserver import free_port

        self.name = name
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/v1"
        self.args = ["--port", str(port), "--stamped", str(pieces), "--delay", str(delay), "--no-record"]
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(WORK / f"upstream-{self.name}.log", "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "chatsite.testing.upstream", *self.args],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(f"{self.url}/models", timeout=1).raise_for_status()
                return
            except requests.RequestException:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"the {self.name} upstream did not start; see its log in bench/.work/") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class Servers:
    """gunicorn with production settings and two local upstreams, on loopback ports.

    The `instant` upstream answers at once (8 pieces back to back): what a send's own cost is
    measured against. The `paced` one streams its 8 pieces `delay` seconds apart, as a model
    writes, so each piece's way through chatsite can be timed on its own.
    """

    def __init__(self, *, pieces: int = 8, delay: float = 0.02) -> None:
        from chatsite.testing.appserver import AppServer, production_env

        self.instant = Upstream("instant", pieces=pieces, delay=0)
        self.paced = Upstream("paced", pieces=pieces, delay=delay)
        media = WORK / "media"
        media.mkdir(exist_ok=True)
        # The same SECRET_KEY as this process, which signs the clients' sessions.
        env = production_env(media, SECRET_KEY=os.environ["SECRET_KEY"])
        self.app = AppServer(name="gunicorn", env=env, log_dir=WORK)

    def __enter__(self) -> "Servers":
        try:
            self.instant.start()
            self.paced.start()
            self.app.start()
            self.app.wait_ready(time.monotonic() + 30)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.app.stop()
        self.instant.stop()
        self.paced.stop()

    def worker_rss(self) -> int:
        """Resident memory of gunicorn's workers now, bytes."""
        total = 0
        for child in psutil.Process(self.app.process.pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += child.memory_info().rss
        return total


def run_locust(user_class: str, *, host: str, clients_file: Path, users: int, seconds: float, pace: float = 0,
               record: Path | None = None, work: Path = WORK) -> dict:  # fmt: skip
    """Run one locust scenario headless; return its samples {name: [ms]} and errors {what: count}.

    Its samples and log go to `work`.
    """
    samples = work / f"samples-{user_class}.json"
    samples.unlink(missing_ok=True)
    env = {
        **os.environ, "BENCH_CLIENTS": str(clients_file), "BENCH_PACE": str(pace), "BENCH_SAMPLES": str(samples),
        **({"BENCH_RECORD": str(record)} if record else {}),
    }  # fmt: skip
    command = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
        "--host", host, "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--stop-timeout", "30",
        "--only-summary", "--loglevel", "WARNING", user_class,
    ]  # fmt: skip
    log_path = work / f"locust-{user_class}.log"
    with open(log_path, "wb") as log:
        subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if not samples.exists():
        raise RuntimeError(f"locust wrote no samples; its log {log_path}:\n{log_path.read_text()[-3000:]}")
    return json.loads(samples.read_text())


def order_sections(headings: list[str]) -> None:
    """Put BENCHMARKS.md's sections in the order of `headings`; others keep their place after them."""
    text = BENCHMARKS.read_text()
    head, *sections = text.split("\n## ")
    sections = ["## " + section.strip() for section in sections]
    placed = [s for heading in headings for s in sections if s.split("\n", 1)[0] == heading]
    rest = [s for s in sections if s not in placed]
    BENCHMARKS.write_text("\n\n".join([head.strip(), *placed, *rest]) + "\n")

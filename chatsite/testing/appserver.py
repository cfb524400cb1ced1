"""Real app servers (gunicorn, uvicorn workers) for tests and benchmarks, on their database with production settings."""

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import requests
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
BOOT_SECONDS = 20


class ServerError(RuntimeError):
    """An app server that exited or did not answer while starting."""


class AppServer:
    """One gunicorn process group on 127.0.0.1 serving the test database; its output goes to files."""

    def __init__(self, *, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        self.env = {**env, "GUNICORN_BIND": f"127.0.0.1:{self.port}"}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            # A session of its own: the group id is the master's pid, so stop() reaches its workers too.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "chatsite.asgi:application"],
                cwd=ROOT, env=self.env, stdout=stdout, stderr=stderr, start_new_session=True,
            )  # fmt: skip

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-5000:]

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.process.returncode} while starting:\n{self.stderr()}")
            try:
                if requests.get(f"{self.url}/health/ready/", timeout=1).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or listening while its workers still boot
            time.sleep(0.1)
        raise ServerError(f"{self.name} was not ready on {self.url} within {BOOT_SECONDS} s:\n{self.stderr()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # gunicorn's graceful shutdown: workers finish and close their connections
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url() -> str:
    db = connection.settings_dict
    credentials = f"{quote(db['USER'], safe='')}:{quote(db['PASSWORD'], safe='')}@"
    return f"postgres://{credentials}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{quote(db['NAME'], safe='')}"


def production_env(media_root: Path, **overrides: str) -> dict[str, str]:
    """The environment of an app server on the test database with production settings."""
    return {
        # Not the browser tests' async-unsafe allowance: these servers run as in production.
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "DATABASE_URL": database_url(),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        "STATICFILES_STORAGE": "django.contrib.staticfiles.storage.StaticFilesStorage",
        "DEMO_STREAM_DELAY": "0",
        "AI_API_KEY": "",
        "OPENROUTER_API_KEY": "",
        "TITLE_MODEL": "",
        "MEDIA_ROOT": str(media_root),
        "GUNICORN_GRACEFUL_TIMEOUT": "5",
        **overrides,
    }


def other_connections() -> int:
    """Connections to the test database besides this process's own (and its reply runtime's listener)."""
    from sessions_app.runtime import listener_name

    with connection.cursor() as cursor:
        cursor.execute(
            # Clients only: an autovacuum worker in the database is no one's connection.
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' AND application_name <> %s",
            [listener_name()],
        )
        return cursor.fetchone()[0]


@contextlib.contextmanager
def serving(*servers: AppServer) -> Iterator[None]:
    """Start the servers, wait until each is ready (all within BOOT_SECONDS), and stop them all on exit, their
    database connections gone."""
    try:
        for server in servers:
            server.start()
        deadline = time.monotonic() + BOOT_SECONDS
        for server in servers:
            server.wait_ready(deadline)
        yield
    finally:
        for server in servers:
            server.stop()
        wait_connections_gone()


def wait_connections_gone(timeout: float = 10) -> None:
    """PostgreSQL ends a backend a moment after its client goes; the test database is dropped later."""
    deadline = time.monotonic() + timeout
    while other_connections() and time.monotonic() < deadline:
        time.sleep(0.1)


def sign_in(base_url: str, email: str, password: str) -> dict[str, str]:
    """Sign in over HTTP; return the cookies (session and the CSRF token rotated by the login)."""
    with requests.Session() as http:
        http.get(f"{base_url}/api/auth/csrf/", timeout=10).raise_for_status()
        response = http.post(
            f"{base_url}/api/auth/login/",
            json={"email": email, "password": password},
            headers={"X-CSRFToken": http.cookies["csrftoken"]},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return http.cookies.get_dict()


def http_session(cookies: dict[str, str]) -> requests.Session:
    """A requests session with these cookies that sends their CSRF token."""
    http = requests.Session()
    http.cookies.update(cookies)
    http.headers["X-CSRFToken"] = cookies["csrftoken"]
    return http

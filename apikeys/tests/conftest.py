import time

import pytest
from django.db import connection

from chatsite.testing.appserver import BOOT_SECONDS, AppServer, production_env, wait_connections_gone
from chatsite.testing.upstream import StubUpstream


@pytest.fixture(scope="module")
def module_upstream():
    """One real OpenAI-compatible stub for a module's app server; each test scripts (and drains) its own replies."""
    with StubUpstream() as stub:
        yield stub


@pytest.fixture(scope="module")
def app_server(django_db_setup, django_db_blocker, module_upstream, tmp_path_factory):
    """A real app server (gunicorn, one uvicorn worker, production settings) on the test database, for a module."""
    if connection.vendor != "postgresql":
        pytest.skip("The live app server runs on PostgreSQL.")
    log_dir = tmp_path_factory.mktemp("v1-server")
    with django_db_blocker.unblock():
        env = production_env(
            log_dir / "media",
            GUNICORN_WORKERS="1",
            AI_BASE_URL=module_upstream.base_url,
            AI_API_KEY="test-key",
            AI_RETRY_BACKOFF="0",
            AI_TIMEOUT="1",
        )
    server = AppServer(name="v1", env=env, log_dir=log_dir)
    try:
        server.start()
        server.wait_ready(time.monotonic() + BOOT_SECONDS)
        yield server
    finally:
        server.stop()
        with django_db_blocker.unblock():
            wait_connections_gone()


@pytest.fixture
def stub(module_upstream):
    module_upstream.requests.clear()
    yield module_upstream
    while module_upstream.queued:
        module_upstream._take()  # a test's leftovers never answer the next one

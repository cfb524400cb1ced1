"""The ASGI worker's start: its URLconf loaded and its garbage collector set for serving thousands of replies."""

import gc
import time

import pytest
from django.db import connection

from chatsite.asgi import COLLECTOR_THRESHOLDS, collector_tune
from chatsite.testing.appserver import AppServer, production_env, serving


@pytest.fixture
def collector_restored():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_the_collector_looks_at_young_objects_less_often_and_never_at_those_of_the_start(collector_restored):
    collector_tune()

    assert gc.get_threshold() == COLLECTOR_THRESHOLDS
    assert COLLECTOR_THRESHOLDS[0] >= 10_000  # Python's default is 700
    # Everything alive now (the whole of Django, here) is out of the collector's sight.
    assert gc.get_freeze_count() > 10_000


@pytest.mark.skipif(connection.vendor != "postgresql", reason="App servers run on PostgreSQL.")
@pytest.mark.django_db(transaction=True)
def test_every_worker_sets_its_collector_as_it_starts(tmp_path):
    server = AppServer(name="collector", env=production_env(tmp_path / "media", GUNICORN_WORKERS="2"), log_dir=tmp_path)
    with serving(server):
        deadline = time.monotonic() + 10
        while len(started := _collector_lines(server)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # ready once one worker answers; the other may still be starting

    assert len(started) == 2, server.stderr()
    assert all(f"thresholds {COLLECTOR_THRESHOLDS}" in line for line in started)
    # Each worker imported its views as it started (the readiness probe, /health/, resolves no URL).
    loaded = [line for line in server.stderr_path.read_text().splitlines() if "URLconf loaded:" in line]
    assert len(loaded) == 2, server.stderr()


def _collector_lines(server: AppServer) -> list[str]:
    return [line for line in server.stderr_path.read_text().splitlines() if "garbage collector:" in line]

"""What a production install carries (requirements.txt) and how `make serve` runs it."""

import ast
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
import requests
from django.conf import settings
from packaging.requirements import Requirement

from chatsite.testing.appserver import free_port

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"accounts", "billing", "bench", "chatbots", "chatsite", "sessions_app"}
# Tools of tests, benchmarks and development that nothing imports at run time. (requests is not among
# them: the official stripe client, which sells the plans, runs on it.)
NOT_RUNTIME = {
    "pytest", "pytest-django", "factory-boy", "faker", "time-machine", "playwright", "greenlet", "schemathesis",
    "hypothesis", "locust", "gevent", "geventhttpclient", "flask", "werkzeug", "granian", "psutil",
    "pyzmq", "ruff", "pip-tools",
}  # fmt: skip
# The extras requirements.in asks for.
EXTRAS = {"psycopg": {"binary"}, "whitenoise": {"brotli"}}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(path: Path) -> dict[str, str]:
    """The pins of a lock file, checking that each carries its hashes."""
    pins = {}
    # A requirement with its continuation lines (`\` at the end of a line) is one entry.
    for entry in re.split(r"(?<!\\)\n", path.read_text()):
        entry = entry.strip()
        if not entry or entry.startswith(("#", "-")):
            continue
        assert " --hash=sha256:" in entry.replace("\\\n", " "), f"{path.name}: no hash for {entry.splitlines()[0]}"
        name, _, version = entry.split(maxsplit=1)[0].partition("==")
        assert version, f"{path.name}: {name} is not pinned to one version"
        pins[normalize(name)] = version
    return pins


def runtime_modules() -> list[Path]:
    """The Python files production runs: the apps, settings and server config, without tests and test helpers."""
    files = [ROOT / "manage.py", ROOT / "gunicorn.conf.py"]
    for app in sorted(FIRST_PARTY - {"bench"}):
        files += [
            path
            for path in (ROOT / app).rglob("*.py")
            if "tests" not in path.parts and "testing" not in path.parts and path.name != "test_settings.py"
        ]
    return files


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def loaded_by_name() -> set[str]:
    """Modules the settings and the server load from dotted paths in strings, not import statements."""
    from chatsite.workers import ChatsiteWorker

    dotted = [*settings.INSTALLED_APPS, *settings.MIDDLEWARE, settings.DATABASES["default"]["ENGINE"]]
    dotted += [storage["BACKEND"] for storage in settings.STORAGES.values()]
    server = {"uvloop", "httptools"} & set(ChatsiteWorker.CONFIG_KWARGS.values())
    return {path.split(".")[0] for path in dotted} | server


def test_every_runtime_requirement_is_locked_to_one_version_with_its_hashes():
    runtime = locked(ROOT / "requirements.txt")

    assert {"django", "gunicorn", "uvicorn", "psycopg", "httpx"} <= set(runtime)


def test_no_test_benchmark_or_development_tool_is_in_the_production_install():
    runtime = locked(ROOT / "requirements.txt")

    assert sorted(NOT_RUNTIME & set(runtime)) == []


def test_the_development_lock_is_hashed_and_agrees_with_the_runtime_lock():
    runtime, dev = locked(ROOT / "requirements.txt"), locked(ROOT / "requirements-dev.txt")

    assert {"pytest", "playwright", "locust", "schemathesis", "ruff"} <= set(dev)
    # Installed together, a package the two share must have one version.
    shared = runtime.keys() & dev.keys()
    assert {name: (runtime[name], dev[name]) for name in shared if runtime[name] != dev[name]} == {}


def test_every_import_of_the_runtime_code_comes_from_a_runtime_distribution():
    runtime = locked(ROOT / "requirements.txt")
    providers = packages_distributions()
    third_party = set().union(*map(imported_names, runtime_modules()), loaded_by_name())
    third_party -= FIRST_PARTY | set(sys.stdlib_module_names)

    resolved = {name: {normalize(dist) for dist in providers.get(name, [])} for name in sorted(third_party)}

    assert "django" in resolved and "httpx" in resolved
    assert {name: dists for name, dists in resolved.items() if not dists & set(runtime)} == {}


def test_the_runtime_lock_holds_every_dependency_of_what_it_holds():
    runtime = locked(ROOT / "requirements.txt")
    missing = {}
    for name in runtime:
        try:
            declared = requires(name) or []
        except PackageNotFoundError:
            pytest.fail(f"{name} is locked but not installed here")
        for line in declared:
            requirement = Requirement(line)
            wanted = EXTRAS.get(name, set()) | {""}
            if requirement.marker and not any(requirement.marker.evaluate({"extra": extra}) for extra in wanted):
                continue
            if normalize(requirement.name) not in runtime:
                missing.setdefault(name, []).append(requirement.name)

    assert missing == {}


def make_dry_run(target: str) -> str:
    """The commands `make target` would run from scratch."""
    result = subprocess.run(
        ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )  # fmt: skip
    return result.stdout


def test_make_run_and_make_serve_install_the_runtime_set_only():
    for target in ("run", "serve", "setup"):
        commands = make_dry_run(target)
        assert "-r requirements.txt" in commands and "--require-hashes" in commands, target
        assert "requirements-dev.txt" not in commands, target


def test_make_test_and_make_bench_install_the_development_set_too():
    for target in ("test", "bench", "load", "capacity", "replies", "fuzz", "lint"):
        assert "-r requirements.txt -r requirements-dev.txt" in make_dry_run(target), target


def serve_environment(tmp_path: Path, **overrides: str) -> dict[str, str]:
    # A fresh machine: SQLite, nothing collected yet; only what the README says a try-out needs.
    ignored = {"DJANGO_ALLOW_ASYNC_UNSAFE", "DEBUG", "DATABASE_URL", "STATICFILES_STORAGE", "MAKEFLAGS", "MFLAGS"}
    env = {k: v for k, v in os.environ.items() if k not in ignored}
    return {
        **env,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "STATIC_ROOT": str(tmp_path / "staticfiles"),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "GUNICORN_WORKERS": "1",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        **overrides,
    }


def test_make_serve_refuses_to_start_without_a_secret_key(tmp_path):
    process = subprocess.Popen(
        ["make", "serve", f"PORT={free_port()}"], cwd=ROOT, env=serve_environment(tmp_path, SECRET_KEY=""),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # it started a server after all: stop all of it
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)

    assert process.returncode == 2
    assert "SECRET_KEY" in stderr


def test_make_serve_collects_static_files_and_serves_them_with_debug_off(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        # A session of its own: the group id is make's pid, so the stop below reaches gunicorn and its worker.
        process = subprocess.Popen(
            ["make", "serve", f"PORT={port}"], cwd=ROOT, env=serve_environment(tmp_path),
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if requests.get(f"{base}/health/ready/", timeout=1).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.2)
        else:
            pytest.fail(f"make serve did not answer on {base}:\n{log.read_text()[-3000:]}")

        page = requests.get(f"{base}/accounts/login/", timeout=10)
        stylesheet = re.search(r'href="(/static/[^"]+\.[0-9a-f]{12}\.css)"', page.text)
        missing = requests.get(f"{base}/no-such-page/", timeout=10)
        served = requests.get(f"{base}{stylesheet[1]}", timeout=10) if stylesheet else None
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    output = log.read_text()

    assert page.status_code == 200
    # Collected with the manifest storage: names carry their content's hash and are cached for good.
    assert stylesheet, page.text[:2000]
    assert served.status_code == 200
    assert "immutable" in served.headers["Cache-Control"]
    assert (tmp_path / "staticfiles" / "staticfiles.json").exists()
    # DEBUG is off: no technical 404 page.
    assert missing.status_code == 404
    assert "URLconf" not in missing.text
    assert "No directory at" not in output
    assert "Application startup complete" in output

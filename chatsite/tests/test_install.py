"""What a production install carries: requirements.txt, and the make targets that install it."""

import ast
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
from django.conf import settings
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"accounts", "billing", "bench", "chatbots", "chatsite", "sessions_app"}
# Tools of tests, benchmarks and development that nothing imports at run time.
NOT_RUNTIME = {
    "pytest", "pytest-django", "factory-boy", "faker", "time-machine", "playwright", "greenlet", "schemathesis",
    "hypothesis", "requests", "locust", "gevent", "geventhttpclient", "flask", "werkzeug", "granian", "psutil",
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

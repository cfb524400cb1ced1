"""Which forwarded headers the production server trusts: X-Forwarded-Proto, only when told a proxy sets it.

Real app servers (gunicorn.conf.py, uvicorn workers) on the test database, asked over HTTP
from 127.0.0.1, the address a proxy on the same machine would come from.
"""

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.db import connection

from accounts.tests.factories import PASSWORD, UserFactory
from chatsite.testing.appserver import AppServer, production_env, serving

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="gunicorn shares the test database: PostgreSQL."),
]

FORGED = [
    {"X-Forwarded-Proto": "https"},
    {"X-Forwarded-Ssl": "on"},
    {"X-Forwarded-Protocol": "ssl"},
    {"X-Forwarded-Scheme": "https"},
    {"X-Url-Scheme": "https"},
    {"Forwarded": "proto=https"},
]


@pytest.fixture
def server(request, tmp_path):
    env = production_env(tmp_path / "media", USE_X_FORWARDED_PROTO=request.param, GUNICORN_WORKERS="1")
    app = AppServer(name=f"proxy-{request.param}", env=env, log_dir=tmp_path)
    with serving(app):
        yield app


def _log_in(server: AppServer, headers: dict[str, str], email: str) -> requests.Response:
    with requests.Session() as http:
        http.get(f"{server.url}/api/auth/csrf/", headers=headers, timeout=10).raise_for_status()
        return http.post(
            f"{server.url}/api/auth/login/", json={"email": email, "password": PASSWORD},
            headers={**headers, "X-CSRFToken": http.cookies["csrftoken"], "Referer": f"{server.url}/"}, timeout=10,
        )  # fmt: skip


@pytest.mark.parametrize("server", ["0"], indirect=True)
def test_without_a_proxy_no_header_makes_plain_http_count_as_https(server, default_tier):
    user = UserFactory()
    # The servers run production settings, which do not know the tests' fast MD5 hasher.
    user.password = make_password(PASSWORD, hasher=PBKDF2PasswordHasher())
    user.save(update_fields=["password"])
    for headers in FORGED:
        response = _log_in(server, headers, user.email)
        # Taken for HTTPS, the CSRF check would refuse the plain http:// Referer (403).
        assert response.status_code == 200, (headers, response.text)
        assert "Strict-Transport-Security" not in response.headers, headers
        assert "secure" not in response.headers.get("Set-Cookie", "").lower(), headers


@pytest.mark.parametrize("server", ["1"], indirect=True)
def test_behind_a_proxy_only_x_forwarded_proto_says_https(server, default_tier):
    answer = requests.get(f"{server.url}/api/auth/csrf/", headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert "Strict-Transport-Security" in answer.headers
    for headers in FORGED[1:]:
        response = requests.get(f"{server.url}/api/auth/csrf/", headers=headers, timeout=10)
        assert "Strict-Transport-Security" not in response.headers, headers

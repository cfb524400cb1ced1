"""A local Stripe-compatible server for tests: the few endpoints chatsite calls, answered from memory.

localstripe (PyPI) has no Checkout Sessions, customer portal or Prices, which are what chatsite
uses, so this plays Stripe for them: it records every call (form-encoded, as the `stripe`
package sends them), answers in Stripe's shapes, and serves the pages a checkout or a portal
session points the browser to. Events are not sent from here: tests build and sign them
(`signed_event`), as Stripe would.
"""

import hashlib
import hmac
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

WEBHOOK_SECRET = "whsec_test_chatsite"
SECRET_KEY = "sk_test_chatsite"


def signed_event(event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, at: float | None = None) -> tuple[bytes, str]:
    """The body and Stripe-Signature header Stripe would send for `event`, signed at `at` (default now)."""
    body = json.dumps(event).encode()
    timestamp = int(time.time() if at is None else at)
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={timestamp},v1={digest}"


def event(kind: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{next(_ids)}", "object": "event", "type": kind, "created": int(time.time()),
        "livemode": False, "data": {"object": obj}, "api_version": "2026-10-28.endive",
    }  # fmt: skip


_ids = itertools.count(1)


class StripeStub:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.objects: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.stub = self
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="stripe-stub", daemon=True)

    def __enter__(self) -> "StripeStub":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def add_subscription(self, subscription_id: str, *, period_end: int, status: str = "active") -> None:
        """A subscription as GET /v1/subscriptions/{id} answers it (the period on its item, as newer API versions)."""
        self.objects[subscription_id] = {
            "id": subscription_id, "object": "subscription", "status": status, "cancel_at_period_end": False,
            "items": {"object": "list", "data": [{"id": f"si_{subscription_id}", "current_period_end": period_end}]},
        }  # fmt: skip

    def calls(self, method: str, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]

    def new(self, prefix: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            object_id = f"{prefix}_{next(_ids)}"
            self.objects[object_id] = {"id": object_id, **fields}
            return self.objects[object_id]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        stub: StripeStub = self.server.stub
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True)) if length else {}
        stub.requests.append({"method": method, "path": path, "form": form, "headers": dict(self.headers)})
        if path.startswith(("/checkout/", "/portal/")):
            kind = "Checkout" if path.startswith("/checkout/") else "Customer portal"
            page = f"<!doctype html><title>{kind}</title><h1>Stripe test {kind.lower()}</h1><p>{path}</p>"
            return self._send(200, page.encode(), "text/html")
        if not self.headers.get("Authorization", "").startswith("Bearer sk_"):
            return self._error(401, "No valid API key provided.")
        parts = path.strip("/").split("/")
        answer = self._answer(stub, method, parts, form)
        if answer is None:
            return self._error(404, f"No such resource: {path}")
        return self._send(200, json.dumps(answer).encode(), "application/json")

    def _answer(self, stub: StripeStub, method: str, parts: list[str], form: dict[str, str]) -> dict | None:
        base = stub.base_url
        match method, parts:
            case "POST", ["v1", "checkout", "sessions"]:
                metadata = {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")}
                session = stub.new(
                    "cs_test", object="checkout.session", mode=form.get("mode"), metadata=metadata,
                    client_reference_id=form.get("client_reference_id"), customer=form.get("customer"),
                    success_url=form.get("success_url"), cancel_url=form.get("cancel_url"),
                )  # fmt: skip
                session["url"] = f"{base}/checkout/{session['id']}"
                return session
            case "POST", ["v1", "billing_portal", "sessions"]:
                portal = stub.new("bps", object="billing_portal.session", customer=form.get("customer"))
                portal["url"] = f"{base}/portal/{portal['id']}"
                return portal
            case "GET", ["v1", "subscriptions", subscription_id]:
                return stub.objects.get(subscription_id)
            case "POST", ["v1", "products"]:
                return stub.new("prod", object="product", name=form.get("name"), active=True)
            case "POST", ["v1", "products", product_id] if product_id in stub.objects:
                stub.objects[product_id].update(name=form.get("name", stub.objects[product_id]["name"]))
                return stub.objects[product_id]
            case "POST", ["v1", "prices"]:
                interval = form.get("recurring[interval]")
                return stub.new(
                    "price", object="price", product=form.get("product"), currency=form.get("currency"),
                    unit_amount=int(form.get("unit_amount", 0)), active=True,
                    recurring={"interval": interval} if interval else None,
                )  # fmt: skip
            case "GET", ["v1", "prices", price_id]:
                return stub.objects.get(price_id)
            case "POST", ["v1", "prices", price_id] if price_id in stub.objects:
                if "active" in form:
                    stub.objects[price_id]["active"] = form["active"] == "true"
                return stub.objects[price_id]
        return None

    def _error(self, status: int, message: str) -> None:
        body = {"error": {"type": "invalid_request_error", "message": message}}
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

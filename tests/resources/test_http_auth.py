"""httpx.Auth flows against a loopback server: a billing-style JWT session and an ERP-style CSRF handshake."""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resources.http import ApiKeyAuth, AuthChain, CsrfToken, JwtLogin, ResilientClient, SourceError
from simulators.http_server import serve_in_thread

USER, PASSWORD, KEY = "ihub", "pa55-Word-Never-Shown", "gateway-Key-Never-Shown"


class AuthServer:
    """Billing: POST /auth/login, /auth/refresh, GET /api/bills (Bearer). ERP: GET /odata/ with
    X-CSRF-Token: Fetch, POST /odata/Orders with that token and the session cookie."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.access: set[str] = set()
        self.refresh: set[str] = set()
        self.calls: dict[str, int] = {}
        self.csrf: dict[str, str] = {}  # session cookie -> token
        self.app = Starlette(
            routes=[
                Route("/auth/login", self.login, methods=["POST"]),
                Route("/auth/refresh", self.refresh_token, methods=["POST"]),
                Route("/api/bills", self.bills),
                Route("/odata/", self.odata_root),
                Route("/odata/Orders", self.orders, methods=["GET", "POST"]),
            ]
        )

    def count(self, name: str) -> None:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def issue(self) -> dict:
        access, refresh = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        with self.lock:
            self.access.add(access)
            self.refresh.add(refresh)
        return {"access_token": access, "refresh_token": refresh, "expires_in": 600}

    async def login(self, request: Request) -> JSONResponse:
        self.count("login")
        body = await request.json()
        if (body.get("username"), body.get("password")) != (USER, PASSWORD):
            return JSONResponse({"detail": "wrong user or password"}, 401)
        return JSONResponse(self.issue())

    async def refresh_token(self, request: Request) -> JSONResponse:
        self.count("refresh")
        token = (await request.json()).get("refresh_token")
        with self.lock:
            known = token in self.refresh
            self.refresh.discard(token)
        return JSONResponse(self.issue()) if known else JSONResponse({"detail": "refresh token revoked"}, 401)

    async def bills(self, request: Request) -> JSONResponse:
        self.count("bills")
        if request.headers.get("x-api-key") != KEY:
            return JSONResponse({"detail": "gateway key missing"}, 403)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or token not in self.access:
            return JSONResponse({"detail": "token expired"}, 401)
        return JSONResponse({"bills": [{"account": "A-1", "amount_thb": 412.5}]})

    async def odata_root(self, request: Request) -> Response:
        self.count("csrf_fetch")
        if request.headers.get("x-csrf-token", "").lower() != "fetch":
            return Response(status_code=200)
        session = request.cookies.get("session") or secrets.token_urlsafe(8)
        token = secrets.token_urlsafe(12)
        with self.lock:
            self.csrf[session] = token
        response = Response(status_code=200, headers={"X-CSRF-Token": token})
        response.set_cookie("session", session)
        return response

    async def orders(self, request: Request) -> JSONResponse:
        self.count(f"orders_{request.method}")
        if request.method == "GET":
            return JSONResponse({"value": [], "csrf_sent": "x-csrf-token" in request.headers})
        with self.lock:
            expected = self.csrf.get(request.cookies.get("session", ""))
        if expected is None or request.headers.get("x-csrf-token") != expected:
            return JSONResponse({"error": "CSRF token validation failed"}, 403, headers={"X-CSRF-Token": "Required"})
        return JSONResponse({"created": (await request.json())["order"]}, 201)

    def revoke(self, refresh_too: bool = False) -> None:
        with self.lock:
            self.access.clear()
            if refresh_too:
                self.refresh.clear()

    def rotate_csrf(self) -> None:
        with self.lock:
            self.csrf.clear()


@pytest.fixture(scope="module")
def auth_server():
    server = AuthServer()
    with serve_in_thread(server.app) as running:
        running.state = server
        yield running


@pytest.fixture
def state(auth_server):
    auth_server.state.calls.clear()
    return auth_server.state


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def billing(url: str, clock: Clock, password: str = PASSWORD) -> tuple[ResilientClient, JwtLogin]:
    jwt = JwtLogin(USER, password, clock=clock)
    http = ResilientClient("billing", url, auth=AuthChain(ApiKeyAuth(KEY, name="BILLING_API_KEY"), jwt))
    return http, jwt


def test_jwt_logs_in_once_for_many_threads_and_refreshes_when_the_token_runs_out(auth_server, state):
    clock = Clock()
    http, jwt = billing(auth_server.url, clock)
    with http, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: http.get_json("/api/bills"), range(16)))
        assert answers == [{"bills": [{"account": "A-1", "amount_thb": 412.5}]}] * 16
        assert state.calls == {"login": 1, "bills": 16}
        clock.now += 600 - 29  # inside the 30 s renewal margin
        http.get_json("/api/bills")
    assert (jwt.logins, jwt.refreshes) == (1, 1)
    assert state.calls == {"login": 1, "refresh": 1, "bills": 17}


def test_a_401_to_an_issued_token_refreshes_and_a_revoked_session_logs_in_again(auth_server, state):
    http, jwt = billing(auth_server.url, Clock())
    with http:
        http.get_json("/api/bills")
        state.revoke()
        assert http.get_json("/api/bills")["bills"]
        assert (jwt.logins, jwt.refreshes) == (1, 1)
        state.revoke(refresh_too=True)
        assert http.get_json("/api/bills")["bills"]
    assert (jwt.logins, jwt.refreshes) == (2, 1)
    assert state.calls == {"login": 2, "refresh": 2, "bills": 5}  # each 401 repeated once, no more


def test_a_wrong_password_names_the_login_endpoint_and_never_the_password(auth_server, state):
    http, _ = billing(auth_server.url, Clock(), password="wrong-Pa55-Value")
    with http, pytest.raises(SourceError) as caught:
        http.get_json("/api/bills")
    assert str(caught.value) == "billing: POST /auth/login failed: HTTP 401 Unauthorized: wrong user or password"
    assert "wrong-Pa55-Value" not in repr(http) + repr(http.auth) + repr(caught.value.args)


def test_csrf_is_fetched_once_sent_on_writes_only_and_fetched_again_when_refused(auth_server, state):
    csrf = CsrfToken("/odata/")
    with ResilientClient("erp", auth_server.url, auth=csrf) as http:
        assert http.get_json("/odata/Orders") == {"value": [], "csrf_sent": False}
        assert http.post_json("/odata/Orders", {"order": "PO-1"}) == {"created": "PO-1"}
        assert http.post_json("/odata/Orders", {"order": "PO-2"}) == {"created": "PO-2"}
        assert state.calls == {"orders_GET": 1, "csrf_fetch": 1, "orders_POST": 2}
        state.rotate_csrf()
        assert http.post_json("/odata/Orders", {"order": "PO-3"}) == {"created": "PO-3"}
        token = csrf.token()
        assert token in http.secrets.values()
    assert state.calls == {"orders_GET": 1, "csrf_fetch": 2, "orders_POST": 4}
    assert csrf.tokens_fetched == 2

"""The notifier against a real local HTTP receiver (webhook and LINE endpoint) and a real SMTP server."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import socket
import ssl
import threading
import time
from email import message_from_bytes
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from resources.notifier import Notification, Notifier, NotifierChannel

SECRET_TOKEN = "tok-s3cr3t-abcdef"
SECRET_PASSWORD = "pw-s3cr3t-123456"


class Receiver:
    """A real HTTP server on a free loopback port that records every POST (webhook and LINE push).

    ``fail_next`` answers that many requests with ``fail_status`` before accepting again. Each request
    is stored with its arrival time (``time.time()``), path, headers and JSON body.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0
        self.fail_status = 503
        self._changed = threading.Condition()
        self.url = ""

    async def _handle(self, request: Request) -> JSONResponse:
        arrived = time.time()
        body = await request.body()
        with self._changed:
            failing = self.fail_next > 0
            if failing:
                self.fail_next -= 1
            self.requests.append(
                {
                    "at": arrived,
                    "path": request.url.path,
                    "headers": dict(request.headers),
                    "json": json.loads(body) if body else None,
                    "answered": self.fail_status if failing else 200,
                }
            )
            self._changed.notify_all()
        if failing:
            return JSONResponse({"error": "try again"}, status_code=self.fail_status)
        return JSONResponse({"ok": True})

    def accepted(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["answered"] == 200]

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The accepted requests once there are at least ``count`` (fails the test after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while len(self.accepted()) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} accepted requests, got {len(self.accepted())}")
                self._changed.wait(left)
            return self.accepted()

    def __enter__(self) -> Receiver:
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test HTTP receiver did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mailbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"


def self_signed_context(tmp_path: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


@pytest.fixture
def smtp_server(tmp_path):
    """A real SMTP server on loopback requiring STARTTLS and a login (user ops, the secret password)."""
    mailbox = Mailbox()

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data == LoginPassword(b"ops", SECRET_PASSWORD.encode())
        return AuthResult(success=ok, handled=False)

    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=self_signed_context(tmp_path),
        require_starttls=True,
        authenticator=authenticate,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield controller, mailbox
    finally:
        controller.stop()


def alert(**overrides: Any) -> Notification:
    fields = {
        "severity": "critical",
        "title": "Critical temperature on UNIT001",
        "message": "Critical temperature alert: 39.2°C on UNIT001",
        "source": "mqtt",
        "unit_id": "UNIT001",
        "sensor_type": "temperature",
        "value": 39.2,
        "at": dt.datetime(2026, 3, 1, 5, 0, 1, tzinfo=dt.UTC),
    }
    return Notification(**{**fields, **overrides})


def records(notifier: Notifier) -> list[dict[str, Any]]:
    path = notifier.record_path()
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_webhook_gets_the_json_body_and_the_bearer_token(receiver, tmp_path):
    notifier = Notifier(
        channels=[NotifierChannel(kind="webhook", url=f"{receiver.url}/hooks/ops", token=SECRET_TOKEN)],
        record_dir=str(tmp_path),
    )
    outcome = notifier.send(alert())
    assert outcome.delivered
    (request,) = receiver.wait_for(1)
    assert request["path"] == "/hooks/ops"
    assert request["headers"]["authorization"] == f"Bearer {SECRET_TOKEN}"
    assert request["json"] == {
        "severity": "critical",
        "title": "Critical temperature on UNIT001",
        "message": "Critical temperature alert: 39.2°C on UNIT001",
        "source": "mqtt",
        "unit_id": "UNIT001",
        "sensor_type": "temperature",
        "value": 39.2,
        "at": "2026-03-01T05:00:01.000+00:00",
    }
    (record,) = records(notifier)
    assert record["id"] == outcome.id
    assert record["delivered"] is True
    assert record["channels"][0] | {"elapsed_ms": 0} == {
        "channel": "webhook",
        "kind": "webhook",
        "ok": True,
        "attempts": 1,
        "status": 200,
        "error": None,
        "elapsed_ms": 0,
        "skipped": False,
    }


def test_line_push_to_every_recipient(receiver, tmp_path):
    notifier = Notifier(
        channels=[NotifierChannel(kind="line", base_url=receiver.url, token=SECRET_TOKEN, to=["U123", "C456"])],
        record_dir=str(tmp_path),
    )
    assert notifier.send(alert()).delivered
    pushes = receiver.wait_for(2)
    assert {p["path"] for p in pushes} == {"/v2/bot/message/push"}
    assert all(p["headers"]["authorization"] == f"Bearer {SECRET_TOKEN}" for p in pushes)
    assert [p["json"] for p in pushes] == [
        {
            "to": to,
            "messages": [
                {
                    "type": "text",
                    "text": "[CRITICAL] Critical temperature on UNIT001\nCritical temperature alert: 39.2°C on UNIT001",
                }
            ],
        }
        for to in ("U123", "C456")
    ]


def test_email_over_starttls_with_a_login(smtp_server, tmp_path, monkeypatch):
    controller, mailbox = smtp_server
    channel = NotifierChannel(
        kind="smtp",
        host="127.0.0.1",
        port=controller.port,
        starttls=True,
        verify_tls=False,  # the test server's certificate is self-signed
        username="ops",
        password=SECRET_PASSWORD,
        from_addr="scada@utility.example",
        to=["oncall@utility.example", "plant@utility.example"],
    )
    notifier = Notifier(channels=[channel], record_dir=str(tmp_path))
    outcome = notifier.send(alert())
    assert outcome.delivered, outcome.channels
    (envelope,) = mailbox.messages
    assert envelope.rcpt_tos == ["oncall@utility.example", "plant@utility.example"]
    message = message_from_bytes(envelope.content)
    assert message["Subject"] == "[CRITICAL] Critical temperature on UNIT001"
    body = message.get_payload(decode=True).decode()
    assert "Critical temperature alert: 39.2°C on UNIT001" in body
    assert "unit_id: UNIT001" in body


def test_wrong_smtp_password_fails_without_retrying_or_leaking_it(smtp_server, tmp_path, caplog):
    controller, mailbox = smtp_server
    channel = NotifierChannel(
        kind="smtp",
        host="127.0.0.1",
        port=controller.port,
        verify_tls=False,
        username="ops",
        password="wrong-" + SECRET_PASSWORD,
        from_addr="scada@utility.example",
        to=["oncall@utility.example"],
    )
    notifier = Notifier(channels=[channel], record_dir=str(tmp_path), backoff_base_s=0.01)
    with caplog.at_level(logging.DEBUG):
        outcome = notifier.send(alert())
    (result,) = outcome.channels
    assert not result.ok and result.attempts == 1
    assert "login refused" in (result.error or "")
    assert mailbox.messages == []
    for text in (caplog.text, (tmp_path / notifier.record_path().name).read_text(), repr(outcome), repr(notifier)):
        assert SECRET_PASSWORD not in text


def test_transient_failures_are_retried_with_backoff(receiver, tmp_path):
    receiver.fail_next = 2
    notifier = Notifier(
        channels=[NotifierChannel(kind="webhook", url=f"{receiver.url}/hook")],
        record_dir=str(tmp_path),
        backoff_base_s=0.05,
    )
    started = time.monotonic()
    outcome = notifier.send(alert())
    assert outcome.delivered
    assert outcome.channels[0].attempts == 3
    assert time.monotonic() - started >= 0.05 + 0.1  # waited 0.05 s, then 0.1 s
    assert [r["answered"] for r in receiver.requests] == [503, 503, 200]


def test_a_refusal_that_retrying_cannot_fix_is_not_retried(receiver, tmp_path):
    receiver.fail_next, receiver.fail_status = 5, 401
    notifier = Notifier(
        channels=[NotifierChannel(kind="webhook", url=f"{receiver.url}/hook")], record_dir=str(tmp_path)
    )
    outcome = notifier.send(alert())
    assert not outcome.delivered
    assert outcome.channels[0].attempts == 1
    assert outcome.channels[0].status == 401


def test_a_dead_channel_does_not_stop_the_others_and_secrets_stay_out(receiver, tmp_path, caplog):
    dead = f"http://127.0.0.1:{free_port()}/hook?key={SECRET_TOKEN}"
    notifier = Notifier(
        channels=[
            NotifierChannel(kind="webhook", name="dead", url=dead, token=SECRET_TOKEN, timeout_s=1),
            NotifierChannel(kind="line", name="line-ops", base_url=receiver.url, token=SECRET_TOKEN, to=["U1"]),
            NotifierChannel(kind="webhook", name="keyed", url=f"{receiver.url}/hook?key={SECRET_TOKEN}"),
        ],
        record_dir=str(tmp_path),
        backoff_base_s=0.01,
    )
    with caplog.at_level(logging.DEBUG):
        outcome = asyncio.run(notifier.send_async(alert()))
    dead_outcome, line_outcome, keyed_outcome = outcome.channels
    assert (dead_outcome.ok, dead_outcome.attempts) == (False, 4)  # first attempt and 3 retries
    assert "ConnectError" in (dead_outcome.error or "")
    assert line_outcome.ok and keyed_outcome.ok
    assert outcome.failed == ["dead"]
    assert len(receiver.wait_for(2)) == 2
    (record,) = records(notifier)
    assert record["delivered"] is False
    assert [c["ok"] for c in record["channels"]] == [False, True, True]
    assert notifier.stats() == {
        "sent": 1,
        "delivered": 0,
        "failed": 1,
        "channels": {
            "dead": {"ok": 0, "failed": 1},
            "line-ops": {"ok": 1, "failed": 0},
            "keyed": {"ok": 1, "failed": 0},
        },
    }
    for text in (caplog.text, json.dumps(record), repr(outcome), repr(notifier), str(notifier.channels)):
        assert SECRET_TOKEN not in text


def test_channels_skip_severities_below_their_minimum(receiver, tmp_path):
    notifier = Notifier(
        channels=[
            NotifierChannel(kind="webhook", name="all", url=f"{receiver.url}/all"),
            NotifierChannel(kind="webhook", name="pager", url=f"{receiver.url}/pager", min_severity="critical"),
        ],
        record_dir=str(tmp_path),
    )
    outcome = notifier.send(alert(severity="warning"))
    assert outcome.delivered
    assert [c.skipped for c in outcome.channels] == [False, True]
    assert [r["path"] for r in receiver.wait_for(1)] == ["/all"]


def test_a_channel_missing_what_its_kind_needs_is_refused():
    with pytest.raises(ValueError, match="url: required for a webhook channel"):
        NotifierChannel(kind="webhook")
    with pytest.raises(ValueError, match="token: required for a line channel 'ops'"):
        NotifierChannel(kind="line", name="ops", to=["U1"])
    with pytest.raises(ValueError, match="severity must be one of"):
        alert(severity="urgent")


def test_a_dagster_run_sends_with_the_token_from_the_environment(receiver, tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_WEBHOOK_TOKEN", SECRET_TOKEN)

    @dg.asset
    def tells_operators(notifier: Notifier) -> None:
        outcome = notifier.send(alert(severity="warning", title="Flatline on UNIT002 pressure"))
        assert outcome.delivered

    resource = Notifier(
        channels=[NotifierChannel(kind="webhook", url=f"{receiver.url}/hook", token=dg.EnvVar("OPS_WEBHOOK_TOKEN"))],
        record_dir=str(tmp_path),
    )
    result = dg.materialize([tells_operators], resources={"notifier": resource})
    assert result.success
    (request,) = receiver.wait_for(1)
    assert request["headers"]["authorization"] == f"Bearer {SECRET_TOKEN}"
    assert request["json"]["title"] == "Flatline on UNIT002 pressure"
    assert SECRET_TOKEN not in (tmp_path / resource.record_path().name).read_text()


def test_the_notifier_settings_map_onto_the_shared_retry_policy():
    from resources.notifications import notifier_retry_policy

    policy = notifier_retry_policy(retries=3, backoff_base_s=0.5)
    assert policy.max_attempts == 4  # the first attempt and 3 retries
    assert [policy.delay(failures) for failures in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert Notifier(retries=1, backoff_base_s=0.25).sender.retry == notifier_retry_policy(1, 0.25)


def test_a_blocking_send_works_from_inside_a_running_event_loop(receiver, tmp_path):
    """A Dagster asset may run under an event loop; the blocking send must not need one of its own."""
    channel = NotifierChannel(kind="webhook", url=f"{receiver.url}/hook")
    notifier = Notifier(channels=[channel], record_dir=str(tmp_path))

    async def from_a_coroutine():
        return notifier.send(alert(title="from a loop"))

    assert asyncio.run(from_a_coroutine()).delivered
    (request,) = receiver.wait_for(1)
    assert request["json"]["title"] == "from a loop"

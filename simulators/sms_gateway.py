"""SMS gateway simulator: a Thai bulk-SMS style HTTP API that records every message it accepts.

``POST /sms`` takes a form (``msisdn``: comma-separated mobile numbers, ``message``, ``sender``) with the
account's API key and secret as HTTP basic auth, as the ThaiBulkSMS-style gateways do, and answers 201
with ``phone_number_list`` (number, message id, credit used), ``bad_phone_number_list`` (numbers it
cannot deliver to) and the credit left. It refuses what real gateways refuse:

- a text longer than one SMS (160 GSM 7-bit characters, 70 UCS-2 ones: Thai script is UCS-2) with 400;
- a sender name not registered on the account with 400;
- wrong credentials with 401.

Numbers listed in ``SmsGatewayConfig.undeliverable`` come back in ``bad_phone_number_list``. Faults from
``simulators.faults`` (``status`` with Retry-After, ``rate_limited``, ``slow``, ``truncated``,
``malformed``) are armed with ``inject`` or ``POST /_sim/faults``; ``GET /_sim/messages`` lists what was
delivered. ``commit_then_fail`` is this gateway's own fault: it accepts and records the message, then
answers 500, as a gateway that times out after queuing does.
"""

from __future__ import annotations

import base64
import contextlib
import re
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.faults import (
    FaultBook,
    RequestStats,
    delay,
    faults_endpoint,
    loopback_only,
    mangle_body,
    status_response,
)
from simulators.http_server import SimulatorServer, serve_simulator

__all__ = ["DeliveredSms", "SmsGatewayConfig", "SmsGatewaySimulator", "credentials_env", "serve_sms_gateway"]

# The gateway's own reading of a text, independent of the hub's (resources/sms.py), so a test checks one
# against the other: printable ASCII is GSM 7-bit (the characters of GSM's extension table count twice);
# anything else makes the message UCS-2.
_GSM_EXTENSION = frozenset("[]{}\\^~|€")
_LOCAL_MOBILE = re.compile(r"^0[689][0-9]{8}$")
GSM_LIMIT, UCS2_LIMIT = 160, 70


def _length_and_alphabet(text: str) -> tuple[int, str]:
    if all(ch in "\n\r" or " " <= ch <= "~" for ch in text):
        return sum(2 if ch in _GSM_EXTENSION else 1 for ch in text), "GSM 7-bit"
    return len(text), "UCS-2"


@dataclass(frozen=True)
class SmsGatewayConfig:
    api_key: str = "sim-sms-key"
    api_secret: str = "sim-sms-secret"
    senders: tuple[str, ...] = ("IHUB", "PWA Alert")
    credit: int = 10_000
    undeliverable: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"SmsGatewayConfig(senders={self.senders!r}, credit={self.credit})"  # no credentials


@dataclass(frozen=True)
class DeliveredSms:
    message_id: str
    number: str
    sender: str
    text: str
    encoding: str  # gsm7 or ucs2
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class SmsGatewaySimulator:
    def __init__(self, config: SmsGatewayConfig | None = None) -> None:
        self.config = config or SmsGatewayConfig()
        self.faults = FaultBook(own_kinds={"commit_then_fail"})
        self.requests = RequestStats()
        self._lock = threading.Lock()
        self._delivered: list[DeliveredSms] = []
        self._credit = self.config.credit
        self.app = Starlette(
            routes=[
                Route("/sms", self._send, methods=["POST"]),
                Route("/_sim/faults", faults_endpoint(self.faults), methods=["GET", "POST", "DELETE"]),
                Route("/_sim/messages", self._messages, methods=["GET", "DELETE"]),
            ]
        )

    def inject(self, kind: str, path: str = "/sms", count: int = 1, **params: Any) -> None:
        self.faults.inject(kind, path, count, **params)

    @property
    def delivered(self) -> list[DeliveredSms]:
        with self._lock:
            return list(self._delivered)

    def texts_to(self, number: str) -> list[str]:
        """The texts delivered to one number, in the order the gateway took them."""
        return [m.text for m in self.delivered if m.number == number]

    def clear(self) -> None:
        with self._lock:
            self._delivered.clear()

    async def _send(self, request: Request) -> Response:
        fault = self.faults.take(request.url.path)
        await delay(fault)
        if fault is not None and fault.kind == "status":
            response: Response = status_response(fault)
        else:
            response = await self._accept(
                request, commit_then_fail=fault is not None and fault.kind == "commit_then_fail"
            )
            if fault is not None and fault.kind in ("truncated", "malformed"):
                response = Response(
                    mangle_body(bytes(response.body), fault), response.status_code, media_type="application/json"
                )
        self.requests.record("/sms", response.status_code)
        return response

    async def _accept(self, request: Request, commit_then_fail: bool) -> Response:
        if not self._authorised(request):
            return _error(401, "Unauthorized: wrong API key or secret")
        # A urlencoded form, read without python-multipart (Starlette's form parser needs it).
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        sender = form.get("sender", "")
        text = form.get("message", "")
        numbers = [n.strip() for n in form.get("msisdn", "").split(",") if n.strip()]
        if sender not in self.config.senders:
            return _error(400, f"sender {sender!r} is not registered on this account")
        if not text:
            return _error(400, "message is empty")
        length, alphabet = _length_and_alphabet(text)
        limit = GSM_LIMIT if alphabet == "GSM 7-bit" else UCS2_LIMIT
        if length > limit:
            return _error(400, f"message too long: {length} characters, at most {limit} in {alphabet}")
        if not numbers:
            return _error(400, "msisdn is empty")
        accepted, bad = [], []
        with self._lock:
            for local in numbers:
                if not _LOCAL_MOBILE.match(local):
                    bad.append({"number": local, "message": "Invalid phone number"})
                    continue
                if local in self.config.undeliverable:
                    bad.append({"number": local, "message": "Number is not reachable"})
                    continue
                message = DeliveredSms(
                    uuid.uuid4().hex[:16], local, sender, text, "gsm7" if alphabet == "GSM 7-bit" else "ucs2"
                )
                self._delivered.append(message)
                self._credit -= 1
                accepted.append({"number": local, "message_id": message.message_id, "used_credit": 1})
            remaining = self._credit
        if commit_then_fail:
            return _error(500, "Internal Server Error")
        body = {
            "remaining_credit": remaining,
            "total_use_credit": len(accepted),
            "credit_type": "standard",
            "phone_number_list": accepted,
            "bad_phone_number_list": bad,
        }
        return JSONResponse(body, 201)

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user.encode(), self.config.api_key.encode()) and secrets.compare_digest(
            password.encode(), self.config.api_secret.encode()
        )

    async def _messages(self, request: Request) -> Response:
        if (denied := loopback_only(request)) is not None:
            return denied
        if request.method == "DELETE":
            self.clear()
            return JSONResponse({"cleared": True})
        return JSONResponse(
            {
                "messages": [
                    {
                        "message_id": m.message_id,
                        "number": m.number,
                        "sender": m.sender,
                        "text": m.text,
                        "encoding": m.encoding,
                        "received_at": m.received_at.isoformat(),
                    }
                    for m in self.delivered
                ]
            }
        )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": status, "message": message}}, status)


def serve_sms_gateway(
    config: SmsGatewayConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> contextlib.AbstractContextManager[SimulatorServer]:
    """Serve an SMS gateway simulator in a background thread for the duration of the ``with`` block."""
    return serve_simulator(SmsGatewaySimulator(config), host=host, port=port)


def credentials_env(url: str, config: SmsGatewayConfig, to: str = "0812345678") -> dict[str, str]:
    """Environment variables that make the hub's notifier send SMS through a simulator at ``url``."""
    return {
        "IHUB_SMS_URL": f"{url}/sms",
        "IHUB_SMS_API_KEY": config.api_key,
        "IHUB_SMS_API_SECRET": config.api_secret,
        "IHUB_SMS_SENDER": config.senders[0],
        "IHUB_SMS_TO": to,
    }

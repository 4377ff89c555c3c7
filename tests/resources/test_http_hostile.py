"""The generic HTTP layer on its own, against a small hostile server on loopback (no HTTP mocks)."""

from __future__ import annotations

import gzip
import json
import time
import zlib

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resources.http import (
    CircuitBreaker,
    PayloadError,
    RateLimiter,
    ResilientClient,
    Secrets,
    SourceError,
    check_secret,
    path_segment,
)
from simulators.http_server import serve_in_thread

BODY = {"items": [{"id": n, "name": f"item {n}"} for n in range(50)], "next_page": None}


async def encoded(request: Request) -> Response:
    raw = json.dumps(BODY).encode()
    kind = request.path_params["kind"]
    if kind == "gzip":
        return Response(gzip.compress(raw), media_type="application/json", headers={"Content-Encoding": "gzip"})
    if kind == "deflate-raw":
        packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = packer.compress(raw) + packer.flush()
        return Response(body, media_type="application/json", headers={"Content-Encoding": "deflate"})
    if kind == "deflate":
        return Response(zlib.compress(raw), media_type="application/json", headers={"Content-Encoding": "deflate"})
    return Response(raw, media_type="application/json", headers={"Content-Encoding": kind})


async def pages(request: Request) -> JSONResponse:
    page = int(request.query_params["page"])
    following = {"backwards": page - 1 if page > 1 else 2, "text": "two"}[request.path_params["kind"]]
    return JSONResponse({"items": [page], "next_page": following})


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"key": request.headers.get("x-api-key")})


LIMITED = {"calls": 0}


async def limited(request: Request) -> JSONResponse:
    LIMITED["calls"] += 1
    if LIMITED["calls"] % 4:
        return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": "0"})
    return JSONResponse({"calls": LIMITED["calls"]})


async def deep_error(request: Request) -> Response:
    return Response(b"[" * 100_000 + b"]" * 100_000, status_code=400, media_type="application/json")


async def big_error(request: Request) -> Response:
    return Response(json.dumps({"detail": "x" * 10_000_000}).encode(), status_code=422, media_type="application/json")


@pytest.fixture(scope="module")
def hostile():
    app = Starlette(
        routes=[
            Route("/nested/{depth}", nested),
            Route("/encoded/{kind}", encoded),
            Route("/pages/{kind}", pages),
            Route("/echo", echo),
            Route("/limited", limited),
            Route("/deep-error", deep_error),
            Route("/big-error", big_error),
        ]
    )
    with serve_in_thread(app) as running:
        yield running


@pytest.fixture
def client(hostile):
    with ResilientClient("hostile", hostile.url, backoff_base_s=0.01) as http:
        yield http


@pytest.mark.parametrize("kind", ["gzip", "deflate", "deflate-raw"])
def test_compressed_answers_are_inflated(client, kind):
    assert client.get_json(f"/encoded/{kind}") == BODY


def test_an_encoding_we_did_not_ask_for_is_refused(client):
    with pytest.raises(PayloadError, match=r"unsupported Content-Encoding 'br' \(asked for gzip or deflate\)"):
        client.get_json("/encoded/br")


def test_a_body_past_the_cap_is_refused_even_unencoded(hostile):
    with ResilientClient("hostile", hostile.url, max_body_bytes=1000) as http, pytest.raises(PayloadError) as caught:
        http.get_json("/encoded/identity")
    assert caught.value.attempts == 1 and "decoded body exceeds 1,000 bytes" in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("backwards", "page 2: next_page is 1, expected a later page number or null"),
        ("text", "page 1: next_page is 'two', expected a later page number or null"),
    ],
)
def test_a_next_page_that_is_not_later_is_refused(client, kind, reason):
    with pytest.raises(PayloadError) as caught:
        list(client.iter_pages(f"/pages/{kind}"))
    assert caught.value.reason == reason


def test_an_error_body_nested_without_end_or_huge_still_gives_a_clean_error(client):
    with pytest.raises(SourceError) as deep:
        client.get_json("/deep-error")
    assert str(deep.value) == "hostile: GET /deep-error failed: HTTP 400 Bad Request"
    started = time.monotonic()
    with pytest.raises(SourceError) as big:
        client.get_json("/big-error")
    assert time.monotonic() - started < 2  # 64 KiB read, not 10 MB
    # The first 64 KiB of the body are no JSON document, so there is no detail to quote.
    assert str(big.value) == "hostile: GET /big-error failed: HTTP 422 Unprocessable Entity"


def test_a_header_the_protocol_forbids_fails_at_once_without_echoing_it(hostile):
    secret = "abc-Secret-Value-42"
    bad_header = {"X-API-Key": secret + "\n"}
    with ResilientClient("hostile", hostile.url, headers=bad_header) as http, pytest.raises(SourceError) as caught:
        http.get_json("/echo")
    text = str(caught.value) + repr(caught.value.args)
    assert caught.value.attempts == 1 and "request refused by the HTTP library" in text
    assert secret not in text and "***" in text
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_check_secret_names_the_variable_only():
    assert check_secret("fine-key", "X_KEY") == "fine-key"
    for value, message in [
        ("key\n", "X_KEY has a trailing newline; remove it"),
        ("key\r\n", "X_KEY has a trailing newline; remove it"),
        ("key ", "X_KEY has trailing whitespace; remove it"),
        ("kéy", "X_KEY contains a non-ASCII character at position 1; HTTP headers need ASCII"),
        (None, "X_KEY is empty or not set; set it to the credential the source issued"),
    ]:
        with pytest.raises(ValueError) as caught:
            check_secret(value, "X_KEY")
        assert str(caught.value) == message


def test_secrets_are_cut_from_messages_and_chains():
    secrets = Secrets(["hunter2-secret"], providers=[lambda: ["tok-abcdef"]])
    try:
        try:
            raise OSError("refused key b'hunter2-secret\\n'")
        except OSError as inner:
            raise ValueError("while sending tok-abcdef") from inner
    except ValueError as error:
        cleaned = secrets.clean(error)
    assert isinstance(cleaned, ValueError) and str(cleaned) == "while sending ***"
    assert cleaned.__cause__ is None and cleaned.__context__ is None
    assert secrets.clean(ValueError("nothing secret here")) is None
    source = SourceError("s", "/x", "echoed hunter2-secret", status=403)
    assert str(secrets.clean(source)) == "s: GET /x failed: echoed ***"


def test_path_segments_are_encoded_and_paths_refused():
    assert path_segment("DMA-0001") == "DMA-0001"
    assert path_segment("plant:7@north") == "plant%3A7%40north"
    assert path_segment("ท่า") == "%E0%B8%97%E0%B9%88%E0%B8%B2"
    # One rule with conform (resources/identifiers.py): URL syntax is refused, not escaped.
    for bad in (".", "..", "a/b", "", "x\ny", "a?b", "c#d", "e%f"):
        with pytest.raises(ValueError, match="identifier"):
            path_segment(bad)


def test_the_rate_limiter_holds_every_caller_until_the_deferral_passes():
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(clock=lambda: now[0], sleep=sleep)
    assert limiter.wait() == 0.0
    until = limiter.defer(3.0)
    limiter.defer(1.0)  # a shorter ask never shortens a longer one
    assert limiter.wait(covered_until=until) == 0.0  # the thread that slept it out goes on
    assert limiter.wait() == 3.0 and limiter.wait() == 0.0
    assert slept == [3.0] and limiter.deferrals == 2 and limiter.waited_s == 3.0


def test_429s_neither_trip_the_breaker_nor_use_up_the_retry_count(hostile):
    breaker = CircuitBreaker(failure_threshold=1)
    LIMITED["calls"] = 0
    with ResilientClient("hostile", hostile.url, breaker=breaker, max_retries=0) as http:
        assert http.get_json("/limited") == {"calls": 4}  # three 429s, then the answer
        assert http.limiter.deferrals == 3
    assert breaker.state == CircuitBreaker.CLOSED


async def nested(request: Request) -> Response:
    depth = int(request.path_params["depth"])
    return Response(b'{"a":' * depth + b"1" + b"}" * depth, media_type="application/json")


def test_json_deeper_than_the_cap_is_refused_though_it_decodes(hostile):
    with ResilientClient("hostile", hostile.url, max_json_depth=64) as http:
        assert http.get_json("/nested/64") is not None
        with pytest.raises(PayloadError) as caught:
            http.get_json("/nested/65")
    assert caught.value.attempts == 1
    assert str(caught.value) == "hostile: GET /nested/65 failed: JSON nested deeper than 64 levels (max_json_depth)"

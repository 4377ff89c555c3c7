"""SMS through a Thai bulk-SMS gateway: message parts, phone numbers, and what the gateway answered.

The gateways Thai utilities use (the ThaiBulkSMS style) take a form POST with the sender name, a
comma-separated list of mobile numbers and the text, with the account's API key and secret as HTTP basic
auth, and refuse a text longer than one SMS can carry. How long that is depends on the alphabet:

- text entirely in the GSM 03.38 alphabet: 160 characters, or 153 per part of a multi-part message;
- anything else (Thai script, emoji, curly quotes): UCS-2, 70 characters, or 67 per part.

`sms_parts` splits a notification into parts that each fit, numbered ``(1/2) `` so an operator reading them
out of order on a phone still sees the whole message; it breaks at a space where one is near. Everything
here is plain Python with no I/O; `resources.notifications` sends the parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "GSM_SINGLE",
    "SENDER_PATTERN",
    "UCS2_SINGLE",
    "SmsReply",
    "is_gsm7",
    "mask_number",
    "normalise_thai_mobile",
    "parse_reply",
    "sms_length",
    "sms_parts",
]

# GSM 03.38: the basic character set, one septet each, and the extension table, two septets each (an
# escape and the character), so "[CRITICAL]" stays GSM and costs 12 septets rather than forcing UCS-2.
_GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67
# Sender names are registered with the gateway: up to 11 letters, digits or spaces, starting with a letter.
SENDER_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9 ]{0,10}$")
_THAI_MOBILE = re.compile(r"^(?:\+?66|0)([689]\d{8})$")


def is_gsm7(text: str) -> bool:
    """Whether the whole text fits the GSM 7-bit alphabet (else it goes as UCS-2)."""
    return all(ch in _GSM7 or ch in _GSM7_EXTENSION for ch in text)


def sms_length(text: str) -> int:
    """Length as the network counts it: septets for GSM 7-bit text, UTF-16 code units for UCS-2."""
    if is_gsm7(text):
        return sum(2 if ch in _GSM7_EXTENSION else 1 for ch in text)
    return len(text.encode("utf-16-le")) // 2


def sms_parts(text: str) -> list[str]:
    """The text as the gateway takes it: one SMS if it fits, else numbered parts that each fit."""
    gsm = is_gsm7(text)
    single, per_part = (GSM_SINGLE, GSM_PART) if gsm else (UCS2_SINGLE, UCS2_PART)
    if sms_length(text) <= single:
        return [text]
    # The "(i/n) " prefix takes room in every part; the count of parts sets its width, so settle n first.
    count = 2
    while True:
        chunks = _chunks(text, per_part - len(f"({count}/{count}) "), gsm)
        if len(chunks) <= count:
            break
        count = len(chunks)
    return [f"({i}/{len(chunks)}) {chunk}" for i, chunk in enumerate(chunks, start=1)]


def _chunks(text: str, width: int, gsm: bool) -> list[str]:
    """Pieces of at most `width` (septets, or UTF-16 units for UCS-2), cut at the last space in a piece's
    second half."""
    if gsm:
        cost = [2 if ch in _GSM7_EXTENSION else 1 for ch in text]
    else:
        cost = [len(ch.encode("utf-16-le")) // 2 for ch in text]
    chunks: list[str] = []
    start = 0
    while start < len(text):
        used, end = 0, start
        while end < len(text) and used + cost[end] <= width:
            used += cost[end]
            end += 1
        if end == len(text):
            chunks.append(text[start:end])
            break
        space = text.rfind(" ", start + (end - start) // 2, end + 1)
        if space > start:
            chunks.append(text[start:space])
            start = space + 1  # the space itself is where the parts join
        else:
            chunks.append(text[start:end])  # no space in the second half: cut the word
            start = end
    return [c for c in chunks if c]


def normalise_thai_mobile(number: str) -> str:
    """A Thai mobile number in the gateway's local form ``0XXXXXXXXX`` (from ``08…``, ``66 8…``, ``+66-8…``).

    Raises ValueError without repeating the number: phone numbers are personal data, and the error goes to
    logs. Callers say which configured recipient (by position) was wrong.
    """
    digits = re.sub(r"[\s\-().]", "", number)
    match = _THAI_MOBILE.match(digits)
    if not match:
        raise ValueError("not a Thai mobile number (expected 0 and 9 digits starting 6, 8 or 9, e.g. 08x-xxx-xxxx)")
    return "0" + match.group(1)


def mask_number(number: str) -> str:
    """A phone number with all but its last three digits hidden, for records and errors."""
    return "•" * max(len(number) - 3, 0) + number[-3:]


@dataclass(frozen=True)
class SmsReply:
    """What the gateway accepted: message ids per number, the numbers it refused, credit left."""

    accepted: dict[str, str]  # number → message id
    refused: list[str]
    credit_used: int
    credit_remaining: int | None


def parse_reply(body: object) -> SmsReply:
    """The gateway's JSON answer to a send (``phone_number_list``, ``bad_phone_number_list``, credits)."""
    if not isinstance(body, dict):
        raise ValueError("SMS gateway answer is not a JSON object")
    accepted = {
        str(item["number"]): str(item.get("message_id", ""))
        for item in body.get("phone_number_list") or []
        if isinstance(item, dict) and "number" in item
    }
    refused = [
        str(item["number"])
        for item in body.get("bad_phone_number_list") or []
        if isinstance(item, dict) and "number" in item
    ]
    remaining = body.get("remaining_credit")
    return SmsReply(
        accepted=accepted,
        refused=refused,
        credit_used=int(body.get("total_use_credit") or 0),
        credit_remaining=int(remaining) if isinstance(remaining, int | float) else None,
    )

"""SMS to operators through the bulk-SMS gateway simulator: parts that fit, numbers, retries, secrets."""

from __future__ import annotations

import json
import logging

import pytest

from orchestration.settings import notifier_channels
from resources.notifications import ChannelSettings, Notification, NotificationSender, notifier_retry_policy
from resources.notifier import Notifier, NotifierChannel
from resources.sms import is_gsm7, mask_number, normalise_thai_mobile, sms_length, sms_parts
from simulators.sms_gateway import SmsGatewayConfig, credentials_env, serve_sms_gateway

API_SECRET = "sms-s3cr3t-0987"
CONFIG = SmsGatewayConfig(api_key="sms-key-5151", api_secret=API_SECRET, undeliverable=("0899999999",))
THAI = "แรงดันน้ำในพื้นที่ DMA-0003 ต่ำกว่าเกณฑ์ ตรวจสอบสถานีสูบน้ำ"  # Thai script: UCS-2 on the air


@pytest.fixture(scope="module")
def gateway():
    with serve_sms_gateway(CONFIG) as server:
        yield server


@pytest.fixture
def sms(gateway):
    gateway.simulator.clear()
    gateway.simulator.faults.clear()
    gateway.simulator.requests.reset()
    return gateway


def channel(gateway, to=("081-234-5678",), **overrides) -> ChannelSettings:
    fields = {
        "kind": "sms",
        "url": f"{gateway.url}/sms",
        "username": CONFIG.api_key,
        "password": API_SECRET,
        "sender": "IHUB",
        "to": list(to),
        **overrides,
    }
    return ChannelSettings(**fields)


def sender(tmp_path, *channels, retries=3) -> NotificationSender:
    return NotificationSender(channels, record_dir=tmp_path, retry=notifier_retry_policy(retries, 0.0))


def alert(message: str, severity: str = "critical") -> Notification:
    return Notification(severity=severity, title="Low pressure", message=message, source="scada_window")


def test_gsm_extension_characters_count_twice_and_keep_the_text_gsm():
    assert is_gsm7("[CRITICAL] {P2}") and sms_length("[CRITICAL] {P2}") == 19
    assert not is_gsm7("ก") and sms_length("ก" * 3) == 3
    assert len(sms_parts("[" * 80)) == 1 and len(sms_parts("[" * 81)) == 2  # 160 septets fit, 162 do not


def test_a_text_that_fits_goes_as_one_sms():
    assert sms_parts("[CRITICAL] Low pressure\nDMA-0003 below 10 m") == ["[CRITICAL] Low pressure\nDMA-0003 below 10 m"]
    assert len(sms_parts("x" * 160)) == 1
    assert len(sms_parts("ก" * 70)) == 1  # Thai: UCS-2, 70 characters


def test_long_texts_split_into_numbered_parts_that_each_fit():
    words = " ".join(f"word{i:03d}" for i in range(30))  # 239 GSM characters
    parts = sms_parts(words)
    assert [p[:6] for p in parts] == ["(1/2) ", "(2/2) "]
    assert all(len(p) <= 153 for p in parts)
    assert " ".join(p[6:] for p in parts) == words  # cut at a space, nothing lost

    thai = sms_parts(THAI * 3)  # 171 UCS-2 characters
    assert len(thai) == 4 and all(len(p) <= 67 for p in thai)  # 3 if cut mid-word; 4 at spaces
    assert "".join(p[6:] for p in thai).replace(" ", "") == (THAI * 3).replace(" ", "")

    many = sms_parts("y" * 2000)  # no spaces: cut inside the word; ten parts or more widen the prefix
    assert len(many) == 14 and many[9].startswith("(10/14) ")  # 2000 / (153 - 8) and all(len(p) <= 153 for p in many)
    assert "".join(p.split(") ", 1)[1] for p in many) == "y" * 2000


def test_thai_mobile_numbers_are_normalised_and_errors_do_not_repeat_them():
    assert normalise_thai_mobile("+66 81-234-5678") == "0812345678"
    assert normalise_thai_mobile("66912345678") == "0912345678"
    assert normalise_thai_mobile("(08) 1234 5678") == "0812345678"
    with pytest.raises(ValueError) as refused:
        normalise_thai_mobile("02-123-4567")  # a Bangkok landline cannot take an SMS
    assert "123" not in str(refused.value)
    assert mask_number("0812345678") == "•••••••678"


def test_configuration_is_checked_without_printing_numbers_or_secrets(gateway):
    with pytest.raises(ValueError, match=r"to\[1\]: not a Thai mobile number") as refused:
        channel(gateway, to=("0812345678", "12345"))
    assert "12345" not in str(refused.value)
    with pytest.raises(ValueError, match="sender: 'Integration Hub Alerts' is not a sender name"):
        channel(gateway, sender="Integration Hub Alerts")
    with pytest.raises(ValueError, match="password: required for a sms channel"):
        channel(gateway, password=None)
    shown = repr(channel(gateway, to=("0812345678",)))
    assert "•••••••678" in shown and "0812345678" not in shown
    assert API_SECRET not in shown and CONFIG.api_key not in shown


def test_a_long_thai_alert_reaches_every_phone_in_order(sms, tmp_path):
    outcome = sender(tmp_path, channel(sms, to=("0812345678", "+66 91 234 5678"))).send(alert(THAI * 2))
    assert outcome.delivered and outcome.channels[0].attempts == 1
    parts = sms_parts(f"[CRITICAL] Low pressure\n{THAI * 2}")
    assert len(parts) == 3
    assert sms.simulator.texts_to("0812345678") == parts  # the gateway's own length rule accepted each
    assert sms.simulator.texts_to("0912345678") == parts
    assert {m.encoding for m in sms.simulator.delivered} == {"ucs2"}
    assert {m.sender for m in sms.simulator.delivered} == {"IHUB"}


def test_an_unsplit_text_is_refused_by_the_gateway(sms):
    import httpx

    response = httpx.post(
        f"{sms.url}/sms",
        data={"msisdn": "0812345678", "message": THAI * 2, "sender": "IHUB"},
        auth=(CONFIG.api_key, API_SECRET),
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == f"message too long: {len(THAI) * 2} characters, at most 70 in UCS-2"


def test_a_retry_resends_only_the_parts_the_gateway_did_not_take(sms, tmp_path):
    # Every other request refused with 429: part 1 refused, sent; part 2 refused, sent; part 3 refused, sent.
    sms.simulator.inject("rate_limited", count=6, share=0.5, retry_after=0)
    outcome = sender(tmp_path, channel(sms)).send(alert("z" * 400))
    assert outcome.delivered
    assert outcome.channels[0].attempts == 4
    texts = sms.simulator.texts_to("0812345678")
    assert [t[:6] for t in texts] == ["(1/3) ", "(2/3) ", "(3/3) "]  # each part once, in order
    assert sms.simulator.requests.snapshot() == {("/sms", 429): 3, ("/sms", 201): 3}


def test_a_gateway_that_commits_then_fails_sends_twice_rather_than_never(sms, tmp_path):
    # The gateway has no idempotency key: after a 500 the notifier cannot know the message went out, and an
    # alert delivered twice is better than one lost (docs/operators/alerts.md).
    sms.simulator.inject("commit_then_fail", count=1)
    outcome = sender(tmp_path, channel(sms)).send(alert("Tank T2 level low"))
    assert outcome.delivered and outcome.channels[0].attempts == 2
    assert len(sms.simulator.texts_to("0812345678")) == 2


def test_an_undeliverable_number_fails_that_channel_once_and_the_others_still_get_it(sms, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    notifier = sender(tmp_path, channel(sms, to=("0812345678", "0899999999")))
    outcome = notifier.send(alert("Pump P2 tripped"))
    result = outcome.channels[0]
    assert not result.ok and result.attempts == 1  # retrying cannot reach a dead number
    assert result.error == "SMS gateway refused 1 number(s) for part 1: •••••••999"
    assert sms.simulator.texts_to("0812345678") == ["[CRITICAL] Low pressure\nPump P2 tripped"]
    assert "0899999999" not in caplog.text


def test_wrong_credentials_are_not_retried_and_never_shown(sms, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    notifier = sender(tmp_path, channel(sms, password="wrong-" + API_SECRET))
    outcome = notifier.send(alert("Pump P2 tripped"))
    result = outcome.channels[0]
    assert not result.ok and result.attempts == 1 and result.status == 401
    record = notifier.record_path().read_text()
    for text in (record, caplog.text, result.error or ""):
        assert API_SECRET not in text and CONFIG.api_key not in text
    assert json.loads(record.splitlines()[-1])["channels"][0]["status"] == 401


def test_transient_gateway_errors_are_retried(sms, tmp_path):
    sms.simulator.inject("status", count=2, status=503, retry_after=0)
    outcome = sender(tmp_path, channel(sms)).send(alert("Tank T2 level low"))
    assert outcome.delivered and outcome.channels[0].attempts == 3
    assert len(sms.simulator.texts_to("0812345678")) == 1


def test_the_environment_configures_the_sms_channel_for_dagster_runs(sms, tmp_path, monkeypatch):
    env = credentials_env(sms.url, CONFIG, to="0812345678,+66912345678")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    channels = [c for c in notifier_channels() if c.kind == "sms"]
    assert len(channels) == 1
    notifier = Notifier(channels=channels, record_dir=str(tmp_path), backoff_base_s=0)
    # Secrets stay EnvVars in the resource config and are resolved when Dagster builds the resource.
    assert "sms-key" not in repr(channels[0])
    import dagster as dg

    @dg.op
    def tell_operators(notifier: Notifier) -> bool:
        return notifier.send(alert("ข้อความทดสอบ", severity="warning")).delivered

    @dg.job(resource_defs={"notifier": notifier})
    def notify():
        tell_operators()

    assert notify.execute_in_process().output_for_node("tell_operators") is True
    assert sms.simulator.texts_to("0912345678") == ["[WARNING] Low pressure\nข้อความทดสอบ"]


def test_notifier_channel_config_takes_sms_fields(gateway):
    config = NotifierChannel(
        kind="sms", url=f"{gateway.url}/sms", username="k", password="s", sender="PWA Alert", to=["0812345678"]
    )
    assert config.sender == "PWA Alert"

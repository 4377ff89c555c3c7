"""Where things live and which clock the utility keeps, from the environment with working defaults.

Every path is made absolute when the definitions load, so a run, a sensor and the analyst catalog
agree on them whatever directory they were started from.
"""

import os
from pathlib import Path

DEFAULT_LOCAL_TIMEZONE = "Asia/Bangkok"


def data_dir() -> Path:
    """``IHUB_DATA_DIR``, or ``.data`` under the current directory (what ``make demo`` uses)."""
    return Path(os.environ.get("IHUB_DATA_DIR", ".data")).resolve()


def lake_dir() -> str:
    """``IHUB_LAKE_DIR``: a folder (made absolute) or a bucket URL such as ``s3://lake/ihub``, kept as given."""
    root = os.environ.get("IHUB_LAKE_DIR")
    if root and "://" in root:
        return root
    return str(Path(root or data_dir() / "lake").resolve())


def catalog_path() -> Path:
    return Path(os.environ.get("IHUB_CATALOG_PATH", data_dir() / "catalog" / "ihub.duckdb")).resolve()


def local_timezone() -> str:
    """The utility's time zone: schedules fire and reports read in it; storage stays UTC."""
    return os.environ.get("IHUB_LOCAL_TZ", DEFAULT_LOCAL_TIMEZONE)


def spool_dir() -> Path:
    """Where the SCADA collector publishes its windows (``IHUB_SPOOL_DIR``): the window job reads and
    acknowledges them there, through the contract in ``resources.scada_manifest``. No window length is set
    on this side: each window's manifest carries its own."""
    return Path(os.environ.get("IHUB_SPOOL_DIR", data_dir() / "spool")).resolve()


def notifier_channels() -> list:
    """Operator notification channels the environment configures (none: notifications are only recorded).

    ``IHUB_ALERT_WEBHOOK_URL`` (+ ``IHUB_ALERT_WEBHOOK_TOKEN``), ``IHUB_LINE_TOKEN`` + ``IHUB_LINE_TO``
    (comma-separated ids, ``IHUB_LINE_BASE_URL``), ``IHUB_SMTP_HOST`` + ``IHUB_SMTP_FROM`` + ``IHUB_SMTP_TO``
    (+ ``IHUB_SMTP_PORT``, ``IHUB_SMTP_USERNAME``, ``IHUB_SMTP_PASSWORD``), ``IHUB_SMS_URL`` +
    ``IHUB_SMS_API_KEY`` + ``IHUB_SMS_API_SECRET`` + ``IHUB_SMS_SENDER`` + ``IHUB_SMS_TO`` (comma-separated
    mobile numbers). Secrets stay ``EnvVar``s, so their values never appear in the UI or the run config.
    """
    import dagster as dg

    from resources.notifier import NotifierChannel

    env = os.environ
    channels = []
    if env.get("IHUB_ALERT_WEBHOOK_URL"):
        channels.append(
            NotifierChannel(
                kind="webhook",
                name="webhook",
                url=env["IHUB_ALERT_WEBHOOK_URL"],
                token=dg.EnvVar("IHUB_ALERT_WEBHOOK_TOKEN") if env.get("IHUB_ALERT_WEBHOOK_TOKEN") else None,
            )
        )
    if env.get("IHUB_LINE_TOKEN") and env.get("IHUB_LINE_TO"):
        channels.append(
            NotifierChannel(
                kind="line",
                name="line",
                token=dg.EnvVar("IHUB_LINE_TOKEN"),
                to=[t.strip() for t in env["IHUB_LINE_TO"].split(",") if t.strip()],
                base_url=env.get("IHUB_LINE_BASE_URL", "https://api.line.me"),
            )
        )
    if env.get("IHUB_SMTP_HOST") and env.get("IHUB_SMTP_FROM") and env.get("IHUB_SMTP_TO"):
        channels.append(
            NotifierChannel(
                kind="smtp",
                name="email",
                host=env["IHUB_SMTP_HOST"],
                port=int(env.get("IHUB_SMTP_PORT", "587")),
                from_addr=env["IHUB_SMTP_FROM"],
                to=[t.strip() for t in env["IHUB_SMTP_TO"].split(",") if t.strip()],
                username=env.get("IHUB_SMTP_USERNAME"),
                password=dg.EnvVar("IHUB_SMTP_PASSWORD") if env.get("IHUB_SMTP_PASSWORD") else None,
            )
        )
    sms = ("IHUB_SMS_URL", "IHUB_SMS_API_KEY", "IHUB_SMS_API_SECRET", "IHUB_SMS_SENDER", "IHUB_SMS_TO")
    if all(env.get(name) for name in sms):
        channels.append(
            NotifierChannel(
                kind="sms",
                name="sms",
                url=env["IHUB_SMS_URL"],
                username=dg.EnvVar("IHUB_SMS_API_KEY"),
                password=dg.EnvVar("IHUB_SMS_API_SECRET"),
                sender=env["IHUB_SMS_SENDER"],
                to=[t.strip() for t in env["IHUB_SMS_TO"].split(",") if t.strip()],
            )
        )
    return channels

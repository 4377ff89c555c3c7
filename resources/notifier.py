"""The Dagster resource for operator notifications: configuration and a ``NotificationSender`` inside.

Everything that sends lives in ``resources.notifications`` (plain Python, no Dagster) so the edge
collector runs without the orchestrator installed; this module only makes it configurable from the
Dagster side, with secrets from ``dg.EnvVar`` that Dagster resolves when the resource starts.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from resources.notifications import (
    SEVERITIES,
    ChannelOutcome,
    ChannelSettings,
    Notification,
    NotificationOutcome,
    NotificationSender,
    notifier_retry_policy,
)

__all__ = [
    "SEVERITIES",
    "ChannelOutcome",
    "Notification",
    "NotificationOutcome",
    "Notifier",
    "NotifierChannel",
]


class NotifierChannel(dg.Config, ChannelSettings):
    """One place notifications go (the fields of ``resources.notifications.ChannelSettings``), as Dagster
    config: ``token`` and ``password`` take a ``dg.EnvVar``."""

    __repr__ = ChannelSettings.__repr__
    __str__ = ChannelSettings.__repr__


class Notifier(dg.ConfigurableResource):
    """Sends operator notifications to every configured channel, with retries, and records each one.

    A channel failing (after its retries) is logged and recorded; it never raises into the caller, so a
    run goes on. ``send`` blocks; ``send_async`` sends the channels concurrently.
    """

    channels: list[NotifierChannel] = Field(default_factory=list, description="Where notifications go.")
    record_dir: str = Field(
        default="", description="Directory of the JSON-lines record; empty: <IHUB_DATA_DIR or .data>/notifications."
    )
    retries: int = Field(default=3, ge=0, description="Retries per channel after a failed attempt.")
    backoff_base_s: float = Field(default=0.5, ge=0, description="Wait before the first retry; doubles each time.")

    _sender: NotificationSender | None = PrivateAttr(default=None)

    def __repr__(self) -> str:
        kinds = ", ".join(channel.label for channel in self.channels)
        return f"Notifier(channels=[{kinds}], record_dir={self.record_dir!r})"

    __str__ = __repr__

    @property
    def sender(self) -> NotificationSender:
        """The plain sender this resource configures (built on first use, with EnvVars resolved)."""
        if self._sender is None:
            self._sender = NotificationSender(
                [ChannelSettings.model_validate(channel.model_dump()) for channel in self.channels],
                record_dir=self.record_dir or None,
                retry=notifier_retry_policy(self.retries, self.backoff_base_s),
            )
        return self._sender

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        """Nothing pooled outlives a blocking ``send``; kept for callers that close resources."""

    async def aclose(self) -> None:
        """Close the pooled HTTP connections of ``send_async``."""
        if self._sender is not None:
            await self._sender.aclose()

    def send(self, notification: Notification) -> NotificationOutcome:
        """Deliver to every channel (blocking), record, and return what happened."""
        return self.sender.send(notification)

    async def send_async(self, notification: Notification) -> NotificationOutcome:
        """Deliver to every channel concurrently, record, and return what happened."""
        return await self.sender.send_async(notification)

    def stats(self) -> dict[str, Any]:
        return self.sender.stats()

    def record_path(self, at: datetime | None = None) -> Path:
        return self.sender.record_path(at)

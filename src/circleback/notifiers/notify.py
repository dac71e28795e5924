"""``notify``: publish the notification for the bot that serves the user's platform.

Embedded form: with no Redis configured, each notification is written to
standard output as one JSON line, so a newcomer sees jobs fire without any
server.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TextIO

from ..core.abc import DeliveryContext, DeliveryReceipt, Notifier
from ..core.hookspecs import hookimpl
from ..core.models import Notification

__all__ = ["NotifyNotifier"]


class NotifyNotifier(Notifier):
    """Sends the notification JSON to the platform's bot."""

    name = "notify"
    description = (
        "Send the message to the user in the channel and thread where the job was created."
    )

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def deliver(
        self, notification: Notification, context: DeliveryContext
    ) -> DeliveryReceipt:
        stream = self._stream or sys.stdout
        line = json.dumps(notification.to_dict(), ensure_ascii=False, separators=(",", ":"))
        stream.write(line + "\n")
        stream.flush()
        return DeliveryReceipt(via="notify", note="stdout")


@hookimpl
def circleback_register_notifiers(register: Callable[[Notifier], None]) -> None:
    """Register the ``notify`` completion mode."""
    register(NotifyNotifier())

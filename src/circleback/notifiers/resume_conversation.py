"""``resume_conversation``: wake the agent so the LLM decides the next step.

Each delivery POSTs the notification JSON (the same fields as on Redis) to
``{core_url}/continue`` with the header ``Idempotency-Key: <notification_id>``
and, when ``CIRCLEBACK_CORE_TOKEN`` is set, ``Authorization: Bearer <token>``.

- A 2xx answer means done.
- A timeout, a connection error, a 5xx or a 429 is tried again, up to
  ``resume_attempts`` times with a short doubling backoff, all inside this one
  delivery (and within half the engine's delivery timeout, so the fallback
  always has time to run).
- After that, or at once on any other answer (a 4xx such as 401, or a
  redirect), or when no ``core_url`` is configured, the message goes out
  through ``notify`` with the same notification id, and the receipt says that
  it fell back and why (every failed try, in order); the engine keeps that
  note with the outbox row.

If the fallback fails too, the delivery fails and the outbox retries it later
(starting again with ``/continue``). Consumers deduplicate on the id: the core
on ``Idempotency-Key``, the bot on ``notification_id``.

httpx is imported, and the engine's client made, at the first delivery that
tries ``/continue``: an engine that never resumes a conversation does not load it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from ..core.abc import DeliveryContext, DeliveryFailed, DeliveryReceipt, Notifier, Runtime
from ..core.hookspecs import hookimpl
from ..core.models import Notification
from ..core.settings import Settings
from .notify import encode_notification

if TYPE_CHECKING:
    import httpx

    from ..core.settings import HttpTuning

__all__ = ["ResumeConversationNotifier", "continue_url"]

logger = logging.getLogger("circleback.notifiers.resume_conversation")

#: The part of the engine's delivery timeout that tries of ``/continue`` may use.
_RESUME_SHARE_OF_DELIVERY_TIMEOUT = 0.5


def continue_url(core_url: str) -> str:
    """The ``/continue`` endpoint of the core at ``core_url``."""
    return core_url.rstrip("/") + "/continue"


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


class _Retry(Exception):
    """One try of ``/continue`` failed in a way worth trying again."""


class ResumeConversationNotifier(Notifier):
    """Posts the message to the core's ``/continue`` endpoint; falls back to ``notify``."""

    name = "resume_conversation"
    description = (
        "Resume the agent's conversation with the message, so the assistant can take the "
        "next step itself; falls back to a plain notification if that fails."
    )

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None
        self._started = False

    async def start(self, runtime: Runtime) -> None:
        """Mark the notifier started; its HTTP client (one pool per engine) comes at first use."""
        self._started = True

    async def stop(self) -> None:
        """Close the HTTP client, if one was made."""
        self._started = False
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _http(self, tuning: HttpTuning) -> httpx.AsyncClient:
        """The engine's one client, made on first use.

        Nothing awaits between the test and the assignment, so deliveries that
        start together share one client.
        """
        client = self._client
        if client is None:
            client = self._client = _new_client(tuning)
        return client

    async def deliver(
        self, notification: Notification, context: DeliveryContext
    ) -> DeliveryReceipt:
        """Resume the conversation, or fall back to ``notify`` (see the module docstring)."""
        settings = context.runtime.settings
        if not settings.core_url:
            return await self._fall_back(notification, context, "no core URL is configured")
        if self._started:
            failure = await self._resume(self._http(settings.http), notification, context)
        else:
            async with _new_client(settings.http) as client:
                failure = await self._resume(client, notification, context)
        if failure is None:
            return DeliveryReceipt(via=self.name)
        return await self._fall_back(notification, context, failure)

    async def _resume(
        self, client: httpx.AsyncClient, notification: Notification, context: DeliveryContext
    ) -> str | None:
        """Try ``/continue``; ``None`` when the core took it, else why it did not."""
        settings = context.runtime.settings
        assert settings.core_url is not None
        url = continue_url(settings.core_url)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": str(notification.notification_id),
        }
        if settings.core_token:
            headers["Authorization"] = f"Bearer {settings.core_token}"
        body = encode_notification(notification).encode("utf-8")
        budget = settings.tuning.delivery_timeout_seconds * _RESUME_SHARE_OF_DELIVERY_TIMEOUT
        deadline = anyio.current_time() + budget
        failures: list[str] = []
        for attempt in range(1, settings.resume_attempts + 1):
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return _describe(failures, "out of time for more tries")
            timeout = min(settings.resume_timeout_seconds, remaining)
            try:
                status = await self._post_once(client, url, body, headers, seconds=timeout)
            except _Retry as exc:
                failures.append(str(exc))
            else:
                if 200 <= status < 300:
                    return None
                return _describe(failures, then=f"/continue answered {status}")
            if attempt < settings.resume_attempts:
                pause = _backoff(settings, attempt)
                if anyio.current_time() + pause >= deadline:
                    return _describe(failures, "out of time for more tries")
                logger.info(
                    "resuming %s failed (%s); trying again in %.2f s",
                    notification.notification_id, failures[-1], pause,
                )
                await anyio.sleep(pause)
        return _describe(failures)

    @staticmethod
    async def _post_once(
        client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], seconds: float
    ) -> int:
        """POST once and return the status; raises :class:`_Retry` for a retryable failure.

        The answer's body is never read: only the status counts, and a hostile or
        broken core cannot make circleback download anything.
        """
        import httpx

        try:
            with anyio.fail_after(seconds):
                async with client.stream(
                    "POST", url, content=body, headers=headers, timeout=seconds
                ) as response:
                    status = response.status_code
        except (TimeoutError, httpx.TimeoutException):
            raise _Retry(f"/continue did not answer within {seconds:g} s") from None
        except httpx.TransportError as exc:
            raise _Retry(f"/continue could not be reached: {type(exc).__name__}") from None
        if _retryable_status(status):
            raise _Retry(f"/continue answered {status}")
        return status

    async def _fall_back(
        self, notification: Notification, context: DeliveryContext, why: str
    ) -> DeliveryReceipt:
        """Deliver through ``notify`` with the same notification id, noting why."""
        logger.warning(
            "resuming the conversation of job %s failed (%s); sending notification %s "
            "through notify instead",
            notification.job_id, why, notification.notification_id,
        )
        try:
            receipt = await context.notifier("notify").deliver(notification, context)
        except DeliveryFailed as exc:
            raise DeliveryFailed(
                f"resume failed ({why}) and so did the notify fallback: {exc.reason}",
                retryable=exc.retryable,
            ) from exc
        note = f"fell back: {why}"
        if receipt.note:
            note += f"; notify: {receipt.note}"
        return DeliveryReceipt(via=receipt.via, note=note)


def _new_client(tuning: HttpTuning) -> httpx.AsyncClient:
    """A client for ``/continue``: the one every configured destination gets (the
    operator's CA file, limits and timeouts; no redirects, cookies or proxies)."""
    from ..net.httpclient import make_http_client

    return make_http_client(tuning)


def _describe(failures: list[str], aside: str | None = None, *, then: str | None = None) -> str:
    """Why ``/continue`` did not take a message, naming every try that failed.

    Runs of tries that failed alike are counted once, in order: "/continue
    answered 503 (2 tries), then /continue answered 401". ``then`` is a final
    answer not worth trying again; ``aside`` says why the tries stopped early.
    """
    parts = []
    for reason, run in itertools.groupby(failures):
        count = len(list(run))
        parts.append(f"{reason} ({count} {'try' if count == 1 else 'tries'})")
    if then is not None:
        parts.append(then)
    why = ", then ".join(parts) or "no try was made"
    return f"{why} ({aside})" if aside else why


def _backoff(settings: Settings, attempt: int) -> float:
    return float(settings.resume_backoff_seconds * 2 ** min(attempt - 1, 10))


@hookimpl
def circleback_register_notifiers(register: Callable[[Notifier], None]) -> None:
    """Register the ``resume_conversation`` completion mode."""
    register(ResumeConversationNotifier())

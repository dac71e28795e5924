"""``notify``: publish the notification for the bot that serves the user's platform.

With a Redis URL configured (``CIRCLEBACK_REDIS_URL``), the notification JSON
is PUBLISHed on the channel ``notifications:{platform}``, where the platform's
bot listens and forwards the message to the job's channel and thread.

Pub/sub keeps nothing: PUBLISH answers how many subscribers received the
message. Zero means the bot was not listening, so the delivery fails and the
outbox retries it with backoff — unless the operator chose fire and forget
(``CIRCLEBACK_NOTIFY_REQUIRE_SUBSCRIBER=false``). A Redis that cannot be
reached is handled the same way: the message stays in the outbox until Redis
is back. Every message carries its ``notification_id``, so a bot that sees
one twice (a PUBLISH that went out just before the connection broke) drops
the second.

Under asyncio the client is ``redis.asyncio``; under trio, which redis-py does
not support, the synchronous client runs in worker threads. Which one is
decided once, in :meth:`NotifyNotifier.start`. redis-py is imported only when
a Redis client is opened, so the standard output form does not load it.
Messages delivered together (a burst of finished jobs) go out in batches,
one pipelined round trip each (:mod:`circleback.notifiers.publish_batches`);
each message still gets its own answer, the number of its subscribers.

Embedded form: with no Redis configured, each notification is written to
standard output as one JSON line, so a newcomer sees jobs fire without any
server.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Protocol, TextIO

import anyio
import anyio.to_thread
import sniffio

from ..core.abc import DeliveryContext, DeliveryFailed, DeliveryReceipt, Notifier, Runtime
from ..core.hookspecs import hookimpl
from ..core.models import Notification
from ..core.settings import Settings
from .publish_batches import BatchingPublisher

__all__ = ["NotifyNotifier", "channel_for", "encode_notification"]

#: Most one-off Redis clients open at once (an engine that never started its plugins);
#: a started notifier sends its PUBLISHes in batches over one connection at a time.
_MAX_ONE_OFF_CLIENTS = 16
#: Socket timeouts of the Redis client; a delivery never waits on Redis longer than this.
_REDIS_TIMEOUT_SECONDS = 5.0


def channel_for(platform: str) -> str:
    """The pub/sub channel the bot of ``platform`` listens on."""
    return f"notifications:{platform}"


def encode_notification(notification: Notification) -> str:
    """The notification as the documented compact JSON text, always encodable as UTF-8.

    Text that UTF-8 cannot carry (a lone surrogate from a JSON ``\\ud800`` escape)
    is written as ``\\u`` escapes instead of breaking the delivery.
    """
    data = notification.to_dict()
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, separators=(",", ":"))
    return text


class _Publisher(Protocol):
    async def publish(self, channel: str, message: str) -> int: ...

    async def aclose(self) -> None: ...


def _timeout(settings: Settings) -> float:
    return min(_REDIS_TIMEOUT_SECONDS, settings.tuning.delivery_timeout_seconds)


class _AsyncioPublisher:
    """``redis.asyncio`` on the event loop (asyncio only)."""

    def __init__(self, url: str, timeout: float) -> None:
        import redis.asyncio
        import redis.asyncio.retry
        from redis.backoff import NoBackoff

        # One quick retry only: it renews a pooled connection that Redis closed meanwhile.
        # Longer waits belong to the outbox, which retries with backoff.
        self._client = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=redis.asyncio.retry.Retry(NoBackoff(), 1),
        )
        self._batches = BatchingPublisher(self._send_batch)

    async def publish(self, channel: str, message: str) -> int:
        return await self._batches.publish(channel, message)

    async def _send_batch(self, pairs: list[tuple[str, str]]) -> Sequence[object]:
        async with self._client.pipeline(transaction=False) as pipe:
            for channel, message in pairs:
                pipe.publish(channel, message)
            return list(await pipe.execute(raise_on_error=False))

    async def aclose(self) -> None:
        await self._client.aclose()


class _ThreadPublisher:
    """The synchronous client in worker threads (trio, or any loop redis.asyncio lacks)."""

    def __init__(self, url: str, timeout: float) -> None:
        import redis
        import redis.retry
        from redis.backoff import NoBackoff

        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=redis.retry.Retry(NoBackoff(), 1),
        )
        self._batches = BatchingPublisher(self._send_batch)

    async def publish(self, channel: str, message: str) -> int:
        return await self._batches.publish(channel, message)

    async def _send_batch(self, pairs: list[tuple[str, str]]) -> Sequence[object]:
        return await anyio.to_thread.run_sync(partial(self._send_batch_in_thread, pairs))

    def _send_batch_in_thread(self, pairs: list[tuple[str, str]]) -> Sequence[object]:
        with self._client.pipeline(transaction=False) as pipe:
            for channel, message in pairs:
                pipe.publish(channel, message)
            return list(pipe.execute(raise_on_error=False))

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._client.close)


def _open_publisher(url: str, timeout: float) -> _Publisher:
    if sniffio.current_async_library() == "asyncio":
        return _AsyncioPublisher(url, timeout)
    return _ThreadPublisher(url, timeout)


class NotifyNotifier(Notifier):
    """Sends the notification JSON to the platform's bot (see the module docstring)."""

    name = "notify"
    description = (
        "Send the message to the user in the channel and thread where the job was created."
    )

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._publisher: _Publisher | None = None
        self._one_off_slots = anyio.CapacityLimiter(_MAX_ONE_OFF_CLIENTS)

    async def start(self, runtime: Runtime) -> None:
        """Open the Redis client when a Redis URL is configured (nothing to open otherwise)."""
        settings = runtime.settings
        if settings.redis_url and self._publisher is None:
            self._publisher = _open_publisher(settings.redis_url, _timeout(settings))

    async def stop(self) -> None:
        """Close the Redis client."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.aclose()

    @asynccontextmanager
    async def _publisher_for(self, settings: Settings) -> AsyncIterator[_Publisher]:
        """The started client, or (for an engine that never started its plugins) a one-off."""
        if self._publisher is not None:
            yield self._publisher
            return
        assert settings.redis_url is not None
        async with self._one_off_slots:
            publisher = _open_publisher(settings.redis_url, _timeout(settings))
            try:
                yield publisher
            finally:
                with anyio.CancelScope(shield=True):
                    await publisher.aclose()

    async def deliver(
        self, notification: Notification, context: DeliveryContext
    ) -> DeliveryReceipt:
        """Publish ``notification``; raises :class:`DeliveryFailed` when no one got it."""
        settings = context.runtime.settings
        text = encode_notification(notification)
        if not settings.redis_url:
            stream = self._stream or sys.stdout
            try:
                stream.write(text + "\n")
                stream.flush()
            except OSError as exc:  # a closed pipe: the message waits for the next worker
                raise DeliveryFailed(f"standard output did not take the message: {exc}") from exc
            return DeliveryReceipt(via=self.name, note="stdout")
        from redis import RedisError

        channel = channel_for(notification.platform)
        try:
            async with self._publisher_for(settings) as publisher:
                receivers = await publisher.publish(channel, text)
        except (RedisError, OSError) as exc:
            raise DeliveryFailed(
                f"Redis did not take the message for {channel}: {type(exc).__name__}: {exc}"
            ) from exc
        if receivers > 0:
            plural = "s" if receivers != 1 else ""
            return DeliveryReceipt(via=self.name, note=f"{receivers} subscriber{plural}")
        if settings.notify_require_subscriber:
            raise DeliveryFailed(f"no subscriber listened on {channel}")
        return DeliveryReceipt(via=self.name, note="no subscriber listened (fire and forget)")


@hookimpl
def circleback_register_notifiers(register: Callable[[Notifier], None]) -> None:
    """Register the ``notify`` completion mode."""
    register(NotifyNotifier())

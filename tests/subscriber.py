"""A real Redis pub/sub subscriber for the tests: the part a platform's bot plays.

It listens in a thread with the synchronous redis-py client, so it works the
same under asyncio and trio, and it subscribes again whenever its connection
breaks (a test that stops Redis gets it back once Redis returns).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from types import TracebackType
from typing import Any

import anyio
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class Subscriber:
    """Collects every message published on ``channel`` (decoded from JSON) while it runs."""

    def __init__(self, url: str, channel: str) -> None:
        self.url = url
        self.channel = channel
        self._messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"subscriber {channel}", daemon=True)

    def __enter__(self) -> Subscriber:
        self._thread.start()
        if not self._subscribed.wait(timeout=10):
            self.close()
            raise TimeoutError(f"could not subscribe to {self.channel} on {self.url}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Everything received so far, in order."""
        with self._lock:
            return list(self._messages)

    def counts(self) -> Counter[str]:
        """How often each notification id arrived."""
        return Counter(message["notification_id"] for message in self.messages)

    async def wait_for(self, count: int, *, within: float = 15.0) -> list[dict[str, Any]]:
        """Wait until ``count`` messages arrived; returns all received."""
        with anyio.fail_after(within):
            while len(self.messages) < count:
                await anyio.sleep(0.02)
        return self.messages

    async def wait_for_ids(self, count: int, *, within: float = 30.0) -> Counter[str]:
        """Wait until ``count`` distinct notification ids arrived; returns the counts."""
        with anyio.fail_after(within):
            while len(self.counts()) < count:
                await anyio.sleep(0.05)
        return self.counts()

    def _run(self) -> None:
        while not self._stop.is_set():
            client = redis.Redis.from_url(
                self.url, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
            )
            pubsub = client.pubsub()
            try:
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.05)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._subscribed.set()
                    elif message["type"] == "message":
                        with self._lock:
                            self._messages.append(json.loads(message["data"]))
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                time.sleep(0.05)  # Redis is away: subscribe again once it is back
            finally:
                pubsub.close()
                client.close()

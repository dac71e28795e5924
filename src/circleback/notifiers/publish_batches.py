"""PUBLISHes gathered into batches: one round trip to Redis for all that arrive together.

A burst of finished jobs hands the deliverer hundreds of messages at once.
Sent one PUBLISH at a time, each pays a round trip and the client's
per-call work (a pooled connection taken and given back, a read awaited).
Here the first message to arrive is sent at once; those that arrive while
it is out wait and go together in the next batch, as one pipeline. A lone
message is not held back, and a burst costs one round trip per batch.

The caller that finds no batch out sends it (it *leads*). When its own
message is answered it hands the lead to the first message still waiting,
so no caller sends more than the batch its own message is in, and no task
of its own is needed (a notifier has no task group to start one in). A
batch is sent shielded from cancellation: the callers waiting on it are
answered whatever happens to the one that sent it. The Redis client's socket
timeout bounds how long that can take.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import anyio

__all__ = ["BatchingPublisher"]

#: Most PUBLISHes in one pipeline.
MAX_BATCH = 500

SendBatch = Callable[[list[tuple[str, str]]], Awaitable[Sequence[object]]]


class _Waiting:
    """One message waiting for its batch, and then its answer."""

    __slots__ = ("channel", "error", "message", "receivers", "sent", "settled", "woken")

    def __init__(self, channel: str, message: str) -> None:
        self.channel = channel
        self.message = message
        #: Set when the message is answered, or when the lead is handed to its caller.
        self.woken = anyio.Event()
        #: Taken into a batch (no longer waiting in the queue).
        self.sent = False
        self.settled = False
        self.receivers = 0
        self.error: BaseException | None = None


class BatchingPublisher:
    """PUBLISH through ``send_batch``, which sends (channel, message) pairs in one pipeline.

    ``send_batch`` returns one answer per pair, in order: the number of
    subscribers that got it, or the exception that command raised. If it
    raises, every message of the batch fails with that exception.
    """

    def __init__(self, send_batch: SendBatch) -> None:
        self._send_batch = send_batch
        self._waiting: deque[_Waiting] = deque()
        self._leading = False

    async def publish(self, channel: str, message: str) -> int:
        """Publish ``message`` on ``channel``; returns how many subscribers received it."""
        item = _Waiting(channel, message)
        self._waiting.append(item)
        if self._leading:
            try:
                await item.woken.wait()
            except BaseException:
                if not item.sent:
                    self._waiting.remove(item)  # not sent: nobody else will wait on it
                    if item.woken.is_set():
                        self._pass_lead()  # the lead was handed over just as it was cancelled
                raise
        if not item.settled:
            await self._lead(item)
            if not item.settled:
                raise RuntimeError("a message was lost from its batch")  # never expected
        if item.error is not None:
            raise item.error
        return item.receivers

    async def _lead(self, own: _Waiting) -> None:
        """Send batches until ``own`` is answered, then hand the lead on."""
        self._leading = True
        try:
            with anyio.CancelScope(shield=True):
                while not own.settled and self._waiting:  # ``own`` is in the first batch
                    count = min(len(self._waiting), MAX_BATCH)
                    batch = [self._waiting.popleft() for _ in range(count)]
                    for item in batch:
                        item.sent = True
                    await self._send(batch)
        finally:
            self._pass_lead()

    async def _send(self, batch: list[_Waiting]) -> None:
        answers: Sequence[object]
        try:
            answers = await self._send_batch([(item.channel, item.message) for item in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers to a batch of {len(batch)}")
        except BaseException as exc:
            answers = [exc] * len(batch)
            if not isinstance(exc, Exception):
                self._settle(batch, answers)
                raise
        self._settle(batch, answers)

    @staticmethod
    def _settle(batch: list[_Waiting], answers: Sequence[object]) -> None:
        for item, answer in zip(batch, answers, strict=True):
            item.settled = True
            if isinstance(answer, BaseException):
                item.error = answer
            else:
                item.receivers = int(answer)  # type: ignore[call-overload]
            item.woken.set()

    def _pass_lead(self) -> None:
        """Hand the lead to the first message waiting, or give it up when none is."""
        if self._waiting:
            self._waiting[0].woken.set()
        else:
            self._leading = False

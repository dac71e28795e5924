"""circleback's default limits, as plain numbers for the APScheduler runs.

The APScheduler runs get the same concurrency and HTTP limits that circleback
gives itself, but must not import circleback to learn them: a process pays for
every module it loads, and peak RSS is one of the figures compared. The
harness's smoke test checks that these equal circleback's defaults.
"""

from __future__ import annotations

#: ``EngineTuning().max_concurrent_checks``: jobs running at once.
MAX_CONCURRENT_JOBS = 1_000
#: ``HttpTuning()``: connect and read timeouts, open and kept-alive connections.
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 100
MAX_KEEPALIVE_CONNECTIONS = 20

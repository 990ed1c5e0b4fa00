"""One clock for every process: with the Redis store, Redis's clock decides expiry.

A generic worker runs under libfaketime 90 s ahead of the main process (Debian's ``faketime``;
the test command installs it). A session created on the main process with ``ttl: 30s`` must
still be readable through both 20 s later, with the same ``Expires`` from both, and gone from
both after 32 s: were expiry judged by each process's own clock, the worker would see it
expired from the start.
"""

from __future__ import annotations

import shutil
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import pytest
from support.http_client import create_session, get, session_id, session_url

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import DeploymentFactory, RedisFactory
    from support.deployment import Deployment

    from devtools.synapse import SynapseServer

pytestmark = [
    pytest.mark.workers,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.usefixtures("needs_module"),
]

SKEW_S = 90
TTL_S = 30


@pytest.fixture
def skewed(
    deployment_factory: DeploymentFactory, redis_factory: RedisFactory
) -> Iterator[Deployment]:
    faketime = shutil.which("faketime")
    if faketime is None:
        pytest.fail(
            "faketime is not installed (scripts/test installs it: apt-get install faketime)"
        )
    with (
        redis_factory() as redis,
        deployment_factory(
            "takeover",
            {"store": "redis", "ttl": f"{TTL_S}s", "redis": {"url": redis.url}},
            redis=redis,
            workers=1,
            worker_wrapper=[faketime, "-f", f"+{SKEW_S}s"],
        ) as deployment,
    ):
        yield deployment


def _on(process: SynapseServer, url: str) -> str:
    return session_url(process, session_id(url))


def _date(header: str | None) -> float:
    assert header is not None
    return parsedate_to_datetime(header).timestamp()


def test_expiry_follows_redis_clock_not_the_process_clock(skewed: Deployment) -> None:
    main, worker = skewed.main, skewed.workers[0]
    created_at = time.time()
    url, created = create_session(main, b"offer")

    # The worker's clock really is ahead: Twisted dates its responses by it.
    from_worker = get(worker, _on(worker, url))
    assert from_worker.status == 200, from_worker
    skew = _date(from_worker.header("Date")) - time.time()
    assert abs(skew - SKEW_S) < 5, f"the worker's clock is {skew:.0f} s ahead, not {SKEW_S}"
    assert from_worker.header("Expires") == created.header("Expires")

    time.sleep(max(0.0, created_at + 20 - time.time()))
    for process in (worker, main):
        resp = get(process, _on(process, url))
        assert resp.status == 200, f"{process!r} after 20 s: {resp}"
        assert resp.header("Expires") == created.header("Expires")

    time.sleep(max(0.0, created_at + TTL_S + 2 - time.time()))
    for process in (worker, main):
        resp = get(process, _on(process, url))
        assert resp.status == 404, f"{process!r} after {TTL_S + 2} s: {resp}"

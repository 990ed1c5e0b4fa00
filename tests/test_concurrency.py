"""Races between Synapse processes sharing the Redis store.

One deployment (main process plus two workers, delegation mode so that every process can
create sessions, ``store: redis``, ``capacity`` 5) boots for the module. Threads released
together by a `threading.Barrier` send their requests to different processes at once:

- writes racing with the same ``If-Match``: exactly one wins (202), every other one gets 412
  describing the winner's version, and the session ends up with the winner's payload and ETag;
- creates racing for the last places: exactly ``capacity`` succeed, the rest get 429, and no
  session is evicted.

Every test starts and ends with no session in the store (its keys are deleted in between).
"""

from __future__ import annotations

import threading
from functools import partial
from typing import TYPE_CHECKING

import pytest
from support.http_client import (
    SESSION_PREFIX,
    Response,
    delete,
    errcode,
    get,
    put,
    request,
    session_url,
)
from support.http_client import etag as _etag

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from conftest import DeploymentFactory, RedisFactory
    from support.deployment import Deployment

    from devtools.redis import RedisServer
    from devtools.synapse import SynapseServer

pytestmark = [
    pytest.mark.workers,
    pytest.mark.redis,
    pytest.mark.usefixtures("needs_module"),
]

CAPACITY = 5
KEY_PREFIX = "concurrency-test:"
WRITERS_PER_PROCESS = 2
WRITE_ROUNDS = 20
CREATORS_PER_PROCESS = 4
CREATE_ROUNDS = 3
#: Bound on a barrier wait and on each thread of a round.
ROUND_TIMEOUT_S = 30.0


def _create_on(process: SynapseServer, body: bytes) -> Response:
    """POST to the session path of ``process`` (delegation mode's create endpoint)."""
    return request(
        process,
        "POST",
        SESSION_PREFIX.rstrip("/"),
        body=body,
        headers=[("Content-Type", "text/plain")],
    )


def _session_id(created: Response) -> str:
    url = created.json_dict().get("url")
    assert isinstance(url, str), created
    assert SESSION_PREFIX in url, url
    return url.rsplit("/", 1)[1]


def _race(calls: list[Callable[[], Response]]) -> list[Response]:
    """Run every call in its own thread, all released at once; their answers, in order."""
    barrier = threading.Barrier(len(calls), timeout=ROUND_TIMEOUT_S)
    results: list[Response | BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = calls[index]()
        except BaseException as exc:  # reported below, in the test's thread
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(ROUND_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "a racing request hung"
    answers: list[Response] = []
    for result in results:
        if isinstance(result, BaseException):
            raise AssertionError(f"a racing request failed: {result!r}") from result
        assert result is not None
        answers.append(result)
    return answers


@pytest.fixture(scope="module")
def redis(redis_factory: RedisFactory) -> Iterator[RedisServer]:
    with redis_factory() as server:
        yield server


@pytest.fixture(scope="module")
def deployment(deployment_factory: DeploymentFactory, redis: RedisServer) -> Iterator[Deployment]:
    config = {
        "store": "redis",
        "redis": {"url": redis.url, "key_prefix": KEY_PREFIX},
        "capacity": CAPACITY,
    }
    with deployment_factory("delegation", config, redis=redis, workers=2) as dep:
        yield dep


@pytest.fixture(autouse=True)
def empty_store(redis: RedisServer, deployment: Deployment) -> Iterator[None]:
    """No session before and after each test (a failed test may leave some behind)."""
    redis.delete_prefix(KEY_PREFIX)
    yield
    redis.delete_prefix(KEY_PREFIX)


def test_racing_writes_with_the_same_if_match_have_exactly_one_winner(
    deployment: Deployment,
) -> None:
    writers = [p for p in deployment.processes for _ in range(WRITERS_PER_PROCESS)]
    for round_no in range(WRITE_ROUNDS):
        created = _create_on(deployment.main, f"round {round_no}".encode())
        assert created.status == 201, created
        sid, etag0 = _session_id(created), _etag(created)
        payloads = [f"round {round_no} writer {i}".encode() for i in range(len(writers))]
        answers = _race(
            [
                partial(put, process, session_url(process, sid), payload, etag=etag0)
                for process, payload in zip(writers, payloads, strict=True)
            ]
        )

        statuses = sorted(resp.status for resp in answers)
        assert statuses == [202] + [412] * (len(writers) - 1), (round_no, answers)
        winner = next(i for i, resp in enumerate(answers) if resp.status == 202)
        winning_etag = _etag(answers[winner])
        for resp in answers:
            if resp.status == 412:
                assert resp.json_dict().get("org.matrix.msc4108.errcode") == (
                    "M_CONCURRENT_WRITE"
                ), resp
                # Only one write succeeded, so every loser saw the winner's version.
                assert _etag(resp) == winning_etag, (round_no, resp, answers[winner])

        for process in deployment.processes:
            final = get(process, session_url(process, sid))
            assert final.status == 200, final
            assert final.body == payloads[winner], (round_no, process, final)
            assert _etag(final) == winning_etag

        assert delete(deployment.main, session_url(deployment.main, sid)).status == 204


def test_racing_creates_fill_the_capacity_exactly_without_evicting(
    deployment: Deployment,
) -> None:
    creators = [p for p in deployment.processes for _ in range(CREATORS_PER_PROCESS)]
    assert len(creators) > CAPACITY
    for round_no in range(CREATE_ROUNDS):
        payloads = [f"round {round_no} creator {i}".encode() for i in range(len(creators))]
        answers = _race(
            [
                partial(_create_on, process, payload)
                for process, payload in zip(creators, payloads, strict=True)
            ]
        )

        created = {i: resp for i, resp in enumerate(answers) if resp.status == 201}
        refused = [resp for resp in answers if resp.status != 201]
        assert len(created) == CAPACITY, (round_no, answers)
        for resp in refused:
            assert resp.status == 429, resp
            assert errcode(resp) == "M_LIMIT_EXCEEDED", resp

        # Every created session is live and intact on every process: nothing was evicted.
        for i, resp in created.items():
            sid = _session_id(resp)
            for process in deployment.processes:
                current = get(process, session_url(process, sid))
                assert current.status == 200, (round_no, process, current)
                assert current.body == payloads[i]
                assert _etag(current) == _etag(resp)

        # Still full: one more create, anywhere, is refused.
        for process in deployment.processes:
            extra = _create_on(process, b"one too many")
            assert extra.status == 429, (process, extra)

        # Free the places for the next round, through every process in turn.
        for n, resp in enumerate(created.values()):
            process = deployment.processes[n % len(deployment.processes)]
            gone = delete(process, session_url(process, _session_id(resp)))
            assert gone.status == 204, gone

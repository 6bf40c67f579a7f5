"""Tests of bot.runcomfy.RunComfyClient against the fake RunComfy server (tests/fakes/runcomfy.py)."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from bot.runcomfy import (
    CancelResult,
    GenerationParams,
    JobResult,
    JobStatus,
    Phase,
    RunComfyAuthError,
    RunComfyBalanceError,
    RunComfyClient,
    RunComfyError,
    RunComfyForbiddenError,
    RunComfyModelError,
    RunComfyNotFoundError,
    RunComfyProtocolError,
    RunComfyUnavailableError,
    RunComfyValidationError,
    SubmitOutcomeUnknown,
    normalize_status,
)
from tests.fakes.runcomfy import FakeRunComfy, JobScript, make_image

pytestmark = pytest.mark.timeout(20)

TOKEN = "test-runcomfy-token"
FAST = JobScript(queue_seconds=0.05, run_seconds=0.05)


@pytest.fixture
async def fake() -> AsyncIterator[FakeRunComfy]:
    async with FakeRunComfy(TOKEN) as server:
        server.default_script = FAST
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_client(
    session: aiohttp.ClientSession, base_url: str, *, token: str = TOKEN, **kwargs: Any
) -> RunComfyClient:
    opts: dict[str, Any] = {
        "request_timeout": 2.0,
        "max_attempts": 4,
        "backoff_base": 0.01,
        "backoff_cap": 1.0,
    }
    opts.update(kwargs)
    return RunComfyClient(session, base_url=base_url, token=token, **opts)


@pytest.fixture
def client(session: aiohttp.ClientSession, fake: FakeRunComfy) -> RunComfyClient:
    return make_client(session, fake.base_url)


@pytest.fixture
def image_url(fake: FakeRunComfy) -> str:
    return fake.host_file("input.png", make_image(640, 480), "image/png")


@pytest.fixture
def params(image_url: str) -> GenerationParams:
    return GenerationParams(prompt="a cat surfing a wave", img_url=image_url)


class SleepRecorder:
    """Injectable sleep: records the requested delays and only yields to the loop."""

    def __init__(self, hook: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.delays: list[float] = []
        self.hook = hook

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.hook is not None:
            await self.hook(len(self.delays))
        await asyncio.sleep(0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def wait_until(predicate: Callable[[], bool], limit: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def poll_until_done(client: RunComfyClient, request_id: str) -> list[JobStatus]:
    seen: list[JobStatus] = []
    for _ in range(200):
        st = await client.status(request_id)
        seen.append(st)
        if st.status in ("completed", "cancelled"):
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError("job never finished")


# ------------------------------------------------------------------------------------------ happy paths


def test_to_payload_omits_none() -> None:
    p = GenerationParams(prompt="p", img_url="https://x/y.png")
    assert p.to_payload() == {
        "prompt": "p",
        "img_url": "https://x/y.png",
        "resolution": "480P",
        "prompt_extend": True,
        "duration": 5,
    }
    full = GenerationParams(
        prompt="p",
        img_url="u",
        negative_prompt="n",
        resolution="1080P",
        template="flying",
        seed=0,
        prompt_extend=False,
    )
    assert full.to_payload() == {
        "prompt": "p",
        "img_url": "u",
        "negative_prompt": "n",
        "resolution": "1080P",
        "template": "flying",
        "seed": 0,
        "prompt_extend": False,
        "duration": 5,
    }


async def test_happy_path_submit_status_result_video(
    fake: FakeRunComfy, client: RunComfyClient, session: aiohttp.ClientSession, params: GenerationParams
) -> None:
    fake.default_script = JobScript(queue_seconds=0.15, run_seconds=0.1, initial_queue_position=4)
    sub = await client.submit(params)
    assert sub.request_id in fake.jobs
    assert sub.status_url == f"{fake.base_url}/requests/{sub.request_id}/status"
    assert sub.result_url == f"{fake.base_url}/requests/{sub.request_id}/result"
    assert sub.cancel_url == f"{fake.base_url}/requests/{sub.request_id}/cancel"
    assert fake.jobs[sub.request_id].params == params.to_payload()

    early = await client.result(sub.request_id)
    assert early.status == "in_queue"
    assert early.video_urls == ()
    assert early.finished_at is None

    seen = await poll_until_done(client, sub.request_id)
    assert seen[0].status == "in_queue"
    assert seen[0].queue_position is not None and 1 <= seen[0].queue_position <= 4
    assert seen[-1] == JobStatus(status="completed", queue_position=None)
    assert fake.status_calls(sub.request_id) == len(seen)

    res = await client.result(sub.request_id)
    assert res.status == "succeeded"
    assert res.video_urls == (fake.output_url(sub.request_id),)
    assert res.error is None
    assert res.created_at and res.finished_at
    async with session.get(res.video_urls[0]) as resp:
        assert resp.status == 200
        assert await resp.read() == fake.video_bytes
    api_requests = [r for r in fake.requests if r.path.startswith("/v1/")]
    assert api_requests and all(r.authorized for r in api_requests)


async def test_output_videos_list(
    fake: FakeRunComfy, client: RunComfyClient, params: GenerationParams
) -> None:
    fake.scripts.append(JobScript(queue_seconds=0, run_seconds=0, output_shape="videos"))
    sub = await client.submit(params)
    res = await client.result(sub.request_id)
    assert res == JobResult(
        status="succeeded",
        video_urls=(fake.output_url(sub.request_id),),
        error=None,
        created_at=res.created_at,
        finished_at=res.finished_at,
    )


async def test_manual_advance_and_unknown_status(
    fake: FakeRunComfy, client: RunComfyClient, params: GenerationParams
) -> None:
    fake.scripts.append(JobScript(queue_seconds=None, run_seconds=None, unknown_status="Warming_Up"))
    sub = await client.submit(params)
    assert (await client.status(sub.request_id)).status == "warming_up"
    assert (await client.result(sub.request_id)).status == "in_queue"
    fake.advance(sub.request_id)
    assert (await client.result(sub.request_id)).status == "in_progress"
    fake.advance(sub.request_id)
    assert (await client.status(sub.request_id)).status == "completed"
    assert (await client.result(sub.request_id)).status == "succeeded"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ({"error_message": "GPU exploded", "error_code": 7}, "GPU exploded (code 7)"),
        ({"weird": [1, 2]}, '{"weird": [1, 2]}'),
        (["first problem", {"msg": "second problem"}], "first problem; second problem"),
        ("plain failure", "plain failure"),
        (42, "42"),
        (None, None),
        ("x" * 1000, None),  # checked for truncation below
    ],
)
async def test_failed_result_renders_error(
    fake: FakeRunComfy, client: RunComfyClient, params: GenerationParams, error: Any, expected: str | None
) -> None:
    fake.scripts.append(JobScript(queue_seconds=0, run_seconds=0, outcome="failed", error=error))
    sub = await client.submit(params)
    # Contract: failed runs show "completed" on /status; success is decided by /result.
    assert (await client.status(sub.request_id)).status == "completed"
    res = await client.result(sub.request_id)
    assert res.status == "failed"
    assert res.video_urls == ()
    if isinstance(error, str) and len(error) > 300:
        assert res.error is not None and len(res.error) <= 300 and res.error.startswith("xxx")
    else:
        assert res.error == expected


async def test_cancel_queued_and_running(
    fake: FakeRunComfy, client: RunComfyClient, params: GenerationParams
) -> None:
    fake.scripts.append(JobScript(queue_seconds=None, run_seconds=None))
    fake.scripts.append(JobScript(queue_seconds=0, run_seconds=None))
    queued = await client.submit(params)
    running = await client.submit(params)

    c1 = await client.cancel(queued.request_id)
    assert c1 == CancelResult(status="cancelled", outcome="cancelled", cancelled=True)
    assert (await client.status(queued.request_id)).status == "cancelled"
    assert (await client.result(queued.request_id)).status == "cancelled"

    c2 = await client.cancel(running.request_id)
    assert c2 == CancelResult(status="in_progress", outcome="not_cancellable", cancelled=False)
    assert fake.jobs[running.request_id].cancel_calls == 1
    fake.advance(running.request_id)
    assert (await client.result(running.request_id)).status == "succeeded"


# ------------------------------------------------------------------------------------------ error mapping


@pytest.mark.parametrize(
    ("status", "body", "exc_type", "code"),
    [
        (401, {"error_code": 400004, "error_message": "Invalid token"}, RunComfyAuthError, 400004),
        (401, {"message": "nope"}, RunComfyAuthError, None),
        (403, {"error_message": "forbidden"}, RunComfyAuthError, None),
        (403, {"error_code": 403001, "error_message": "not yours"}, RunComfyForbiddenError, 403001),
        (404, {"error_code": 404001, "error_message": "gone"}, RunComfyNotFoundError, 404001),
        (404, {"detail": "Not Found"}, RunComfyNotFoundError, None),
        (402, {"error_message": "pay up"}, RunComfyBalanceError, None),
        (400, {"error_code": 400002, "error_message": "no balance"}, RunComfyBalanceError, 400002),
        (400, {"error_code": "400001", "error_message": "unknown model"}, RunComfyModelError, 400001),
        (
            422,
            {"error_code": 422001, "error_message": "bad", "detail": [{"loc": ["body", "x"], "msg": "m"}]},
            RunComfyValidationError,
            422001,
        ),
        (422, {"detail": [{"loc": ["body", "seed"], "msg": "not int"}]}, RunComfyValidationError, None),
        (400, {"detail": [{"loc": ["body", "prompt"], "msg": "too long"}]}, RunComfyValidationError, None),
        (400, {"error_message": "something else"}, RunComfyError, None),
        (418, {"error_code": 999999, "message": "teapot"}, RunComfyError, 999999),
        (400, None, RunComfyProtocolError, None),  # HTML error page
    ],
)
@pytest.mark.parametrize("endpoint", ["status", "result", "cancel", "submit"])
async def test_error_codes_mapped(
    fake: FakeRunComfy,
    client: RunComfyClient,
    params: GenerationParams,
    endpoint: str,
    status: int,
    body: Any,
    exc_type: type[RunComfyError],
    code: int | None,
) -> None:
    request_id = "abc-123"
    if endpoint != "submit":
        request_id = (await client.submit(params)).request_id
    if body is None:
        fake.fail_next(endpoint, status, raw=b"<html><body>Bad Request</body></html>")
    else:
        fake.fail_next(endpoint, status, body=body)
    call: Callable[[], Awaitable[object]] = {
        "submit": lambda: client.submit(params),
        "status": lambda: client.status(request_id),
        "result": lambda: client.result(request_id),
        "cancel": lambda: client.cancel(request_id),
    }[endpoint]
    with pytest.raises(RunComfyError) as info:
        await call()
    assert type(info.value) is exc_type
    assert info.value.code == code
    assert info.value.http_status == status
    assert len(fake.requests_to(endpoint)) == 1  # client errors are never retried
    if exc_type is RunComfyValidationError:
        assert isinstance(info.value, RunComfyValidationError)
        assert info.value.detail == body["detail"]
        assert body["detail"][0]["msg"] in str(info.value)


@pytest.mark.parametrize("endpoint", ["status", "result", "cancel", "submit"])
async def test_http_200_with_error_code_is_an_error(
    fake: FakeRunComfy, client: RunComfyClient, params: GenerationParams, endpoint: str
) -> None:
    sub = await client.submit(params)
    fake.fail_next(endpoint, 200, body={"error_code": 404001, "error_message": "Request expired"})
    call: Callable[[], Awaitable[object]] = {
        "submit": lambda: client.submit(params),
        "status": lambda: client.status(sub.request_id),
        "result": lambda: client.result(sub.request_id),
        "cancel": lambda: client.cancel(sub.request_id),
    }[endpoint]
    with pytest.raises(RunComfyNotFoundError, match="Request expired") as info:
        await call()
    assert info.value.code == 404001
    assert info.value.http_status == 200


async def test_real_server_errors(
    fake: FakeRunComfy, session: aiohttp.ClientSession, client: RunComfyClient, params: GenerationParams
) -> None:
    bad_token = make_client(session, fake.base_url, token="wrong-token")
    with pytest.raises(RunComfyAuthError) as auth:
        await bad_token.submit(params)
    assert auth.value.code == 400004 and auth.value.http_status == 401
    with pytest.raises(RunComfyAuthError):
        await bad_token.status("whatever")

    bad_model = make_client(session, fake.base_url, model="wan-ai/wan-9/nothing")
    with pytest.raises(RunComfyModelError) as model:
        await bad_model.submit(params)
    assert model.value.code == 400001

    with pytest.raises(RunComfyNotFoundError) as nf:
        await client.result("no-such-request")
    assert nf.value.code == 404001 and nf.value.http_status == 404

    fake.balance = 1
    await client.submit(params)
    with pytest.raises(RunComfyBalanceError) as bal:
        await client.submit(params)
    assert bal.value.code == 400002 and bal.value.http_status == 400
    assert len(fake.jobs) == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"prompt": "p" * 801}, "prompt"),
        ({"negative_prompt": "n" * 501}, "negative_prompt"),
        ({"resolution": "720P"}, "resolution"),
        ({"img_url": ""}, "img_url"),
        ({"duration": 10}, "duration"),
    ],
)
async def test_payload_validation(
    fake: FakeRunComfy, client: RunComfyClient, params: GenerationParams, changes: dict[str, Any], field: str
) -> None:
    fields = {name: getattr(params, name) for name in GenerationParams.__slots__}
    fields.update(changes)
    with pytest.raises(RunComfyValidationError) as info:
        await client.submit(GenerationParams(**fields))
    assert info.value.code == 422001 and info.value.http_status == 422
    assert info.value.detail[0]["loc"] == ["body", field]
    assert field in str(info.value)
    assert not fake.jobs
    # Boundary values are accepted.
    ok = dict(fields, prompt="p" * 800, negative_prompt="n" * 500, resolution="1080P", img_url=params.img_url)
    ok["duration"] = 5
    await client.submit(GenerationParams(**ok))


@pytest.mark.parametrize("bad_id", ["", "../etc", "a/b", "a b", "..", "x?y=1", "é"])
async def test_request_id_validated_before_use(
    fake: FakeRunComfy, client: RunComfyClient, bad_id: str
) -> None:
    for call in (client.status, client.result, client.cancel):
        with pytest.raises(ValueError):
            await call(bad_id)
    assert not fake.requests


# ------------------------------------------------------------------------------------------ retries


async def test_429_retry_after_seconds_is_honoured(
    fake: FakeRunComfy, session: aiohttp.ClientSession, params: GenerationParams
) -> None:
    client = make_client(session, fake.base_url, backoff_cap=5.0)
    sub = await client.submit(params)
    fake.fail_next("status", 429, retry_after="0.3")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    st = await client.status(sub.request_id)
    elapsed = loop.time() - t0
    assert st.status in ("in_queue", "in_progress", "completed")
    assert 0.28 <= elapsed < 2.0
    calls = fake.requests_to("status")
    assert len(calls) == 2
    assert calls[1].at - calls[0].at >= 0.28


async def test_429_retry_after_http_date_is_capped(
    fake: FakeRunComfy, session: aiohttp.ClientSession, params: GenerationParams
) -> None:
    sleep = SleepRecorder()
    client = make_client(session, fake.base_url, backoff_cap=3.0, sleep=sleep)
    sub = await client.submit(params)
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    fake.fail_next("result", 429, retry_after=later)
    fake.fail_next("result", 503, retry_after="0.25")
    await client.result(sub.request_id)
    assert sleep.delays == [3.0, 0.25]


async def test_429_without_retry_after_and_submit_429_retried(
    fake: FakeRunComfy, session: aiohttp.ClientSession, params: GenerationParams
) -> None:
    sleep = SleepRecorder()
    client = make_client(session, fake.base_url, backoff_base=0.5, backoff_cap=10.0, sleep=sleep)
    fake.fail_next("submit", 429, times=2)
    sub = await client.submit(params)
    assert len(fake.requests_to("submit")) == 3
    assert list(fake.jobs) == [sub.request_id]
    # Full jitter: uniform(0, min(cap, base * 2**(attempt-1))).
    assert len(sleep.delays) == 2
    assert 0 <= sleep.delays[0] <= 0.5 and 0 <= sleep.delays[1] <= 1.0

    fake.fail_next("submit", 429, times=10)
    with pytest.raises(RunComfyUnavailableError) as info:
        await client.submit(params)
    assert info.value.http_status == 429
    assert len(fake.requests_to("submit")) == 3 + 4
    assert len(fake.jobs) == 1


async def test_backoff_is_exponential_and_capped(fake: FakeRunComfy, session: aiohttp.ClientSession) -> None:
    sleep = SleepRecorder()
    client = make_client(
        session, fake.base_url, backoff_base=1.0, backoff_cap=4.0, max_attempts=8, sleep=sleep
    )
    fake.fail_next("status", 503, times=20)
    with pytest.raises(RunComfyUnavailableError):
        await client.status("some-id")
    assert len(sleep.delays) == 7
    ceilings = [1, 2, 4, 4, 4, 4, 4]
    assert all(0 <= d <= c for d, c in zip(sleep.delays, ceilings, strict=True))


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"error_code": 500001, "error_message": "Internal error"}),
        (503, {"error_message": "Service unavailable"}),
        (502, None),
        (200, {"error_code": 500001, "error_message": "try again"}),
    ],
)
async def test_transient_bursts_are_retried(
    fake: FakeRunComfy, client: RunComfyClient, params: GenerationParams, status: int, body: Any
) -> None:
    sub = await client.submit(params)
    await wait_until(lambda: fake.job_state(sub.request_id) == "succeeded")
    for endpoint in ("status", "result"):
        if body is None:
            fake.fail_next(endpoint, status, raw=b"<html>Bad Gateway</html>", times=3)
        else:
            fake.fail_next(endpoint, status, body=body, times=3)
    assert (await client.status(sub.request_id)).status == "completed"
    assert (await client.result(sub.request_id)).status == "succeeded"
    assert len(fake.requests_to("status")) == 4
    assert len(fake.requests_to("result")) == 4


async def test_burst_longer_than_attempts_raises_unavailable(
    fake: FakeRunComfy, client: RunComfyClient, params: GenerationParams
) -> None:
    sub = await client.submit(params)
    fake.fail_next("cancel", 503, times=10)
    with pytest.raises(RunComfyUnavailableError) as info:
        await client.cancel(sub.request_id)
    assert info.value.http_status == 503
    assert len(fake.requests_to("cancel")) == 4  # max_attempts

    fake.fail_next("status", 500, body={"error_code": 500001, "error_message": "boom"}, times=10)
    with pytest.raises(RunComfyUnavailableError) as info2:
        await client.status(sub.request_id)
    assert info2.value.code == 500001


async def test_status_timeout_is_retried(
    fake: FakeRunComfy, session: aiohttp.ClientSession, params: GenerationParams
) -> None:
    client = make_client(session, fake.base_url, request_timeout=0.2)
    sub = await client.submit(params)
    fake.fail_next("status", 0, delay=1.0)
    st = await client.status(sub.request_id)
    assert st.status in ("in_queue", "in_progress", "completed")
    assert len(fake.requests_to("status")) == 2

    fake.fail_next("result", 0, delay=1.0, times=10)
    with pytest.raises(RunComfyUnavailableError, match="timeout"):
        await client.result(sub.request_id)


# ------------------------------------------------------------------------------------------ malformed bodies


async def test_malformed_json_retried_on_status_and_result(
    fake: FakeRunComfy, client: RunComfyClient, params: GenerationParams
) -> None:
    sub = await client.submit(params)
    fake.fail_next("status", 200, raw=b'{"req', times=2)
    fake.fail_next("result", 200, raw=b"\xff\xfe not json")
    assert (await client.status(sub.request_id)).status in ("in_queue", "in_progress", "completed")
    assert (await client.result(sub.request_id)).status in ("in_queue", "in_progress", "succeeded")
    assert len(fake.requests_to("status")) == 3
    assert len(fake.requests_to("result")) == 2

    fake.fail_next("status", 200, raw=b'{"req', times=10)
    with pytest.raises(RunComfyProtocolError):
        await client.status(sub.request_id)
    assert len(fake.requests_to("status")) == 3 + 4


@pytest.mark.parametrize(
    "body",
    [
        ["not", "an", "object"],
        {"request_id": "x"},  # no status
        {"status": 5},
        {"status": "succeeded", "output": "https://example/video.mp4"},
    ],
)
async def test_unexpected_shapes_are_protocol_errors(
    fake: FakeRunComfy, client: RunComfyClient, body: Any
) -> None:
    fake.fail_next("result", 200, body=body)
    with pytest.raises(RunComfyProtocolError):
        await client.result("some-id")
    assert len(fake.requests_to("result")) == 1


@pytest.mark.parametrize(
    "raw", [b'{"req', b"", b"<html>OK</html>", b'{"status_url": "x"}', b'{"request_id": "../../x"}']
)
async def test_submit_2xx_garbage_is_outcome_unknown(
    fake: FakeRunComfy, client: RunComfyClient, params: GenerationParams, raw: bytes
) -> None:
    fake.fail_next("submit", 200, raw=raw)
    with pytest.raises(SubmitOutcomeUnknown):
        await client.submit(params)
    assert len(fake.requests_to("submit")) == 1


# ------------------------------------------------------------------------------------------ submit safety


async def test_submit_timeout_is_outcome_unknown_and_not_retried(
    fake: FakeRunComfy, session: aiohttp.ClientSession, params: GenerationParams
) -> None:
    client = make_client(session, fake.base_url, request_timeout=0.3)
    fake.fail_next("submit", 0, delay=0.6)  # slow, then the real handler creates the (paid) job
    with pytest.raises(SubmitOutcomeUnknown) as info:
        await client.submit(params)
    assert "may or may not" in str(info.value)
    assert len(fake.requests_to("submit")) == 1
    await wait_until(lambda: len(fake.jobs) == 1)  # the job did get created server-side
    await asyncio.sleep(0.3)
    assert len(fake.requests_to("submit")) == 1
    assert len(fake.jobs) == 1


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, {"error_message": "unavailable"}),
        (500, {"error_code": 500001, "error_message": "oops"}),
        (502, None),
    ],
)
async def test_submit_5xx_is_outcome_unknown_and_not_retried(
    fake: FakeRunComfy, client: RunComfyClient, params: GenerationParams, status: int, body: Any
) -> None:
    if body is None:
        fake.fail_next("submit", status, raw=b"<html>502 Bad Gateway</html>")
    else:
        fake.fail_next("submit", status, body=body)
    with pytest.raises(SubmitOutcomeUnknown) as info:
        await client.submit(params)
    assert info.value.http_status == status
    assert len(fake.requests_to("submit")) == 1
    assert not fake.jobs


async def test_submit_connection_refused_is_retried_then_succeeds(
    session: aiohttp.ClientSession,
) -> None:
    port = free_port()
    started: list[FakeRunComfy] = []

    async def bring_server_up(n_sleeps: int) -> None:
        if n_sleeps == 2:  # two refused attempts, then the server appears
            server = FakeRunComfy(TOKEN, validate_images=False, port=port)
            await server.start()
            started.append(server)

    sleep = SleepRecorder(bring_server_up)
    client = make_client(session, f"http://127.0.0.1:{port}/v1", sleep=sleep)
    try:
        sub = await client.submit(GenerationParams(prompt="p", img_url="https://example.com/a.png"))
        assert len(sleep.delays) == 2
        assert list(started[0].jobs) == [sub.request_id]
        assert len(started[0].requests_to("submit")) == 1
    finally:
        for server in started:
            await server.close()


async def test_submit_connection_refused_exhausts_to_unavailable(session: aiohttp.ClientSession) -> None:
    sleep = SleepRecorder()
    client = make_client(session, f"http://127.0.0.1:{free_port()}/v1", max_attempts=3, sleep=sleep)
    with pytest.raises(RunComfyUnavailableError):
        await client.submit(GenerationParams(prompt="p", img_url="https://example.com/a.png"))
    assert len(sleep.delays) == 2
    # status on a dead server is retried too, then gives up.
    with pytest.raises(RunComfyUnavailableError):
        await client.status("abc")
    assert len(sleep.delays) == 4


# ------------------------------------------------------------------------------------------ image validation


@pytest.mark.parametrize(
    ("image", "content_type", "message"),
    [
        (make_image(300, 480), "image/png", "at least 360"),
        (make_image(640, 359, "JPEG"), "image/jpeg", "at least 360"),
        (make_image(2001, 400, "JPEG"), "image/jpeg", "must not exceed 2000"),
        (make_image(640, 480, "PNG", "RGBA", (1, 2, 3, 100)), "image/png", "alpha"),
        (make_image(640, 480, "PNG", "LA", (1, 100)), "image/png", "alpha"),
        (make_image(640, 480, "GIF", "P", 3), "image/gif", "Unsupported image format GIF"),
        (b"this is not an image", "image/png", "corrupt"),
        (make_image(2000, 1800, "BMP"), "image/bmp", "less than 10 MB"),  # ~10.8 MB
    ],
)
async def test_image_validation_rejections(
    fake: FakeRunComfy, client: RunComfyClient, image: bytes, content_type: str, message: str
) -> None:
    url = fake.host_file("bad-image", image, content_type)
    with pytest.raises(RunComfyValidationError) as info:
        await client.submit(GenerationParams(prompt="p", img_url=url))
    assert info.value.code == 422001 and info.value.http_status == 422
    assert info.value.detail[0]["loc"] == ["body", "img_url"]
    assert message in str(info.value)
    assert not fake.jobs


async def test_image_unreachable_rejected(fake: FakeRunComfy, client: RunComfyClient) -> None:
    with pytest.raises(RunComfyValidationError, match="download"):
        await client.submit(GenerationParams(prompt="p", img_url=f"{fake.url}/uploads/missing.png"))


@pytest.mark.parametrize(
    ("image", "content_type"),
    [
        (make_image(360, 360, "JPEG"), "image/jpeg"),
        (make_image(2000, 2000, "WEBP"), "image/webp"),
        (make_image(800, 600, "BMP"), "image/bmp"),
        (make_image(640, 480, "PNG", "L", 128), "image/png"),
    ],
)
async def test_image_validation_accepts(
    fake: FakeRunComfy, client: RunComfyClient, image: bytes, content_type: str
) -> None:
    url = fake.host_file("ok-image", image, content_type)
    sub = await client.submit(GenerationParams(prompt="p", img_url=url))
    assert sub.request_id in fake.jobs


# ------------------------------------------------------------------------------------------ secrecy


async def test_token_never_leaks(
    fake: FakeRunComfy,
    session: aiohttp.ClientSession,
    params: GenerationParams,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(session, fake.base_url, request_timeout=0.3)
    sub = await client.submit(params)
    errors: list[BaseException] = []

    async def capture(coro: Awaitable[object]) -> None:
        try:
            await coro
        except RunComfyError as exc:
            errors.append(exc)

    echo = f"token Bearer {TOKEN} is not valid ({TOKEN})"
    fake.fail_next("status", 401, body={"error_code": 400004, "error_message": echo})
    await capture(client.status(sub.request_id))
    fake.fail_next(
        "submit",
        422,
        body={"error_code": 422001, "error_message": echo, "detail": [{"loc": "x", "msg": echo}]},
    )
    await capture(client.submit(params))
    fake.fail_next("result", 503, body={"error_message": echo}, times=10)
    await capture(client.result(sub.request_id))
    fake.fail_next("submit", 503, body={"error_code": 500001, "error_message": echo})
    await capture(client.submit(params))
    fake.fail_next("submit", 0, delay=0.6)
    await capture(client.submit(params))
    fake.fail_next("cancel", 200, raw=b'{"req', times=10)
    await capture(client.cancel(sub.request_id))
    fake.fail_next("status", 418, body={"message": echo})
    await capture(client.status(sub.request_id))
    dead = make_client(session, f"http://127.0.0.1:{free_port()}/v1", token=TOKEN, max_attempts=2)
    await capture(dead.submit(params))
    await capture(dead.status("abc"))

    assert len(errors) == 9
    expected_types = [
        RunComfyAuthError,
        RunComfyValidationError,
        RunComfyUnavailableError,
        SubmitOutcomeUnknown,
        SubmitOutcomeUnknown,
        RunComfyProtocolError,
        RunComfyError,
        RunComfyUnavailableError,
        RunComfyUnavailableError,
    ]
    assert [type(e) for e in errors] == expected_types
    for exc in errors:
        rendered = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc) + str(exc.args)
        assert TOKEN not in rendered
    assert "***" in str(errors[0])
    assert TOKEN not in repr(client)
    assert caplog.records  # retries were logged
    assert TOKEN not in caplog.text
    for record in caplog.records:
        assert TOKEN not in record.getMessage()


async def test_failed_result_error_is_redacted(
    fake: FakeRunComfy, client: RunComfyClient, params: GenerationParams
) -> None:
    fake.scripts.append(
        JobScript(queue_seconds=0, run_seconds=0, outcome="failed", error={"message": f"bad token {TOKEN}"})
    )
    sub = await client.submit(params)
    res = await client.result(sub.request_id)
    assert res.error is not None and TOKEN not in res.error


@pytest.mark.parametrize("code", [None, 0, ""])
async def test_null_error_code_on_200_is_not_an_error(
    fake: FakeRunComfy, client: RunComfyClient, code: Any
) -> None:
    fake.fail_next("status", 200, body={"request_id": "r", "status": "IN_PROGRESS", "error_code": code})
    assert await client.status("r") == JobStatus(status="in_progress", queue_position=None)


async def test_runaway_status_body_is_treated_as_garbage_not_buffered() -> None:
    from bot import runcomfy as runcomfy_module

    async with FakeRunComfy() as fake, aiohttp.ClientSession() as session:
        client = RunComfyClient(
            session, base_url=fake.base_url, token=fake.token, backoff_base=0.01, max_attempts=2
        )
        sub = await client.submit(
            GenerationParams(prompt="p", img_url=fake.host_file("a.png", make_image(400, 400), "image/png"))
        )
        huge = b'{"status": "in_queue", "pad": "' + b"x" * (runcomfy_module.MAX_BODY_BYTES + 10) + b'"}'
        fake.fail_next("status", 200, raw=huge, times=2)
        with pytest.raises(RunComfyProtocolError):
            await client.status(sub.request_id)
        assert (await client.status(sub.request_id)).status in ("in_queue", "in_progress", "completed")


# ------------------------------------------------------------------------------------------ vocabulary


@pytest.mark.parametrize(
    ("word", "phase"),
    [
        ("in_queue", Phase.QUEUED),
        ("IN_QUEUE", Phase.QUEUED),
        ("queued", Phase.QUEUED),
        ("In_Progress", Phase.RUNNING),
        ("running", Phase.RUNNING),
        ("completed", Phase.SUCCEEDED),
        ("Completed", Phase.SUCCEEDED),
        ("SUCCEEDED", Phase.SUCCEEDED),
        ("failed", Phase.FAILED),
        ("Failed", Phase.FAILED),
        ("cancelled", Phase.CANCELLED),
        ("canceled", Phase.CANCELLED),
        ("CANCELED", Phase.CANCELLED),
        ("warming_up", Phase.UNKNOWN),
        ("", Phase.UNKNOWN),
    ],
)
def test_status_words_are_normalised(word: str, phase: Phase) -> None:
    assert normalize_status(word) is phase
    assert JobStatus(status=word.lower(), queue_position=None).phase is phase


def test_an_error_field_means_failure_unless_cancelled() -> None:
    assert normalize_status("completed", error="boom") is Phase.FAILED
    assert normalize_status("", error="boom") is Phase.FAILED
    assert normalize_status("in_progress", error="boom") is Phase.FAILED
    assert normalize_status("canceled", error="boom") is Phase.CANCELLED
    assert JobStatus(status="completed", queue_position=None, error="x").phase is Phase.FAILED


def test_result_succeeds_only_with_a_video() -> None:
    ok = JobResult("completed", ("https://cdn/x.mp4",), None, None, None)
    assert ok.phase is Phase.SUCCEEDED and not ok.no_video
    empty = JobResult("succeeded", (), None, None, None)
    assert empty.phase is Phase.FAILED and empty.no_video
    failed = JobResult("completed", (), "out of memory", None, None)
    assert failed.phase is Phase.FAILED and not failed.no_video


@pytest.mark.parametrize("dialect", ["seed", "cli", "terse"])
async def test_every_dialect_parses_to_the_same_phases(
    fake: FakeRunComfy, client: RunComfyClient, params: GenerationParams, dialect: str
) -> None:
    fake.dialect = dialect
    fake.scripts.extend(
        [
            JobScript(queue_seconds=None, run_seconds=None),
            JobScript(queue_seconds=0, run_seconds=0, outcome="failed", error="GPU fell over"),
            JobScript(queue_seconds=None, run_seconds=None),
        ]
    )
    ok, bad, cancelled = [await client.submit(params) for _ in range(3)]
    assert (await client.status(ok.request_id)).phase is Phase.QUEUED
    assert (await client.result(ok.request_id)).phase is Phase.QUEUED
    fake.advance(ok.request_id)
    assert (await client.status(ok.request_id)).phase is Phase.RUNNING
    fake.advance(ok.request_id)
    assert (await client.status(ok.request_id)).phase is Phase.SUCCEEDED
    done = await client.result(ok.request_id)
    assert done.phase is Phase.SUCCEEDED and done.video_urls == (fake.output_url(ok.request_id),)

    assert (await client.status(bad.request_id)).phase in (Phase.SUCCEEDED, Phase.FAILED)  # /result decides
    failure = await client.result(bad.request_id)
    assert failure.phase is Phase.FAILED and failure.error == "GPU fell over"

    answer = await client.cancel(cancelled.request_id)
    assert answer.cancelled
    assert (await client.status(cancelled.request_id)).phase is Phase.CANCELLED
    assert (await client.result(cancelled.request_id)).phase is Phase.CANCELLED


@pytest.mark.parametrize("endpoint", ["status", "result"])
async def test_error_without_a_status_word_is_a_failure(
    fake: FakeRunComfy, client: RunComfyClient, params: GenerationParams, endpoint: str
) -> None:
    sub = await client.submit(params)
    fake.fail_next(endpoint, 200, body={"request_id": sub.request_id, "error": {"message": "bad input"}})
    answer: JobStatus | JobResult = await (client.status if endpoint == "status" else client.result)(
        sub.request_id
    )
    assert answer.phase is Phase.FAILED and answer.error == "bad input" and answer.status == ""
    # Neither a word nor an error is still a protocol error.
    fake.fail_next(endpoint, 200, body={"request_id": sub.request_id, "error": None})
    with pytest.raises(RunComfyProtocolError):
        await (client.status if endpoint == "status" else client.result)(sub.request_id)

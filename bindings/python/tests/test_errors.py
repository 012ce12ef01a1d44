"""Each failure arrives as its own exception class with the fields that matter."""

import socket

import pytest

import storycad_ffi as ffi
from conftest import NO_RETRY, Tokens, client, request, run
from scripted_server import Reply, ScriptedServer, chunk, error_body

E = ffi.CollaboratorError


def expect(exc_type, coro_fn):
    async def go():
        with pytest.raises(exc_type) as info:
            await coro_fn()
        return info.value

    return run(go)


async def drain(stream):
    while await stream.next() is not None:
        pass


def test_rate_limited_carries_retry_after_and_headers(fake_provider):
    c = client(fake_provider)
    # 90 s is over the client's max_server_delay (60 s): returned at once, not slept on.
    e = expect(E.RateLimited, lambda: c.chat(request("fault:429=90")))
    assert e.retry_after_ms == 90_000
    assert e.rate_limit.limit_requests == 500
    assert e.rate_limit.remaining_requests == 0
    assert e.rate_limit.reset_requests_ms == 90_000
    assert e.request_id.startswith("req_fake")
    assert "Rate limit reached" in e.message
    # A stream's HTTP error comes from chat_stream() itself, not from its first next().
    e = expect(E.RateLimited, lambda: c.chat_stream(request("fault:429=90")))
    assert e.retry_after_ms == 90_000


def test_invalid_request_carries_status_and_param(fake_provider):
    c = client(fake_provider)
    e = expect(E.InvalidRequest, lambda: c.chat(request("fault:400")))
    assert e.status == 400
    assert e.param == "temperature"
    assert e.request_id.startswith("req_fake")


def test_a_bad_argument_is_an_invalid_request_before_sending(fake_provider):
    c = client(fake_provider)
    bad = request("hi", tools=[ffi.Tool(name="t", parameters_json="{not json")])
    e = expect(E.InvalidRequest, lambda: c.chat(bad))
    assert e.status is None
    assert "not valid JSON" in e.message
    with pytest.raises(E.InvalidRequest):
        ffi.CollaboratorClient(ffi.ClientConfig(base_url="ftp://example"), Tokens("t"))


def test_server_failures_are_upstream_unavailable(fake_provider):
    c = client(fake_provider, retry=NO_RETRY)
    e = expect(E.UpstreamUnavailable, lambda: c.chat(request("fault:503")))
    assert e.status == 503
    e = expect(E.UpstreamUnavailable, lambda: c.chat(request("fault:bad-json")))
    assert e.status == 200


def test_a_stream_error_event_is_upstream_unavailable(fake_provider):
    async def go():
        c = client(fake_provider)
        stream = await c.chat_stream(request("fault:stream-error a b c d"))
        with pytest.raises(E.UpstreamUnavailable) as info:
            await drain(stream)
        assert "The server had an error" in info.value.message
        assert info.value.status is None
        # The error ended the stream.
        assert await stream.next() is None

    run(go)


def test_a_cut_stream_is_stream_truncated(fake_provider):
    async def go():
        c = client(fake_provider)
        stream = await c.chat_stream(request("fault:cut a b c d e f"))
        seen = 0
        with pytest.raises(E.StreamTruncated) as info:
            while await stream.next() is not None:
                seen += 1
        assert seen >= 1
        assert info.value.request_id.startswith("req_fake")

    run(go)


def test_a_stalled_stream_is_a_timeout(fake_provider):
    async def go():
        c = client(fake_provider, stream_idle_timeout_ms=300)
        stream = await c.chat_stream(request("fault:stall"))
        with pytest.raises(E.Timeout) as info:
            await drain(stream)
        assert info.value.phase == ffi.TimeoutPhase.STREAM_IDLE
        assert info.value.after_ms == 300

    run(go)


def test_no_server_is_a_network_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = client(f"http://127.0.0.1:{port}/v1", Tokens("t"), retry=NO_RETRY)
    e = expect(E.Network, lambda: c.chat(request("hello")))
    assert e.request_id is None
    assert "connect" in e.message


def test_budget_and_plan_errors():
    routes = {
        ("POST", "/v1/chat/completions"): lambda r: (
            Reply(429, error_body("rate_limit_error", "budget_exhausted",
                                  "Your daily token budget is spent."),
                  {"retry-after": "3600", "x-ratelimit-remaining-tokens": "0"})
            if "budget" in r.body.decode() else
            Reply(403, error_body("permission_error", "model_not_allowed",
                                  "Your plan does not include storycad-smart."))),
    }
    with ScriptedServer(routes) as server:
        c = client(server.base_url, Tokens("t"))
        e = expect(E.BudgetExhausted, lambda: c.chat(request("budget please")))
        assert e.retry_after_ms == 3_600_000
        assert e.rate_limit.remaining_tokens == 0
        assert e.request_id.startswith("req_scripted")
        # Not retried: a spent budget does not come back in seconds.
        assert len(server.requests) == 1
        e = expect(E.ModelNotAllowed, lambda: c.chat(request("smart please")))
        assert e.code == "model_not_allowed"
        assert "plan" in e.message
        assert len(server.requests) == 2


def test_a_budget_error_event_mid_stream():
    from scripted_server import StreamReply

    events = [chunk(role="assistant", content=""), chunk("partial"),
              error_body("rate_limit_error", "budget_exhausted", "budget spent mid-answer")]
    routes = {("POST", "/v1/chat/completions"): lambda r: StreamReply(events, done=False)}
    with ScriptedServer(routes) as server:
        async def go():
            c = client(server.base_url, Tokens("t"))
            stream = await c.chat_stream(request("hi"))
            with pytest.raises(E.BudgetExhausted) as info:
                await drain(stream)
            assert info.value.message == "budget spent mid-answer"

        run(go)


def test_errors_are_one_exception_family():
    for name in ["Unauthorized", "RateLimited", "BudgetExhausted", "InvalidRequest",
                 "ModelNotAllowed", "UpstreamUnavailable", "Network", "Timeout",
                 "StreamTruncated", "Cancelled"]:
        assert issubclass(getattr(E, name), E), name
        assert issubclass(getattr(E, name), Exception), name

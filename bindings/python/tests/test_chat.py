"""Chat, streams, cancellation and tokens through the Python bindings, against the fake
provider (and a scripted server where the fake provider has no such behaviour)."""

import asyncio
import datetime
import gc
import time

import storycad_ffi as ffi
from conftest import FAKE_PROVIDER_KEY, Tokens, client, request, run
from scripted_server import Reply, ScriptedServer, StreamReply, chunk


def test_chat_returns_the_answer_usage_and_meta(fake_provider):
    async def go():
        c = client(fake_provider)
        answer = await c.chat(request("hello there"))
        assert answer.text == "echo: hello there"
        assert answer.choices[0].content == "echo: hello there"
        assert answer.choices[0].finish_reason == "stop"
        assert answer.usage == ffi.Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5)
        assert answer.meta.status == 200
        assert answer.meta.request_id.startswith("req_fake")
        assert answer.meta.attempts == 1

    run(go)


def test_stream_reads_every_chunk_to_the_end(fake_provider):
    async def go():
        c = client(fake_provider)
        stream = await c.chat_stream(request("one two three four", include_usage=True))
        assert stream.meta().request_id.startswith("req_fake")
        chunks = []
        while (item := await stream.next()) is not None:
            chunks.append(item)
        # After the end it stays ended.
        assert await stream.next() is None
        text = "".join(ch.content or "" for c in chunks for ch in c.choices)
        assert text == "echo: one two three four"
        assert chunks[0].choices[0].role == ffi.Role.ASSISTANT
        finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
        assert finishes == ["stop"]
        assert chunks[-1].choices == []
        assert chunks[-1].usage == ffi.Usage(prompt_tokens=4, completion_tokens=5,
                                             total_tokens=9)

    run(go)


def slow_stream_server(n=200, interval=0.05):
    events = [chunk(role="assistant", content="")] + [chunk(f" w{i}") for i in range(n)]
    return ScriptedServer({("POST", "/v1/chat/completions"):
                           lambda req: StreamReply(events, interval=interval)})


def test_cancel_mid_stream_closes_the_connection():
    with slow_stream_server() as server:
        async def go():
            c = client(server.base_url, Tokens("t"))
            stream = await c.chat_stream(request("a long answer"))
            for _ in range(3):
                assert await stream.next() is not None
            cancelled_at = time.monotonic()
            stream.cancel()
            try:
                await stream.next()
                raise AssertionError("next() after cancel() must raise Cancelled")
            except ffi.CollaboratorError.Cancelled as e:
                assert e.request_id == "req_scripted_stream"
            # cancel() is idempotent and next() keeps saying so.
            stream.cancel()
            try:
                await stream.next()
                raise AssertionError("expected Cancelled")
            except ffi.CollaboratorError.Cancelled:
                pass
            # The stream object is still alive: cancel() itself closed the connection.
            outcome = await asyncio.get_running_loop().run_in_executor(
                None, server.wait_for_stream_end, 5)
            assert stream.meta().status == 200
            return cancelled_at, outcome

        cancelled_at, outcome = run(go)
        assert outcome.disconnected_at is not None, "the server never saw the client leave"
        assert outcome.disconnected_at - cancelled_at < 2.0
        assert outcome.sent < 100, outcome.sent


def test_cancel_wakes_a_pending_next(fake_provider):
    async def go():
        c = client(fake_provider)
        # One content event every 5 s: the second next() waits.
        stream = await c.chat_stream(request("fault:slow=5000 a b c"))
        assert await stream.next() is not None  # the role event comes at once
        pending = asyncio.ensure_future(stream.next())
        await asyncio.sleep(0.2)
        assert not pending.done()
        started = time.monotonic()
        # From another thread, as a C# CancellationToken callback would.
        await asyncio.get_running_loop().run_in_executor(None, stream.cancel)
        try:
            await asyncio.wait_for(pending, 2)
            raise AssertionError("expected Cancelled")
        except ffi.CollaboratorError.Cancelled:
            pass
        assert time.monotonic() - started < 1.0

    run(go)


def test_dropping_a_stream_closes_the_connection():
    with slow_stream_server() as server:
        async def go():
            c = client(server.base_url, Tokens("t"))
            stream = await c.chat_stream(request("a long answer"))
            assert await stream.next() is not None
            del stream
            gc.collect()
            return time.monotonic()

        dropped_at = run(go)
        outcome = server.wait_for_stream_end(timeout=5)
        assert outcome.disconnected_at is not None
        assert outcome.disconnected_at - dropped_at < 2.0


def test_cancelling_the_asyncio_task_of_a_call_ends_it(fake_provider):
    async def go():
        c = client(fake_provider)
        task = asyncio.ensure_future(c.chat(request("fault:hang")))
        await asyncio.sleep(0.2)
        task.cancel()
        try:
            await asyncio.wait_for(task, 2)
            raise AssertionError("expected CancelledError")
        except asyncio.CancelledError:
            pass
        # The client is still usable.
        assert (await c.chat(request("after"))).text == "echo: after"

    run(go)


def test_401_makes_the_client_ask_the_python_token_provider_again(fake_provider):
    async def go():
        tokens = Tokens("stale-key", FAKE_PROVIDER_KEY)
        c = client(fake_provider, tokens)
        answer = await c.chat(request("hello"))
        assert answer.text == "echo: hello"
        assert tokens.calls == 2
        assert answer.meta.attempts == 2
        # The good token is cached now.
        await c.chat(request("again"))
        assert tokens.calls == 2

    run(go)


def test_a_token_rejected_twice_is_unauthorized(fake_provider):
    async def go():
        tokens = Tokens("wrong-key")
        c = client(fake_provider, tokens)
        try:
            await c.chat(request("hello"))
            raise AssertionError("expected Unauthorized")
        except ffi.CollaboratorError.Unauthorized as e:
            assert "Incorrect API key" in e.message
            assert e.request_id.startswith("req_fake")
            assert "wrong-key" not in str(e)
        assert tokens.calls == 2

    run(go)


def test_token_provider_failures_are_unauthorized(fake_provider):
    async def go():
        c = client(fake_provider, Tokens(ffi.TokenError.Failed(message="signed out")))
        try:
            await c.chat(request("hello"))
            raise AssertionError("expected Unauthorized")
        except ffi.CollaboratorError.Unauthorized as e:
            assert "signed out" in e.message
        c = client(fake_provider, Tokens(ValueError("bug in the host")))
        try:
            await c.chat(request("hello"))
            raise AssertionError("expected Unauthorized")
        except ffi.CollaboratorError.Unauthorized as e:
            assert "bug in the host" in e.message

    run(go)


def test_token_expiry_crosses_as_a_timestamp(fake_provider):
    async def go():
        now = datetime.datetime.now(datetime.timezone.utc)
        # Expiring within the refresh margin (60 s): fetched again for every call.
        soon = Tokens(FAKE_PROVIDER_KEY, expires_at=now + datetime.timedelta(seconds=20))
        c = client(fake_provider, soon)
        await c.chat(request("one"))
        await c.chat(request("two"))
        assert soon.calls == 2
        later = Tokens(FAKE_PROVIDER_KEY, expires_at=now + datetime.timedelta(hours=1))
        c = client(fake_provider, later)
        await c.chat(request("one"))
        await c.chat(request("two"))
        assert later.calls == 1

    run(go)


def test_fifty_concurrent_calls_share_one_token_fetch(fake_provider):
    async def go():
        tokens = Tokens(FAKE_PROVIDER_KEY, delay=0.05)
        c = client(fake_provider, tokens)
        answers = await asyncio.gather(*(c.chat(request(f"call {i}")) for i in range(50)))
        assert [a.text for a in answers] == [f"echo: call {i}" for i in range(50)]
        assert tokens.calls == 1

        async def streamed(i):
            s = await c.chat_stream(request(f"stream {i} x y"))
            parts = []
            while (item := await s.next()) is not None:
                parts += [ch.content or "" for ch in item.choices]
            return "".join(parts)

        texts = await asyncio.gather(*(streamed(i) for i in range(20)))
        assert texts == [f"echo: stream {i} x y" for i in range(20)]

    run(go)


def test_models_and_usage():
    usage_body = {
        "object": "usage", "plan": "pro", "models": ["storycad-fast", "storycad-smart"],
        "max_output_tokens": 4096,
        "requests": {"limit": 60, "remaining": 59, "reset_seconds": 1.5},
        "tokens": {"limit": 100000, "remaining": 99000, "reset_seconds": 3600},
        "streams": {"limit": 2, "remaining": 2, "reset_seconds": 0},
    }
    models_body = {"object": "list", "data": [
        {"id": "storycad-fast", "object": "model", "created": 0, "owned_by": "storycad"},
        {"id": "storycad-smart", "object": "model", "created": 0, "owned_by": "storycad"},
    ]}
    routes = {("GET", "/v1/models"): lambda r: Reply(200, models_body),
              ("GET", "/v1/usage"): lambda r: Reply(200, usage_body)}
    with ScriptedServer(routes) as server:
        async def go():
            c = client(server.base_url, Tokens("jwt-1"))
            models = await c.models()
            assert [m.id for m in models] == ["storycad-fast", "storycad-smart"]
            assert models[0].owned_by == "storycad"
            usage = await c.usage()
            assert usage.plan == "pro"
            assert usage.models == ["storycad-fast", "storycad-smart"]
            assert usage.max_output_tokens == 4096
            assert usage.requests == ffi.LimitStatus(limit=60, remaining=59, reset_seconds=1.5)
            assert usage.streams.remaining == 2

        run(go)
        assert [r.headers["authorization"] for r in server.requests] == ["Bearer jwt-1"] * 2


def test_tools_go_out_and_tool_calls_come_back():
    answer = {
        "id": "chatcmpl-tools", "object": "chat.completion", "created": 7, "model": "storycad-fast",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "find_scene", "arguments": "{\"title\":\"Opening\"}"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    routes = {("POST", "/v1/chat/completions"): lambda r: Reply(200, answer)}
    with ScriptedServer(routes) as server:
        async def go():
            c = client(server.base_url, Tokens("t"))
            tool = ffi.Tool(name="find_scene", description="Finds a scene by title",
                            parameters_json='{"type":"object","properties":'
                                            '{"title":{"type":"string"}}}')
            history = [
                ffi.Message(role=ffi.Role.SYSTEM, content="You edit stories."),
                ffi.Message(role=ffi.Role.USER, content="Open the first scene"),
                ffi.Message(role=ffi.Role.ASSISTANT, tool_calls=[
                    ffi.ToolCall(id="call_0", name="list_scenes", arguments="{}")]),
                ffi.Message(role=ffi.Role.TOOL, tool_call_id="call_0", content='["Opening"]'),
            ]
            req = ffi.ChatRequest(model="storycad-fast", messages=history, tools=[tool],
                                  tool_choice=ffi.ToolChoice.FUNCTION(name="find_scene"),
                                  temperature=0.2, max_completion_tokens=100, stop=["END"],
                                  response_format_json='{"type":"text"}', seed=42)
            r = await c.chat(req)
            assert r.choices[0].finish_reason == "tool_calls"
            assert r.choices[0].tool_calls == [ffi.ToolCall(
                id="call_1", name="find_scene", arguments='{"title":"Opening"}')]
            assert r.text == ""

        run(go)
        sent = server.requests[0].json()
        assert sent["tools"] == [{"type": "function", "function": {
            "name": "find_scene", "description": "Finds a scene by title",
            "parameters": {"type": "object", "properties": {"title": {"type": "string"}}}}}]
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "find_scene"}}
        assert sent["messages"][2] == {"role": "assistant", "tool_calls": [
            {"id": "call_0", "type": "function",
             "function": {"name": "list_scenes", "arguments": "{}"}}]}
        assert sent["messages"][3] == {"role": "tool", "content": '["Opening"]',
                                       "tool_call_id": "call_0"}
        assert sent["stop"] == ["END"] and sent["seed"] == 42 and sent["temperature"] == 0.2
        assert sent["max_completion_tokens"] == 100
        assert sent["response_format"] == {"type": "text"}
        assert "stream" not in sent and "stream_options" not in sent

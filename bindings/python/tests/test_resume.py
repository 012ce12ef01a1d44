"""Resumable streams through the bindings: a cut stream resumes by itself and counts it, unless
`resume_streams` is off. (The resume logic itself is tested in Rust: client/tests/resume.rs.)"""

import json

import storycad_ffi as ffi
from conftest import Tokens, client, request, run
from scripted_server import ScriptedServer, StreamReply, chunk

STREAM_ID = "18f2a-00ab-cd"
WORDS = ["Once", " upon", " a", " time", "."]
DONE = len(WORDS) + 1
FAST = ffi.RetrySettings(initial_backoff_ms=10, max_backoff_ms=40)


def event(n):
    """Event n with its SSE id: the chunks 1 to 5, then [DONE]."""
    data = "[DONE]" if n == DONE else json.dumps(chunk(WORDS[n - 1]))
    return f"id: {n}\ndata: {data}\n\n"


def cut_after_two_server():
    """Answers with events 1 and 2 then closes; a resume gets the events after Last-Event-ID."""

    def answer(req):
        return StreamReply([event(1), event(2)], done=False,
                           headers={"x-storycad-stream-id": STREAM_ID})

    def resume(req):
        last = int(req.headers["last-event-id"])
        return StreamReply([event(n) for n in range(last + 1, DONE + 1)], done=False)

    return ScriptedServer({
        ("POST", "/v1/chat/completions"): answer,
        ("GET", f"/v1/chat/completions/streams/{STREAM_ID}"): resume,
    })


async def read_all(stream):
    text = ""
    while (item := await stream.next()) is not None:
        text += "".join(ch.content or "" for ch in item.choices)
    return text


def test_a_cut_stream_resumes_and_counts_it():
    with cut_after_two_server() as server:
        async def go():
            c = client(server.base_url, Tokens("jwt-1"), retry=FAST)
            stream = await c.chat_stream(request("a story"))
            assert stream.resumptions() == 0
            assert stream.meta().stream_id == STREAM_ID
            assert await read_all(stream) == "".join(WORDS)
            assert stream.resumptions() == 1
            assert stream.meta().resumptions == 1

        run(go)
        first, resume = server.requests
        assert (resume.method, resume.path) == (
            "GET", f"/v1/chat/completions/streams/{STREAM_ID}")
        assert resume.headers["last-event-id"] == "2"
        assert resume.headers["authorization"] == "Bearer jwt-1"


def test_with_resume_streams_off_a_cut_stream_is_truncated():
    with cut_after_two_server() as server:
        async def go():
            c = client(server.base_url, Tokens("jwt-1"), retry=FAST, resume_streams=False)
            stream = await c.chat_stream(request("a story"))
            texts = []
            try:
                while (item := await stream.next()) is not None:
                    texts += [ch.content or "" for ch in item.choices]
                raise AssertionError("expected StreamTruncated")
            except ffi.CollaboratorError.StreamTruncated:
                pass
            assert "".join(texts) == "Once upon"
            assert stream.resumptions() == 0

        run(go)
        assert [r.method for r in server.requests] == ["POST"], "no resume request"

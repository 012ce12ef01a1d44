"""The client's tracing events, through set_logger, to a Python Logger."""

import threading

import pytest

import storycad_ffi as ffi
from conftest import Tokens, client, request, run
from scripted_server import Reply, ScriptedServer, error_body

L = ffi.LogLevel
TOKEN = "secret-token-value"
# Retries on, with backoffs short enough not to slow the tests.
RETRY_FAST = ffi.RetrySettings(max_retries=2, initial_backoff_ms=1, max_backoff_ms=5)
ANSWER = {
    "id": "chatcmpl-logged", "object": "chat.completion", "created": 1, "model": "storycad-fast",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "logged"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class Collect(ffi.Logger):
    """Keeps every record (the library calls it from its own threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._records = []

    def log(self, record):
        with self._lock:
            self._records.append(record)

    def records(self):
        with self._lock:
            return list(self._records)


class Raises(ffi.Logger):
    def __init__(self):
        self.calls = 0

    def log(self, record):
        self.calls += 1
        raise RuntimeError("the host's logger failed")


@pytest.fixture(autouse=True)
def no_logger_after():
    yield
    ffi.clear_logger()


def unavailable_then_answer():
    """A server answering 503 to the first chat request and ANSWER to the others."""
    calls = []

    def chat(r):
        calls.append(r)
        if len(calls) == 1:
            return Reply(503, error_body("server_error", None, "overloaded"))
        return Reply(200, ANSWER)

    return ScriptedServer({("POST", "/v1/chat/completions"): chat})


def ask(server):
    """One chat through a 503 and a retry; returns the answer."""
    c = client(server.base_url, Tokens(TOKEN), retry=RETRY_FAST)
    answer = run(lambda: c.chat(request("hi")))
    assert answer.text == "logged"
    assert answer.meta.attempts == 2
    return answer


def test_a_retry_reaches_the_logger_at_debug_with_its_fields():
    logger = Collect()
    ffi.set_logger(logger, L.DEBUG)
    with unavailable_then_answer() as server:
        ask(server)
    records = logger.records()
    retrying = [r for r in records if r.message.startswith("retrying ")]
    assert len(retrying) == 1, records
    r = retrying[0]
    assert r.level == L.DEBUG
    assert r.target == "storycad_client::client"
    # The event's fields, then the request span's and the attempt span's.
    for part in [" attempt=1", " status=Some(503)", " error=", " method=POST",
                 " path=/chat/completions", " model=storycad-fast", " n=1"]:
        assert part in r.message, r.message
    answered = [r for r in records if r.message.startswith("answered ")]
    assert len(answered) == 1, records
    assert " attempt=2" in answered[0].message and " status=200" in answered[0].message
    assert " n=2" in answered[0].message
    assert not any(TOKEN in r.message for r in records)


def test_max_level_info_sends_no_debug_record():
    logger = Collect()
    ffi.set_logger(logger, L.INFO)
    with unavailable_then_answer() as server:
        ask(server)
    assert [r for r in logger.records() if r.level in (L.DEBUG, L.TRACE)] == []
    # Raising the level later reaches the events whose callsites were skipped so far.
    ffi.set_logger(logger, L.DEBUG)
    with unavailable_then_answer() as server:
        ask(server)
    assert any(r.message.startswith("retrying ") for r in logger.records())


def test_clear_logger_stops_the_records():
    logger = Collect()
    ffi.set_logger(logger, L.TRACE)
    with unavailable_then_answer() as server:
        ask(server)
    seen = len(logger.records())
    assert seen > 0
    ffi.clear_logger()
    with unavailable_then_answer() as server:
        ask(server)
    assert len(logger.records()) == seen


def test_a_logger_that_raises_does_not_break_the_request():
    logger = Raises()
    ffi.set_logger(logger, L.DEBUG)
    with unavailable_then_answer() as server:
        ask(server)
    assert logger.calls > 0

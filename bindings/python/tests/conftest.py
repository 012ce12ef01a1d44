"""Fixtures: the generated module, the fake provider, and helpers to run async tests.

`cargo xtask` builds everything first and sets PYTHONPATH (the generated module and the
library beside it) and STORYCAD_FAKE_PROVIDER (the fake provider's binary).
"""

import asyncio
import os
import subprocess
import threading

import pytest

import storycad_ffi as ffi

FAKE_PROVIDER_KEY = "fake-provider-key"
# Every test's own wait; pytest as a whole is bounded by xtask.
TEST_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def fake_provider():
    """The fake provider's OpenAI base URL (it accepts only FAKE_PROVIDER_KEY)."""
    binary = os.environ.get("STORYCAD_FAKE_PROVIDER")
    if not binary or not os.path.exists(binary):
        pytest.fail("STORYCAD_FAKE_PROVIDER must name the built fake-provider binary "
                    "(cargo xtask test builds it)")
    proc = subprocess.Popen(
        [binary, "--openai-key", FAKE_PROVIDER_KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        first_line = []
        reader = threading.Thread(target=lambda: first_line.append(proc.stdout.readline()))
        reader.start()
        reader.join(timeout=10)
        if not first_line or not first_line[0].strip():
            pytest.fail("the fake provider did not print its address within 10 s")
        yield f"http://{first_line[0].strip()}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Tokens(ffi.TokenProvider):
    """A TokenProvider handing out `tokens` in turn (the last one forever), counting calls."""

    def __init__(self, *tokens, expires_at=None, delay=0.0):
        self.tokens = list(tokens)
        self.expires_at = expires_at
        self.delay = delay
        self.calls = 0

    async def token(self):
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        value = self.tokens[min(self.calls, len(self.tokens)) - 1]
        if isinstance(value, BaseException):
            raise value
        return ffi.AccessToken(token=value, expires_at=self.expires_at)


def run(coro_fn, timeout=TEST_TIMEOUT):
    """Runs `coro_fn()` in a fresh event loop with a deadline.

    The loop is handed to uniffi so that the TokenProvider's async `token()`, which the library
    calls from its own tokio threads, runs on it.
    """

    async def main():
        ffi.uniffi_set_event_loop(asyncio.get_running_loop())
        try:
            return await asyncio.wait_for(coro_fn(), timeout)
        finally:
            ffi.uniffi_set_event_loop(None)

    return asyncio.run(main())


def client(base_url, tokens=None, **config):
    retry = config.pop("retry", None)
    return ffi.CollaboratorClient(
        ffi.ClientConfig(base_url=base_url, retry=retry, **config),
        tokens or Tokens(FAKE_PROVIDER_KEY),
    )


def user(text):
    return ffi.Message(role=ffi.Role.USER, content=text)


def request(text, **kw):
    return ffi.ChatRequest(model="storycad-fast", messages=[user(text)], **kw)


NO_RETRY = ffi.RetrySettings(max_retries=0)

"""Per-request options (extra headers, the caller's ids) and the network settings of
ClientConfig (proxy, trust), through the bindings. The client's own tests cover the TLS
verifier and CONNECT proxies; these show that the settings cross the FFI and take effect."""

import pytest

import storycad_ffi as ffi
from conftest import Tokens, client, request, run
from scripted_server import Reply, ScriptedServer, StreamReply, chunk

ANSWER = {
    "id": "c1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def chat_server():
    def answer(req):
        if req.json().get("stream"):
            return StreamReply([chunk(role="assistant", content="hi"), chunk(finish="stop")])
        return Reply(200, ANSWER)

    return ScriptedServer({("POST", "/v1/chat/completions"): answer})


def test_request_options_send_headers_and_ids_with_chat_and_stream():
    options = ffi.RequestOptions(
        headers={"x-storycad-cache": "off", "x-collab-feature": "outline"},
        request_id="collab-42",
        traceparent=TRACEPARENT,
    )
    with chat_server() as server:
        async def go():
            c = client(server.base_url, Tokens("t"))
            answer = await c.chat_with_options(request("hello"), options)
            assert answer.text == "hi"
            stream = await c.chat_stream_with_options(request("hello"), options)
            while await stream.next() is not None:
                pass
            # Without options: none of them.
            await c.chat(request("hello"))

        run(go)
        with_options, without = server.requests[:2], server.requests[2]
        for r in with_options:
            assert r.headers["x-storycad-cache"] == "off"
            assert r.headers["x-collab-feature"] == "outline"
            assert r.headers["x-request-id"] == "collab-42"
            assert r.headers["traceparent"] == TRACEPARENT
            assert r.headers["authorization"] == "Bearer t"
        assert "x-request-id" not in without.headers
        assert "x-storycad-cache" not in without.headers


@pytest.mark.parametrize("name", ["Authorization", "idempotency-key", "bad name"])
def test_a_header_the_client_owns_or_http_forbids_is_invalid_and_sends_nothing(name):
    with chat_server() as server:
        async def go():
            c = client(server.base_url, Tokens("t"))
            with pytest.raises(ffi.CollaboratorError.InvalidRequest) as e:
                await c.chat_with_options(
                    request("hello"), ffi.RequestOptions(headers={name: "v-secret"}))
            assert "v-secret" not in str(e.value)

        run(go)
        assert server.requests == []


def test_proxy_url_carries_the_requests():
    # An HTTP proxy receives the absolute URL: the scripted server plays the proxy for a host
    # that does not exist, so only a request sent through it can be answered.
    target = "http://collaborator-proxy.invalid/v1"
    with ScriptedServer({("POST", f"{target}/chat/completions"): lambda r: Reply(200, ANSWER)}) \
            as proxy:
        async def go():
            proxy_url = proxy.base_url.removesuffix("/v1")
            c = client(target, Tokens("t"), proxy_url=proxy_url)
            answer = await c.chat(request("hello"))
            assert answer.text == "hi"

        run(go)
        assert [r.path for r in proxy.requests] == [f"{target}/chat/completions"]


def test_system_proxy_off_ignores_the_environment(monkeypatch):
    with chat_server() as server:
        # A proxy that does not exist: followed, it would fail the call.
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)

        async def go():
            c = client(server.base_url, Tokens("t"), system_proxy=False,
                       retry=ffi.RetrySettings(max_retries=0))
            assert (await c.chat(request("hello"))).text == "hi"

        run(go)
        assert len(server.requests) == 1


def test_trust_settings_cross_the_ffi():
    # A PEM text without a certificate is refused when the client is built.
    with pytest.raises(ffi.CollaboratorError.InvalidRequest) as e:
        client("https://127.0.0.1:1/v1", Tokens("t"),
               extra_root_certificates_pem="-----BEGIN NOTHING-----\n-----END NOTHING-----\n")
    assert "BEGIN CERTIFICATE" in str(e.value)
    # Mozilla's roots only: builds.
    client("https://127.0.0.1:1/v1", Tokens("t"), system_trust=False)

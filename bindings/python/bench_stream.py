"""The cost per streamed chunk through the Python bindings against the Rust client on the
same stream, measured in one run.

`cargo xtask` (python::bench) builds release versions of the library and of
examples/stream_bench.rs, then runs this with PYTHONPATH, STORYCAD_FAKE_PROVIDER and
STORYCAD_RUST_STREAM_BENCH set. Both sides read the fake provider's echo of a WORDS-word prompt
(one SSE event per word); rounds alternate between the two so that machine noise hits both.
"""

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import storycad_ffi as ffi

WORDS = int(os.environ.get("BENCH_WORDS", "20000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
KEY = "bench-key"


class Key(ffi.TokenProvider):
    async def token(self):
        return ffi.AccessToken(token=KEY)


async def python_round(client, req):
    started = time.perf_counter()
    stream = await client.chat_stream(req)
    chunks = 0
    while await stream.next() is not None:
        chunks += 1
    return chunks, time.perf_counter() - started


def rust_round(binary, base_url):
    out = subprocess.run([binary, base_url, KEY, str(WORDS), "1"], check=True,
                         capture_output=True, text=True, timeout=120)
    line = json.loads(out.stdout.strip().splitlines()[-1])
    return line["chunks"], line["seconds"]


def main():
    fake = os.environ["STORYCAD_FAKE_PROVIDER"]
    rust_bin = os.environ["STORYCAD_RUST_STREAM_BENCH"]
    proc = subprocess.Popen([fake, "--openai-key", KEY], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = []
        t = threading.Thread(target=lambda: line.append(proc.stdout.readline()))
        t.start()
        t.join(10)
        if not line or not line[0].strip():
            sys.exit("the fake provider did not start")
        base_url = f"http://{line[0].strip()}/v1"

        async def run():
            ffi.uniffi_set_event_loop(asyncio.get_running_loop())
            client = ffi.CollaboratorClient(ffi.ClientConfig(base_url=base_url), Key())
            req = ffi.ChatRequest(model="storycad-fast", messages=[
                ffi.Message(role=ffi.Role.USER, content=" ".join(["w"] * WORDS))])
            await python_round(client, req)  # warm-up: connection, token, caches
            rust_round(rust_bin, base_url)
            py, rs = [], []
            for _ in range(ROUNDS):
                py.append(await python_round(client, req))
                rs.append(await asyncio.to_thread(rust_round, rust_bin, base_url))
            return py, rs

        py, rs = asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(10)

    chunks = py[0][0]
    assert all(c == chunks for c, _ in py + rs), (py, rs)
    py_us = statistics.median(s for _, s in py) / chunks * 1e6
    rs_us = statistics.median(s for _, s in rs) / chunks * 1e6
    print(f"stream of {chunks} chunks, median of {ROUNDS} interleaved rounds each:")
    print(f"  Rust client, StreamExt::next():        {rs_us:7.2f} us/chunk")
    print(f"  Python bindings, await stream.next():  {py_us:7.2f} us/chunk")
    print(f"  bindings overhead:                     {py_us - rs_us:7.2f} us/chunk "
          f"({py_us / rs_us:.2f}x the Rust client)")


if __name__ == "__main__":
    main()

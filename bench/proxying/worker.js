// A baseline of `cargo xtask bench proxy` for answers that are not streamed: the least a proxy
// with our Worker's job does with a chat request, in JavaScript. Beyond the metering baseline
// (bench/metered), which hands the caller's body through unread, it reads the caller's body,
// checks it, rewrites it for the provider (the model routed, the output capped, the caller's
// `user` replaced) and sends that, and answers with its own headers and a request id. No JWT
// check, no plan, no limiter, no time limits: it cannot refuse anyone anything. What our
// Worker with its limiter off costs above this is the language and the guarantees.
const MAX_OUTPUT_TOKENS = 4096;

function refuse(status, message) {
  return new Response(JSON.stringify({ error: { message, type: "invalid_request_error" } }), {
    status,
    headers: { "content-type": "application/json" },
  });
}

export default {
  async fetch(request, env) {
    const started = Date.now();
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return new Response('{"status":"ok"}');
    if (request.method !== "POST" || url.pathname !== "/v1/chat/completions") {
      return refuse(404, "no such endpoint");
    }
    const id = request.headers.get("cf-ray") ?? crypto.randomUUID();
    let call;
    try {
      call = JSON.parse(await request.text());
    } catch {
      return refuse(400, "the body is not JSON");
    }
    if (typeof call?.model !== "string" || !Array.isArray(call.messages)) {
      return refuse(400, "a chat request needs `model` and `messages`");
    }
    const model = call.model;
    call.model = "gpt-4o-mini";
    call.max_tokens = Math.min(call.max_tokens ?? MAX_OUTPUT_TOKENS, MAX_OUTPUT_TOKENS);
    delete call.user;
    const answer = await fetch(env.OPENAI_BASE_URL + "/chat/completions", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${env.OPENAI_API_KEY}`,
      },
      body: JSON.stringify(call),
    });
    const headers = { "content-type": "application/json", "x-request-id": id };
    if (call.stream === true) return new Response(answer.body, { status: answer.status, headers });
    const text = await answer.text();
    let usage = null;
    try {
      usage = JSON.parse(text).usage ?? null;
    } catch {
      // Not JSON: passed on as it is, unmetered.
    }
    console.log(
      JSON.stringify({
        level: "info",
        event: "request",
        request_id: id,
        method: request.method,
        path: url.pathname,
        model,
        status: answer.status,
        total_ms: Date.now() - started,
        input_tokens: usage?.prompt_tokens,
        output_tokens: usage?.completion_tokens,
      }),
    );
    return new Response(text, { status: answer.status, headers });
  },
};

// A baseline of `cargo xtask bench proxy` for answers that are not streamed: the JS passthrough
// plus the least a metering proxy does with such an answer. It reads the answer whole (the
// usage is at its end), takes the usage out of it, writes one log line, and answers with the
// bytes it read. No JWT, no limits, no routing: what is left of our Worker's cost above this is
// ours; the passthrough, which hands the answer's body through unread, cannot meter anything.
import passthrough from "../passthrough/worker.js";

export default {
  async fetch(request, env, ctx) {
    const started = Date.now();
    const answer = await passthrough.fetch(request, env, ctx);
    if (answer.headers.get("content-type")?.startsWith("text/event-stream")) return answer;
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
        method: request.method,
        path: new URL(request.url).pathname,
        status: answer.status,
        total_ms: Date.now() - started,
        input_tokens: usage?.prompt_tokens,
        output_tokens: usage?.completion_tokens,
      }),
    );
    return new Response(text, { status: answer.status, headers: answer.headers });
  },
};

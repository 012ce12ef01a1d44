// The JS metering baseline's handler (see worker.js), with or without its log line.
import passthrough from "../passthrough/worker.js";

// The last line the quiet copy did not write: it is built all the same.
let unwritten = "";

/** The metering handler; `log: false` builds the log line and leaves it unwritten. */
export function metering({ log }) {
  return {
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
      const line = JSON.stringify({
        level: "info",
        event: "request",
        method: request.method,
        path: new URL(request.url).pathname,
        status: answer.status,
        total_ms: Date.now() - started,
        input_tokens: usage?.prompt_tokens,
        output_tokens: usage?.completion_tokens,
      });
      if (log) console.log(line);
      else unwritten = line;
      return new Response(text, { status: answer.status, headers: answer.headers });
    },
  };
}

// A baseline of `cargo xtask bench proxy`: JavaScript code that reads every piece of the answer
// once (a reader loop) and writes it to the runtime's native IdentityTransformStream, whose
// readable side is the response: the bytes leave through workerd's own pipe, not a JS stream.
import passthrough from "../passthrough/worker.js";

export default {
  async fetch(request, env, ctx) {
    const answer = await passthrough.fetch(request, env, ctx);
    if (!answer.body) return answer;
    const { readable, writable } = new IdentityTransformStream();
    const writer = writable.getWriter();
    const reader = answer.body.getReader();
    ctx.waitUntil(
      (async () => {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          writer.write(value);
        }
        await writer.close();
      })().catch((e) => writer.abort(e)),
    );
    return new Response(readable, answer);
  },
};

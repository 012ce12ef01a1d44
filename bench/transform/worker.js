// The second floor of `cargo xtask bench proxy`: the passthrough with an identity
// TransformStream whose `transform` runs for every chunk of the answer: the thinnest Worker
// that looks at each chunk (what a Worker must do to meter a stream or guarantee its end).
import passthrough from "../passthrough/worker.js";

export default {
  async fetch(request, env, ctx) {
    const answer = await passthrough.fetch(request, env, ctx);
    if (!answer.body) return answer;
    const seen = new TransformStream({
      transform(chunk, controller) {
        controller.enqueue(chunk);
      },
    });
    return new Response(answer.body.pipeThrough(seen), answer);
  },
};

// The second floor of `cargo xtask bench proxy`: the passthrough with an identity
// TransformStream whose `transform` runs for every chunk of the answer: the thinnest Worker
// that looks at each chunk (what a Worker must do to meter a stream or guarantee its end).
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return new Response('{"status":"ok"}');
    const headers = new Headers(request.headers);
    headers.set("authorization", `Bearer ${env.OPENAI_API_KEY}`);
    const upstream = env.OPENAI_BASE_URL + url.pathname.replace(/^\/v1/, "");
    const answer = await fetch(upstream, { method: request.method, headers, body: request.body });
    if (!answer.body) return answer;
    const seen = new TransformStream({
      transform(chunk, controller) {
        controller.enqueue(chunk);
      },
    });
    return new Response(answer.body.pipeThrough(seen), answer);
  },
};

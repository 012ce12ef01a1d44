// The floor `cargo xtask bench proxy` measures the Worker against: a plain JavaScript
// passthrough on the same workerd. No JWT, no limits, no routing: the provider's key is added
// and the request and its answer (streamed or not) are handed through unchanged.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return new Response('{"status":"ok"}');
    const headers = new Headers(request.headers);
    headers.set("authorization", `Bearer ${env.OPENAI_API_KEY}`);
    const upstream = env.OPENAI_BASE_URL + url.pathname.replace(/^\/v1/, "");
    return fetch(upstream, { method: request.method, headers, body: request.body });
  },
};

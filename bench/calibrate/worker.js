// The calibration Worker of `cargo xtask bench proxy`: the passthrough, plus a known amount of
// CPU work per request (spin.mjs, SPIN_ROUNDS rounds). The bench must read it as that much more
// CPU per request than the passthrough: a check of the measurement itself. What the rounds cost
// under this workerd it learns from `/spin?times=N` (N times the rounds in one request, where
// the work dwarfs the request's own cost); under node too, for reference.
import passthrough from "../passthrough/worker.js";
import { spin } from "./spin.mjs";

export default {
  async fetch(request, env, ctx) {
    const rounds = Number(env.SPIN_ROUNDS);
    const url = new URL(request.url);
    if (url.pathname === "/spin") {
      let s = 0;
      for (let i = 0; i < Number(url.searchParams.get("times")); i++) s ^= spin(rounds);
      return new Response(String(s));
    }
    // Never 1 (xorshift never reaches it from a non-zero seed): the result is used, so kept.
    if (spin(rounds) === 1) console.log("spin");
    return passthrough.fetch(request, env, ctx);
  },
};

// The calibration Worker of `cargo xtask bench proxy`: the passthrough, plus a known amount of
// CPU work per request (spin.mjs, SPIN_ROUNDS rounds; the bench measures what they cost under
// node). The bench must read it as that much more CPU per request than the passthrough: a check
// of the measurement itself.
import passthrough from "../passthrough/worker.js";
import { spin } from "./spin.mjs";

export default {
  async fetch(request, env, ctx) {
    // Never 1 (xorshift never reaches it from a non-zero seed): the result is used, so kept.
    if (spin(Number(env.SPIN_ROUNDS)) === 1) console.log("spin");
    return passthrough.fetch(request, env, ctx);
  },
};

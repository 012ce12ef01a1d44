// A fixed amount of CPU work: `rounds` steps of xorshift32. The JIT cannot drop it (the result is
// used) and it touches no memory, so it costs the same in workerd's V8 as in node's, where
// `cargo xtask bench proxy` measures it (process.cpuUsage) before the run.
export function spin(rounds) {
  let x = 0x9e3779b9 | 0;
  for (let i = 0; i < rounds; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
  }
  return x;
}

// `cargo xtask soak`: a full garbage collection of the Worker's isolate, through its runtime's
// DevTools inspector (`HeapProfiler.collectGarbage`), so memory that is only waiting for a
// major GC is told apart from memory that is kept.
//
// usage: node gc.mjs NODE_MODULES WS_URL...
// Tries each URL in turn; prints `gc <url>` and exits 0 once one collected, exits 1 if none did.
import path from "node:path";
import { createRequire } from "node:module";

const [nodeModules, ...urls] = process.argv.slice(2);
const require = createRequire(path.join(nodeModules, "noop.js"));
const WebSocket = require("ws");

function collect(url) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers: { Origin: "http://localhost" } });
    const done = (ok) => {
      clearTimeout(timer);
      try {
        ws.terminate();
      } catch {}
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 30000);
    ws.on("error", () => done(false));
    ws.on("open", () => ws.send(JSON.stringify({ id: 1, method: "HeapProfiler.collectGarbage" })));
    ws.on("message", (data) => {
      const msg = JSON.parse(data.toString());
      if (msg.id === 1) done(msg.error === undefined);
    });
  });
}

for (const url of urls) {
  if (await collect(url)) {
    console.log(`gc ${url}`);
    process.exit(0);
  }
}
process.exit(1);

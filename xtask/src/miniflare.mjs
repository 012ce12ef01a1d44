// A Worker under workerd through miniflare alone: no DevTools client and no dev proxy (what
// `wrangler dev` adds around the runtime). `cargo xtask soak --miniflare` runs our bundle so;
// `cargo xtask bench proxy` runs every Worker it measures so.
//
// usage: node miniflare.mjs CONFIG_JSON_FILE
// The file: {"node_modules", "name", "port", "inspector_port", "control_port", "compatibility_date",
// "compatibility_flags", "bindings": {NAME: TEXT}} and either
// - "build" and "persist": our bundle (index.js and index_bg.wasm in that directory), with its
//   limiter's Durable Objects and its KV namespace, their state kept under "persist"; or
// - "script" and "modules_root": a bench baseline's main module (JavaScript, or the JavaScript
//   glue of bench/rust-metered's bundle), its imports found from it.
// The inspector is open (no client attaches unless `soak/gc.mjs` asks for a garbage
// collection). The Worker listens on "port" itself (a direct socket): miniflare's entry Worker,
// a router written in JavaScript that production does not have, is not in the path. Prints
// `ready <url>` once workerd has loaded the Worker and listens (no request has reached it), and
// runs until SIGTERM.
//
// Beside the Worker, in the same runtime, a second Worker starts a new isolate each time it is
// asked to (a Worker Loader's): `GET http://127.0.0.1:<control_port>/new-isolate` answers once
// that isolate has served a request. workerd tells V8 of memory pressure as it creates any
// isolate, and V8 then drops the baseline (Liftoff) code of every wasm module in the process:
// the measured Worker compiles again what it runs next, as it would in production whenever
// another Worker starts on its machine (the bench's cold table measures that request).
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { pathToFileURL } from "node:url";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const entry = path.join(config.node_modules, "miniflare", "dist", "src", "index.js");
const { Miniflare } = await import(pathToFileURL(entry).href);
const code = config.build
  ? {
      modules: [
        { type: "ESModule", path: path.join(config.build, "index.js") },
        { type: "CompiledWasm", path: path.join(config.build, "index_bg.wasm") },
      ],
      modulesRoot: config.build,
      durableObjects: { LIMITER: { className: "UserLimiter", useSQLite: true } },
      kvNamespaces: ["CACHE"],
    }
  : {
      scriptPath: config.script,
      modules: true,
      modulesRoot: config.modules_root,
      // As wrangler reads them: every .js and .mjs an ES module, a .wasm a compiled module
      // (bench/rust-metered's bundle imports its own).
      modulesRules: [
        { type: "ESModule", include: ["**/*.js", "**/*.mjs"] },
        { type: "CompiledWasm", include: ["**/*.wasm"] },
      ],
    };
// Each call loads a Worker under a new name, so each is a new isolate.
const SPAWNER = `let loaded = 0;
export default {
  async fetch(request, env) {
    const name = "isolate-" + ++loaded;
    const worker = env.LOADER.get(name, () => ({
      compatibilityDate: "${config.compatibility_date}",
      mainModule: "main.js",
      modules: { "main.js": "export default { fetch() { return new Response('up'); } };" },
    }));
    const answer = await worker.getEntrypoint().fetch("http://isolate/");
    return new Response(name + " " + (await answer.text()));
  },
};`;
const mf = new Miniflare({
  workers: [
    {
      name: config.name,
      ...code,
      compatibilityDate: config.compatibility_date,
      compatibilityFlags: config.compatibility_flags ?? [],
      bindings: config.bindings,
      // Requests reach the Worker on its own socket, not through miniflare's entry Worker: a
      // JavaScript router in the same process, which production does not have, and whose cost
      // varied from process to process (V8 optimized its `fetch` in some and left it to the
      // interpreter in others, 2026-12-05).
      unsafeDirectSockets: [{ host: "127.0.0.1", port: config.port }],
    },
    {
      name: "isolate-spawner",
      modules: true,
      script: SPAWNER,
      compatibilityDate: config.compatibility_date,
      workerLoaders: { LOADER: {} },
    },
  ],
  ...(config.persist
    ? {
        durableObjectsPersist: path.join(config.persist, "do"),
        kvPersist: path.join(config.persist, "kv"),
      }
    : {}),
  host: "127.0.0.1",
  // The entry Worker's socket, unused: any free port.
  port: 0,
  inspectorPort: config.inspector_port,
});
await mf.ready;
const url = new URL(`http://127.0.0.1:${config.port}/`);
const spawner = await mf.getWorker("isolate-spawner");
const control = http.createServer(async (req, res) => {
  if (req.url !== "/new-isolate") {
    res.writeHead(404).end();
    return;
  }
  try {
    const answer = await spawner.fetch("http://spawner/");
    res.writeHead(answer.status).end(await answer.text());
  } catch (e) {
    res.writeHead(500).end(String(e));
  }
});
await new Promise((resolve) => control.listen(config.control_port, "127.0.0.1", resolve));
console.log(`ready ${url.href}`);
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
setInterval(() => {}, 1 << 30);

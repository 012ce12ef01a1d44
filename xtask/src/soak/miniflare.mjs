// `cargo xtask soak --miniflare`: the built Worker under workerd through miniflare alone, with
// no DevTools inspector and no dev proxy (what `wrangler dev` adds around the runtime).
//
// usage: node miniflare.mjs CONFIG_JSON_FILE
// The file: {"node_modules", "build", "port", "inspector_port", "name", "persist",
// "compatibility_date", "compatibility_flags", "bindings": {NAME: TEXT}}. The inspector is open (no client attaches
// unless `gc.mjs` asks for a garbage collection).
// Prints `ready <url>` once the Worker answers, and runs until SIGTERM.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const entry = path.join(config.node_modules, "miniflare", "dist", "src", "index.js");
const { Miniflare } = await import(pathToFileURL(entry).href);
const mf = new Miniflare({
  name: config.name,
  modules: [
    { type: "ESModule", path: path.join(config.build, "index.js") },
    { type: "CompiledWasm", path: path.join(config.build, "index_bg.wasm") },
  ],
  modulesRoot: config.build,
  compatibilityDate: config.compatibility_date,
  compatibilityFlags: config.compatibility_flags ?? [],
  bindings: config.bindings,
  durableObjects: { LIMITER: { className: "UserLimiter", useSQLite: true } },
  kvNamespaces: ["CACHE"],
  durableObjectsPersist: path.join(config.persist, "do"),
  kvPersist: path.join(config.persist, "kv"),
  host: "127.0.0.1",
  port: config.port,
  inspectorPort: config.inspector_port,
});
const url = await mf.ready;
console.log(`ready ${url.href}`);
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
setInterval(() => {}, 1 << 30);

// Run before every deploy (npm's `predeploy:<env>` scripts): refuses a deploy without an
// environment, to an environment wrangler.toml does not define, or to one whose KV namespace id
// is still the placeholder (Cloudflare would reject the upload after the build, or worse, a
// copy-pasted id would share another environment's cache). Local runs (`wrangler dev`, the e2e
// tests) keep KV on disk and never call this.
//
//   node deploy-check.mjs <env>
import { experimental_readRawConfig, unstable_readConfig } from "wrangler";

const PLACEHOLDER = /^0+$/;
const env = process.argv[2];

function fail(message) {
  console.error(`deploy-check: ${message}`);
  process.exit(1);
}

if (!env) {
  fail(
    "name the environment: npm run deploy:dev, deploy:staging or deploy:production " +
      "(a bare `wrangler deploy` would deploy the top level, which is for local development)",
  );
}
const { rawConfig } = experimental_readRawConfig({ config: "wrangler.toml" });
if (!rawConfig.env || !Object.hasOwn(rawConfig.env, env)) {
  fail(`wrangler.toml has no [env.${env}] section`);
}
const config = unstable_readConfig({ config: "wrangler.toml", env }, { hideWarnings: true });
const placeholders = (config.kv_namespaces ?? []).filter((kv) => PLACEHOLDER.test(kv.id ?? ""));
if (placeholders.length > 0) {
  const names = placeholders.map((kv) => kv.binding).join(", ");
  fail(
    `[env.${env}] still has the placeholder id for KV ${names}: create the namespace with ` +
      `\`npx wrangler kv namespace create CACHE --env ${env}\` and put its id in ` +
      `[[env.${env}.kv_namespaces]]`,
  );
}
console.log(`deploy-check: ${config.name} (--env ${env}) is ready to deploy`);

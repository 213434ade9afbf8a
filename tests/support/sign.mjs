// Signs one webhook delivery with the vendor's own published library, so tests can
// check our verifiers (src/connectors/signature.rs) against an implementation that is
// not ours. Used by tests/api/signatures.rs.
//
// stdin:  one JSON object {scheme, secret, body, timestamp, method, url, id}
//         (timestamp: Unix seconds, may carry a fraction; url: the full public URL)
// stdout: one JSON object, the HTTP headers the library produces for that delivery.
//
// The libraries are resolved from $ORDERBRIDGE_NODE_MODULES (target/node/node_modules,
// installed by scripts/test.sh from tests/support/node/package-lock.json). Schemes with
// no official signing library (xero, shopify, frappe) are not handled here: the tests
// compute those with the openssl CLI.

import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

function fail(message) {
  process.stderr.write(`sign.mjs: ${message}\n`);
  process.exit(2);
}

const modules = process.env.ORDERBRIDGE_NODE_MODULES;
if (!modules) {
  fail("set ORDERBRIDGE_NODE_MODULES to the node_modules that scripts/test.sh installs (target/node/node_modules)");
}
// A require() rooted next to that node_modules, so packages resolve from it first.
const require = createRequire(join(modules, "..", "package.json"));

function load(name) {
  try {
    return require(name);
  } catch (e) {
    fail(`cannot load ${name} from ${modules} (run scripts/test.sh to install it): ${e.message}`);
  }
}

// ESM-only packages (@octokit/webhooks-methods) export nothing to require(), and
// import() resolves bare names from this script's folder, not from $modules. So find
// the package folder, pick its entry with the conditions an ESM import in Node uses,
// and import that file.
async function loadEsm(name) {
  const dir = (require.resolve.paths(name) ?? [])
    .map((p) => join(p, name))
    .find((d) => existsSync(join(d, "package.json")));
  if (!dir) fail(`cannot find ${name} in ${modules} (run scripts/test.sh to install it)`);
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const conditions = new Set(["node", "import", "default"]);
  const pick = (target) => {
    if (typeof target === "string") return target;
    if (Array.isArray(target)) return target.map(pick).find(Boolean);
    if (target && typeof target === "object") {
      for (const [key, value] of Object.entries(target)) {
        const found = conditions.has(key) ? pick(value) : undefined;
        if (found) return found;
      }
    }
    return undefined;
  };
  const map = pkg.exports;
  const root = map && typeof map === "object" && !Array.isArray(map) && "." in map ? map["."] : map;
  const entry = pick(root) ?? pkg.module ?? pkg.main ?? "index.js";
  return import(pathToFileURL(join(dir, entry)).href);
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

const input = JSON.parse(await readStdin());
const { scheme, secret, body, timestamp, method = "POST", url, id } = input;
if (typeof secret !== "string" || typeof body !== "string" || typeof timestamp !== "number") {
  fail("input needs string `secret`, string `body` and numeric `timestamp`");
}
const seconds = Math.floor(timestamp);

let headers;
switch (scheme) {
  case "stripe": {
    const Stripe = load("stripe");
    // The key is never used: generateTestHeaderString signs locally.
    const stripe = new Stripe("sk_test_unused");
    const value = stripe.webhooks.generateTestHeaderString({ payload: body, secret, timestamp: seconds });
    headers = { "Stripe-Signature": value };
    break;
  }
  case "hubspot_v3": {
    if (typeof url !== "string") fail("hubspot_v3 signs the URL: pass `url`");
    const { Signature } = load("@hubspot/api-client");
    // HubSpot sends milliseconds since the epoch.
    const ms = Math.round(timestamp * 1000);
    const signature = Signature.getSignature(method, "v3", {
      clientSecret: secret,
      requestBody: body,
      url,
      timestamp: ms,
    });
    headers = { "X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": String(ms) };
    break;
  }
  case "github": {
    const { sign } = await loadEsm("@octokit/webhooks-methods");
    headers = { "X-Hub-Signature-256": await sign(secret, body) };
    break;
  }
  case "standard_webhooks": {
    if (typeof id !== "string") fail("standard_webhooks signs the message id: pass `id`");
    const { Webhook } = load("standardwebhooks");
    const signature = new Webhook(secret).sign(id, new Date(seconds * 1000), body);
    headers = { "webhook-id": id, "webhook-timestamp": String(seconds), "webhook-signature": signature };
    break;
  }
  default:
    fail(`no vendor signing library for scheme \`${scheme}\` (xero, shopify and frappe are signed with openssl)`);
}

process.stdout.write(JSON.stringify(headers) + "\n");

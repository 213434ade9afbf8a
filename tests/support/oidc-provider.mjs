// A real OpenID Connect provider on loopback for the console's sign-in tests
// (tests/api/oidc.rs): panva's certified `oidc-provider`, with one confidential client
// and its development interactions (a login form that takes any login name, then a
// consent form), so a browser can sign in. The login name is the account: its `email`
// claim is the login name itself (verified), so a test signs in as any directory
// person, or as someone the directory does not know.
//
// env:    ORDERBRIDGE_NODE_MODULES  target/node/node_modules (scripts/test.sh installs it)
//         OIDC_PORT                 the loopback port to listen on
//         OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI   the one client
// stdout: one line `listening <issuer>` once it serves.
//
// ID tokens are RS256, signed by a key made at start. The email claim is not put into
// the ID token (the provider's default for the code flow): the daemon reads it from
// the userinfo endpoint, as it must with such providers.

import { generateKeyPairSync } from "node:crypto";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

function fail(message) {
  process.stderr.write(`oidc-provider.mjs: ${message}\n`);
  process.exit(2);
}

const env = (name) => process.env[name] || fail(`set ${name}`);
const modules = env("ORDERBRIDGE_NODE_MODULES");
const port = Number(env("OIDC_PORT"));
const issuer = `http://127.0.0.1:${port}`;

let Provider;
try {
  ({ default: Provider } = await import(pathToFileURL(join(modules, "oidc-provider", "lib", "index.js")).href));
} catch (e) {
  fail(`cannot load oidc-provider from ${modules} (run scripts/test.sh to install it): ${e.message}`);
}

const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), kid: "test-rs256", alg: "RS256", use: "sig" };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: env("OIDC_CLIENT_ID"),
      client_secret: env("OIDC_CLIENT_SECRET"),
      redirect_uris: [env("OIDC_REDIRECT_URI")],
      // Sign-out (RP-initiated logout) sends the browser back to the console's sign-in page.
      post_logout_redirect_uris: [new URL("/signin", env("OIDC_REDIRECT_URI")).href],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  jwks: { keys: [signingKey] },
  claims: { openid: ["sub"], email: ["email", "email_verified"] },
  async findAccount(_ctx, id) {
    return { accountId: id, async claims() { return { sub: id, email: id, email_verified: true }; } };
  },
  pkce: { required: () => true },
  // Plain http on loopback: SameSite=None cookies would need Secure.
  cookies: { keys: ["orderbridge-test-cookies"], long: { sameSite: "lax" }, short: { sameSite: "lax" } },
  features: { devInteractions: { enabled: true } },
});

provider.on("server_error", (_ctx, e) => process.stderr.write(`oidc-provider.mjs: ${e.stack}\n`));
provider.listen(port, "127.0.0.1", () => process.stdout.write(`listening ${issuer}\n`));

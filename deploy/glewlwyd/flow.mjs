// A client's whole life against Glewlwyd, with a real OpenID client library (openid-client
// v6): discovery, dynamic registration (RFC 7591), the user's login and consent through
// Glewlwyd's own APIs (what its login page does), authorization code + PKCE (S256), the code
// redeemed without a client secret (public, the default) or with the issued one (extra metadata
// `{"token_endpoint_auth_method":"client_secret_post"}`).
//
//   node deploy/glewlwyd/flow.mjs <issuer-url> <username> <password> [extra-metadata-json]
//
// Every request (discovery, registration, login, /auth, /token) goes to the issuer's origin —
// the gateway's, when Glewlwyd's issuer is set to the gateway's public URL.
//
// Prints ONE JSON line on stdout:
//   {"ok":true,"client_id":"..","registration":{..},"token_type":"..","has_access_token":true,
//    "has_refresh_token":bool,"id_token_claims":{..},"login_page":"<Location of Glewlwyd's login redirect>"}
//   {"ok":false,"step":"..","error":"..","error_description":".."|null,"status":N|null,"client_id":..}
//
// openid-client is resolved from the demo IdP's node_modules (deploy/demo-idp, `npm ci` there),
// as tests/e2e/client.mjs does.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const REDIRECT_URI = 'http://127.0.0.1:8976/cb';

function out(obj, code) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
  process.exitCode = code;
}

let step = 'start';
let clientId = null;

function fail(error, status = null, description = null) {
  out({ ok: false, step, error: String(error), error_description: description, status, client_id: clientId }, 1);
}

async function main() {
  const [issuerArg, username, password, extra] = process.argv.slice(2);
  if (!issuerArg || !username || !password) {
    process.stderr.write('usage: node deploy/glewlwyd/flow.mjs <issuer-url> <username> <password> [extra-metadata-json]\n');
    return fail('usage');
  }
  const issuer = new URL(issuerArg);
  const origin = issuer.origin;

  const demoIdpDir = new URL('../demo-idp/', import.meta.url);
  let client;
  try {
    const require = createRequire(new URL('package.json', demoIdpDir));
    client = await import(pathToFileURL(require.resolve('openid-client')).href);
  } catch (err) {
    return fail(`cannot load openid-client from ${demoIdpDir.pathname}node_modules (run npm ci there): ${err.message}`);
  }
  const options = { timeout: 15, execute: [client.allowInsecureRequests] };

  try {
    step = 'register';
    const metadata = {
      client_name: 'dcr-gateway glewlwyd pkce flow',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      ...(extra ? JSON.parse(extra) : {}),
    };
    // A public client authenticates with nothing; a confidential one with the secret the
    // registration answer issued (openid-client's default for a registered secret).
    const auth = metadata.token_endpoint_auth_method === 'none' ? client.None() : undefined;
    const config = await client.dynamicClientRegistration(issuer, metadata, auth, options);
    const registration = { ...config.clientMetadata() };
    clientId = registration.client_id;

    step = 'login';
    // What Glewlwyd's login page does: POST /api/auth/ with the password, then record the
    // user's consent for this client (PUT /api/auth/grant/{client_id}/).
    let res = await fetch(`${origin}/api/auth/`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username, password }),
    });
    if (res.status !== 200) return fail('login refused', res.status, await res.text());
    const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0];
    if (!cookie) return fail('no session cookie');

    step = 'consent';
    res = await fetch(`${origin}/api/auth/grant/${encodeURIComponent(clientId)}/`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', cookie },
      body: JSON.stringify({ scope: 'openid' }),
    });
    if (res.status !== 200) return fail('consent refused', res.status, await res.text());

    step = 'authorize';
    const verifier = client.randomPKCECodeVerifier();
    const challenge = await client.calculatePKCECodeChallenge(verifier);
    const state = client.randomState();
    const nonce = client.randomNonce();
    const authUrl = client.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT_URI,
      scope: 'openid',
      code_challenge: challenge,
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    // Glewlwyd first sends the browser to its login page (login.html?...&callback_url=<the
    // authorization URL>), even with a valid session and consent; the page sends the browser
    // back to callback_url with `g_continue` added once the user confirms.
    res = await fetch(authUrl, { headers: { cookie }, redirect: 'manual' });
    const loginPage = res.headers.get('location');
    if (res.status !== 302 || !loginPage || !new URL(loginPage).pathname.endsWith('/login.html')) {
      return fail('no login page', res.status, `location: ${loginPage}`);
    }
    const callback = new URL(new URL(loginPage).searchParams.get('callback_url'));
    // The browser stays on the origin it started from (the gateway's).
    const again = new URL(`${callback.pathname}${callback.search}&g_continue`, authUrl);
    res = await fetch(again, { headers: { cookie }, redirect: 'manual' });
    const location = res.headers.get('location');
    if (res.status !== 302 || !location || !location.startsWith(REDIRECT_URI)) {
      return fail('no code', res.status, `location: ${location}`);
    }

    step = 'token';
    const tokens = await client.authorizationCodeGrant(config, new URL(location), {
      pkceCodeVerifier: verifier,
      expectedState: state,
      expectedNonce: nonce,
      idTokenExpected: true,
    });
    return out(
      {
        ok: true,
        client_id: clientId,
        registration,
        token_type: tokens.token_type,
        has_access_token: Boolean(tokens.access_token),
        has_refresh_token: Boolean(tokens.refresh_token),
        id_token_claims: tokens.claims() ?? null,
        login_page: loginPage,
      },
      0,
    );
  } catch (err) {
    const status = err.status ?? err.response?.status ?? err.cause?.status ?? null;
    const error = err.error ?? err.code ?? err.message ?? String(err);
    const cause = err.cause?.code ? ` (${err.cause.code})` : err.cause?.message ? ` (${err.cause.message})` : '';
    const description =
      err.error_description ?? err.cause?.error_description ?? (err.error ? null : `${err.message ?? err}${cause}`);
    return fail(error, typeof status === 'number' ? status : null, description);
  }
}

await main();

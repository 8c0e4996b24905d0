// A client identified by a Client ID Metadata Document URL, driven by a real OAuth client
// library (openid-client v6, oauth4webapi underneath) through the gateway in `[cimd] mode =
// "bridge"`: discovery, an authorization-code + PKCE flow (plain or pushed, RFC 9126) against
// the demo IdP with its development login and consent pages, the token request, and the
// revocation of the access token.
//
//   node tests/e2e/cimd_flow.mjs <issuer-url> <client_id URL> <redirect_uri> <plain|par>
//
// Prints ONE JSON line on stdout:
//   {"ok":true,"cimd_supported":true|false|null,"token_type":"..","access_token":true,"revoked":true,
//    "authorize_client_id":".."}  (the client_id the authorization request carried)
//   {"ok":false,"stage":"discovery|par|authorize|token|revocation","status":N|null,"error":"..","error_description":".."|null}
//
// openid-client is resolved from the demo IdP's node_modules (deploy/demo-idp), as in client.mjs.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

function out(obj, code) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
  process.exitCode = code;
}

function fail(stage, err) {
  const status = err.status ?? err.response?.status ?? err.cause?.status ?? null;
  out(
    {
      ok: false,
      stage,
      status: typeof status === 'number' ? status : null,
      error: String(err.error ?? err.code ?? err.message ?? err),
      error_description: err.error_description ?? err.cause?.error_description ?? err.message ?? null,
    },
    1,
  );
}

// The browser: follows redirects by hand (the callback is read, not fetched), keeps cookies,
// and submits the demo IdP's login and consent forms.
async function browse(start, redirectUri) {
  const jar = new Map();
  let url = new URL(start);
  let init = {};
  for (let step = 0; step < 12; step += 1) {
    const headers = { ...(init.headers || {}) };
    if (jar.size) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      jar.set(pair.slice(0, i).trim(), pair.slice(i + 1));
    }
    if (res.status >= 300 && res.status < 400) {
      const next = new URL(res.headers.get('location'), url);
      if (next.href.startsWith(redirectUri)) return next;
      url = next;
      init = {};
      continue;
    }
    const text = await res.text();
    if (res.status !== 200) {
      let body = {};
      try {
        body = JSON.parse(text);
      } catch {
        body = { error: 'unexpected_answer', error_description: text.slice(0, 200) };
      }
      throw Object.assign(new Error(body.error_description || body.error), { status: res.status, ...body });
    }
    const action = /<form[^>]*action="([^"]+)"/.exec(text)?.[1];
    const prompt = /name="prompt" value="([a-z]+)"/.exec(text)?.[1];
    if (!action || !prompt) throw new Error(`no form on ${url.pathname}: ${text.slice(0, 200)}`);
    const form = new URLSearchParams({ prompt });
    if (prompt === 'login') {
      form.set('login', 'alice');
      form.set('password', 'any');
    }
    url = new URL(action, url);
    init = { method: 'POST', body: form.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } };
  }
  throw new Error('too many steps');
}

async function main() {
  const [issuerArg, clientId, redirectUri, mode] = process.argv.slice(2);
  if (!issuerArg || !clientId || !redirectUri || !['plain', 'par'].includes(mode)) {
    process.stderr.write('usage: node tests/e2e/cimd_flow.mjs <issuer-url> <client_id URL> <redirect_uri> <plain|par>\n');
    return fail('usage', new Error('usage'));
  }
  const demoIdpDir = process.env.DEMO_IDP_DIR
    ? pathToFileURL(`${process.env.DEMO_IDP_DIR.replace(/\/$/, '')}/`)
    : new URL('../../deploy/demo-idp/', import.meta.url);
  const require = createRequire(new URL('package.json', demoIdpDir));
  const client = await import(pathToFileURL(require.resolve('openid-client')).href);
  const issuer = new URL(issuerArg);
  const options = { timeout: 15, execute: issuer.protocol === 'http:' ? [client.allowInsecureRequests] : [] };

  let config;
  try {
    // The client_id is the document's URL; a public client (token_endpoint_auth_method none).
    config = await client.discovery(issuer, clientId, { token_endpoint_auth_method: 'none' }, client.None(), options);
  } catch (err) {
    return fail('discovery', err);
  }
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const params = {
    redirect_uri: redirectUri,
    // A plain OAuth scope, as MCP clients use: with `openid` the ID token's aud would be the
    // IdP's client_id, which openid-client (rightly) refuses for a URL client_id (docs/cimd.md).
    scope: 'api',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
  };
  let authUrl;
  try {
    authUrl = mode === 'par' ? await client.buildAuthorizationUrlWithPAR(config, params) : client.buildAuthorizationUrl(config, params);
  } catch (err) {
    return fail('par', err);
  }
  let callback;
  try {
    callback = await browse(authUrl.href, redirectUri);
  } catch (err) {
    return fail('authorize', err);
  }
  if (callback.searchParams.get('error')) {
    const p = callback.searchParams;
    return fail('authorize', { error: p.get('error'), error_description: p.get('error_description') });
  }
  let tokens;
  try {
    tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedState: state });
  } catch (err) {
    return fail('token', err);
  }
  try {
    await client.tokenRevocation(config, tokens.access_token);
  } catch (err) {
    return fail('revocation', err);
  }
  return out(
    {
      ok: true,
      cimd_supported: config.serverMetadata().client_id_metadata_document_supported ?? null,
      token_type: tokens.token_type,
      access_token: typeof tokens.access_token === 'string' && tokens.access_token.length > 0,
      revoked: true,
      authorize_client_id: authUrl.searchParams.get('client_id'),
    },
    0,
  );
}

await main();

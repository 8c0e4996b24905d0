// A dynamically registered client's whole life through the gateway, driven by a real OAuth
// client library (openid-client v6, oauth4webapi underneath) against the demo IdP: discovery and
// registration (RFC 7591), the client's configuration read and updated (RFC 7592 GET, PUT), an
// authorization-code + PKCE flow with the IdP's development login and consent pages, the code
// redeemed (with the issued secret for a confidential client), and the client deleted (RFC 7592
// DELETE) — after which its configuration can no longer be read.
//
//   node tests/e2e/dcr_flow.mjs <issuer-url> <redirect_uri> <public|confidential>
//
// Prints ONE JSON line on stdout:
//   {"ok":true,"client_id":"..","registration_client_uri":"..","read":{..},"updated_name":"..",
//    "token_type":"..","id_token_claims":{..},"deleted_status":N,"read_after_delete":N}
//   {"ok":false,"stage":"..","status":N|null,"error":"..","error_description":".."|null}
//
// openid-client is resolved from the demo IdP's node_modules (deploy/demo-idp), as in client.mjs.
// RFC 7592 has no API in openid-client: those three calls are plain fetches with the
// registration access token, as a client would make them.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

import { browse, fail, out } from './common.mjs';

// One RFC 7592 call: status and JSON body (null when there is none).
async function manage(method, uri, token, body) {
  const headers = { authorization: `Bearer ${token}`, accept: 'application/json' };
  if (body) headers['content-type'] = 'application/json';
  const res = await fetch(uri, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = { unparsed: text.slice(0, 200) };
  }
  return { status: res.status, json };
}

async function main() {
  const [issuerArg, redirectUri, kind] = process.argv.slice(2);
  if (!issuerArg || !redirectUri || !['public', 'confidential'].includes(kind)) {
    process.stderr.write('usage: node tests/e2e/dcr_flow.mjs <issuer-url> <redirect_uri> <public|confidential>\n');
    return fail('usage', new Error('usage'));
  }
  const demoIdpDir = new URL('../../deploy/demo-idp/', import.meta.url);
  const require = createRequire(new URL('package.json', demoIdpDir));
  const client = await import(pathToFileURL(require.resolve('openid-client')).href);
  const issuer = new URL(issuerArg);
  const options = { timeout: 15, execute: issuer.protocol === 'http:' ? [client.allowInsecureRequests] : [] };

  const metadata = {
    client_name: `dcr-gateway e2e ${kind} client`,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: kind === 'public' ? 'none' : 'client_secret_post',
  };
  let config;
  try {
    // A public client authenticates with nothing; a confidential one with the issued secret
    // (openid-client's default when the registration answer carries one).
    config = await client.dynamicClientRegistration(issuer, metadata, kind === 'public' ? client.None() : undefined, options);
  } catch (err) {
    return fail('register', err);
  }
  const registered = config.clientMetadata();
  const clientId = registered.client_id;
  const uri = registered.registration_client_uri;
  const token = registered.registration_access_token;
  if (!uri || !token) return fail('register', new Error('no registration_client_uri / registration_access_token'));

  const read = await manage('GET', uri, token);
  if (read.status !== 200 || read.json?.client_id !== clientId) {
    return fail('read', { status: read.status, error: read.json?.error ?? 'unexpected', error_description: JSON.stringify(read.json) });
  }
  // RFC 7592 §2.2: the whole configuration, with the client_id; server-managed members left out.
  const update = { ...read.json, client_name: `${metadata.client_name} (updated)` };
  for (const m of ['registration_access_token', 'registration_client_uri', 'client_secret_expires_at', 'client_id_issued_at']) {
    delete update[m];
  }
  const updated = await manage('PUT', uri, token, update);
  if (updated.status !== 200 || updated.json?.client_name !== update.client_name) {
    return fail('update', { status: updated.status, error: updated.json?.error ?? 'unexpected', error_description: JSON.stringify(updated.json) });
  }

  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const authUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: 'openid',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  });
  let callback;
  try {
    callback = await browse(authUrl.href, redirectUri);
  } catch (err) {
    return fail('authorize', err);
  }
  let tokens;
  try {
    tokens = await client.authorizationCodeGrant(config, callback, {
      pkceCodeVerifier: verifier,
      expectedState: state,
      expectedNonce: nonce,
      idTokenExpected: true,
    });
  } catch (err) {
    return fail('token', err);
  }

  const deleted = await manage('DELETE', uri, token);
  const after = await manage('GET', uri, token);
  return out(
    {
      ok: true,
      client_id: clientId,
      registration_client_uri: uri,
      authorization_endpoint: config.serverMetadata().authorization_endpoint,
      read: read.json,
      updated_name: updated.json.client_name,
      token_type: tokens.token_type,
      id_token_claims: tokens.claims() ?? null,
      deleted_status: deleted.status,
      read_after_delete: after.status,
    },
    0,
  );
}

await main();

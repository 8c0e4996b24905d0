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

import { browse, fail, out } from './common.mjs';

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

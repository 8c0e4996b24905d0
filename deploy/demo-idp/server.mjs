// Demo / test OpenID Provider for dcr-gateway: node-oidc-provider with in-memory storage.
// NOT FOR PRODUCTION: throw-away keys, in-memory clients, development login screens.
//
// Environment:
//   HOST, PORT         where to listen (default 127.0.0.1:3000)
//   ISSUER             issuer identifier (default http://127.0.0.1:8080, the gateway's public
//                      address: clients discover this IdP through the gateway)
//   DEMO_IDP_RECORD    test aid, opt-in: a file to which one JSON line is appended per request
//                      to the registration route (/reg and /reg/<client_id>):
//                      {"method","path","headers" (lower-case names, no authorization),"body"}
//                      (the raw body as received).
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

import { Provider } from 'oidc-provider';

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number.parseInt(process.env.PORT || '3000', 10);
const ISSUER = process.env.ISSUER || 'http://127.0.0.1:8080';
const RECORD = process.env.DEMO_IDP_RECORD || '';
const REGISTRATION_ROUTE = '/reg';
const MAX_RECORDED_BODY = 1024 * 1024;

// Fresh signing key and cookie keys per process: nothing survives a restart anyway.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'demo-rs256', alg: 'RS256', use: 'sig' };

const configuration = {
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  // Any login id is an account; its only claim is sub.
  async findAccount(ctx, sub) {
    return { accountId: sub, async claims() { return { sub }; } };
  },
  // `api`: a plain OAuth scope (no ID token), as MCP clients request (tests/e2e/cimd_flow.mjs).
  scopes: ['openid', 'offline_access', 'api'],
  clientAuthMethods: ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'],
  pkce: { required: () => true },
  routes: { registration: REGISTRATION_ROUTE },
  features: {
    devInteractions: { enabled: true },
    // Open registration (RFC 7591): no initial access token; the gateway guards it.
    registration: { enabled: true, initialAccessToken: false, issueRegistrationAccessToken: true },
    // RFC 7592 read/update/delete with the registration access token. The token is not rotated
    // so tests can use it more than once.
    registrationManagement: { enabled: true, rotateRegistrationAccessToken: false },
    revocation: { enabled: true },
  },
  // No outgoing requests at all (jwks_uri, sector_identifier_uri, ...): register private_key_jwt
  // clients with inline `jwks`.
  async fetch(url) {
    throw new Error(`demo-idp makes no outgoing requests (refused ${url})`);
  },
};

const provider = new Provider(ISSUER, configuration);
// Behind the gateway: honour X-Forwarded-Proto / X-Forwarded-Host for the URLs it builds.
provider.proxy = true;
provider.on('server_error', (ctx, err) => console.error('demo-idp server_error:', err));

const handle = provider.callback();

function isRegistrationRoute(url) {
  const path = (url || '').split('?', 1)[0];
  return path === REGISTRATION_ROUTE || path.startsWith(`${REGISTRATION_ROUTE}/`);
}

// Test aid: record the request as received, then hand the already-read body to the provider
// (it uses req.body when the stream has been consumed).
async function recordAndHandle(req, res) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_RECORDED_BODY) {
      res.writeHead(413, { 'content-type': 'application/json' });
      res.end('{"error":"invalid_request","error_description":"body too large"}');
      return;
    }
    chunks.push(chunk);
  }
  const body = Buffer.concat(chunks);
  const headers = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (name !== 'authorization') headers[name] = value;
  }
  const line = JSON.stringify({ method: req.method, path: req.url, headers, body: body.toString('utf8') });
  appendFileSync(RECORD, `${line}\n`);
  req.body = body;
  handle(req, res);
}

const server = createServer((req, res) => {
  if (RECORD && isRegistrationRoute(req.url)) {
    recordAndHandle(req, res).catch((err) => {
      console.error('demo-idp record error:', err);
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  } else {
    handle(req, res);
  }
});

server.listen(PORT, HOST, () => {
  const { address, port } = server.address();
  const host = address.includes(':') ? `[${address}]` : address;
  console.log(`demo-idp listening on http://${host}:${port} (issuer ${ISSUER})`);
});

function shutdown(signal) {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => {
    console.error(`demo-idp: forced exit after ${signal}`);
    process.exit(0);
  }, 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

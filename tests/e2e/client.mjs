// A real OpenID Connect client (openid-client v6) for the end-to-end tests: discovers the
// issuer and registers itself dynamically (RFC 7591), normally through the gateway.
//
//   node tests/e2e/client.mjs <issuer-url> <case>
//
// case:
//   public        token_endpoint_auth_method none, redirect http://127.0.0.1:8976/cb,
//                 grant_types authorization_code + refresh_token
//   confidential  token_endpoint_auth_method client_secret_post, https redirect
//   discovery     discovery only; prints the registration_endpoint
//
// Prints ONE JSON line on stdout:
//   {"ok":true,"client_id":"..","client_secret":".."|null,"registration_access_token":".."|null,"metadata":{..}}
//   {"ok":true,"issuer":"..","registration_endpoint":".."|null}               (discovery)
//   {"ok":false,"error":"..","error_description":".."|null,"status":N|null}  exit code 1
// Secrets are printed on purpose: the tests grep the gateway's logs for them.
//
// openid-client is not installed here: it is resolved from the demo IdP's node_modules
// (deploy/demo-idp, `npm ci` there), or from the directory in DEMO_IDP_DIR, with
// createRequire + dynamic import, so this file needs no package.json of its own.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

function out(obj, code) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
  process.exitCode = code;
}

function fail(error, status = null, description = null) {
  out({ ok: false, error: String(error), error_description: description, status }, 1);
}

const CASES = {
  public: {
    metadata: {
      client_name: 'dcr-gateway e2e public client',
      redirect_uris: ['http://127.0.0.1:8976/cb'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    auth: (client) => client.None(),
  },
  confidential: {
    metadata: {
      client_name: 'dcr-gateway e2e confidential client',
      redirect_uris: ['https://rp.example.com/cb'],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    },
    // openid-client's default for this method: ClientSecretPost with the issued secret.
    auth: () => undefined,
  },
};

async function main() {
  const [issuerArg, caseName] = process.argv.slice(2);
  if (!issuerArg || !caseName || !(caseName in CASES || caseName === 'discovery')) {
    process.stderr.write('usage: node tests/e2e/client.mjs <issuer-url> <public|confidential|discovery>\n');
    return fail('usage', null);
  }
  let issuer;
  try {
    issuer = new URL(issuerArg);
  } catch {
    return fail(`invalid issuer URL: ${issuerArg}`);
  }

  const demoIdpDir = process.env.DEMO_IDP_DIR
    ? pathToFileURL(`${process.env.DEMO_IDP_DIR.replace(/\/$/, '')}/`)
    : new URL('../../deploy/demo-idp/', import.meta.url);
  let client;
  try {
    const require = createRequire(new URL('package.json', demoIdpDir));
    client = await import(pathToFileURL(require.resolve('openid-client')).href);
  } catch (err) {
    return fail(`cannot load openid-client from ${demoIdpDir.pathname}node_modules (run npm ci there): ${err.message}`);
  }

  const options = {
    timeout: 15,
    execute: issuer.protocol === 'http:' ? [client.allowInsecureRequests] : [],
  };

  try {
    // Discovery (validates that the metadata's issuer is the one we asked for).
    const discovered = await client.discovery(issuer, 'discovery-only', undefined, undefined, options);
    const server = discovered.serverMetadata();
    if (caseName === 'discovery') {
      return out({ ok: true, issuer: server.issuer, registration_endpoint: server.registration_endpoint ?? null }, 0);
    }
    if (!server.registration_endpoint) {
      return fail('the discovered metadata has no registration_endpoint');
    }

    const { metadata, auth } = CASES[caseName];
    const config = await client.dynamicClientRegistration(issuer, metadata, auth(client), options);
    const registered = { ...config.clientMetadata() };
    return out(
      {
        ok: true,
        client_id: registered.client_id,
        client_secret: registered.client_secret ?? null,
        registration_access_token: registered.registration_access_token ?? null,
        metadata: registered,
      },
      0,
    );
  } catch (err) {
    // ResponseBodyError: an OAuth error response (status, error, error_description).
    // Other errors may carry the Response as cause.
    const status = err.status ?? err.response?.status ?? err.cause?.status ?? null;
    const error = err.error ?? err.code ?? err.message ?? String(err);
    const cause = err.cause?.code ? ` (${err.cause.code})` : err.cause?.message ? ` (${err.cause.message})` : '';
    const description =
      err.error_description ?? err.cause?.error_description ?? (err.error ? null : `${err.message ?? err}${cause}`);
    return fail(error, typeof status === 'number' ? status : null, description);
  }
}

await main();

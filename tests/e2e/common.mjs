// What the e2e flow scripts share (tests/e2e/*_flow.mjs): the one JSON line they print, and
// the browser they drive the demo IdP (node-oidc-provider) with.

export function out(obj, code) {
  // Exit once the line is written: fetch keeps idle keep-alive connections to the gateway, which
  // would hold the process until the gateway's idle timeout.
  process.stdout.write(`${JSON.stringify(obj)}\n`, () => process.exit(code));
}

export function fail(stage, err) {
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

// The browser the e2e flows use against the demo IdP (node-oidc-provider's development login
// and consent pages): follows redirects by hand (the callback is read, not fetched), keeps
// cookies, and submits the login and consent forms. Resolves with the callback URL; an OAuth
// error in the callback is thrown.
export async function browse(start, redirectUri) {
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
      if (next.href.startsWith(redirectUri)) {
        // The authorization response: a code, or the OAuth error sent back to the client.
        const error = next.searchParams.get('error');
        if (error) {
          const description = next.searchParams.get('error_description');
          throw Object.assign(new Error(description || error), { error, error_description: description });
        }
        return next;
      }
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


// The admin API: JSON over fetch, with the token from sessionStorage as a
// bearer token; a 401 forgets the token and asks for it again.

const KEY = 'pipeline.admin.token';

export const getToken = () => sessionStorage.getItem(KEY) || '';
export const setToken = (t) => sessionStorage.setItem(KEY, t);
export const clearToken = () => sessionStorage.removeItem(KEY);

export class AuthError extends Error {}
export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

let unauthorized = () => {};
export function onUnauthorized(fn) { unauthorized = fn; }

// quiet tells errors that need no message: navigation aborts, and 401s
// (the token form says it).
export const quiet = (e) => e instanceof AuthError || e?.name === 'AbortError';

export function apiURL(path, query) {
  const url = new URL('api/' + path, document.baseURI);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  }
  return url;
}

export const enc = encodeURIComponent;

async function send(path, { method = 'GET', query, signal, accept = 'application/json' } = {}) {
  const res = await fetch(apiURL(path, query), {
    method,
    signal,
    cache: 'no-store',
    headers: { Authorization: `Bearer ${getToken()}`, Accept: accept },
  });
  if (res.status === 401) {
    const body = await res.json().catch(() => ({}));
    clearToken();
    const msg = body.error ? `The token was refused: ${body.error}` : 'The token was refused (401).';
    unauthorized(msg);
    throw new AuthError(msg);
  }
  if (!res.ok) {
    const txt = await res.text().catch(() => '');
    let msg = `${res.status} ${res.statusText}`;
    try { const b = JSON.parse(txt); if (b && b.error) msg = b.error; } catch { if (txt) msg += `: ${txt.slice(0, 200)}`; }
    throw new ApiError(`${method} ${path}: ${msg}`, res.status);
  }
  return res;
}

export async function api(path, opts = {}) {
  const res = await send(path, opts);
  const txt = await res.text();
  return txt ? JSON.parse(txt) : {};
}

export const post = (path, opts = {}) => api(path, { ...opts, method: 'POST' });

// stream reads a text/event-stream response (EventSource cannot send the
// Authorization header) and calls onEvent({event, data}) per event. It
// resolves when the server ends the stream or the signal aborts.
export async function stream(path, { query, signal, onEvent }) {
  const res = await send(path, { query, signal, accept: 'text/event-stream' });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let event = '';
  let data = [];
  const line = (l) => {
    if (l === '') {
      if (data.length) onEvent({ event: event || 'message', data: data.join('\n') });
      event = '';
      data = [];
      return;
    }
    if (l.startsWith(':')) return; // a comment (keep-alive)
    const i = l.indexOf(':');
    const field = i < 0 ? l : l.slice(0, i);
    let value = i < 0 ? '' : l.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        line(buf.slice(0, i).replace(/\r$/, ''));
        buf = buf.slice(i + 1);
      }
    }
    if (buf) line(buf.replace(/\r$/, ''));
    line(''); // a last event without its blank line
  } catch (e) {
    if (e?.name !== 'AbortError') throw e;
  } finally {
    reader.releaseLock?.();
  }
}

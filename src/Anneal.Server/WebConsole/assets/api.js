// The console's only door to the server: every call goes to this server's /api with
// `Authorization: Bearer <key>`, the same isolation as the CLI. The key is kept in
// sessionStorage (gone when the tab closes) and never put in a URL, so no access log holds it.
// Events are read with fetch and a stream reader, since EventSource cannot send the header.

const KEY = 'anneal.apiKey';

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  signIn(key) { sessionStorage.setItem(KEY, key); },
  signOut() { sessionStorage.removeItem(KEY); },
};

/** A non-2xx answer; `problem` is the server's problem details when it sent them. */
export class ApiError extends Error {
  constructor(status, problem) {
    // Problem details from /api; OpenAI's {error: {message}} from /v1.
    super(problem?.detail || problem?.error?.message || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

let unauthorized = () => {};
/** Called when the server answers 401 (key revoked or wrong): the app signs out. */
export function onUnauthorized(handler) { unauthorized = handler; }

function headers(accept) {
  return { Authorization: `Bearer ${session.key}`, Accept: accept };
}

async function fail(res) {
  let problem = null;
  try { problem = await res.json(); } catch { /* not JSON */ }
  if (res.status === 401) unauthorized();
  return new ApiError(res.status, problem);
}

/** GET (or POST with method) /api + path; JSON back, or text with { text: true }; `body` is sent as JSON. */
export async function api(path, { method = 'GET', signal, text = false, body, root = '/api' } = {}) {
  const init = { method, signal, headers: headers(text ? 'text/plain' : 'application/json') };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(root + path, init);
  if (!res.ok) throw await fail(res);
  return text ? res.text() : res.json();
}

export const enc = encodeURIComponent;

/**
 * Streams a job's events (SSE) from after `sinceSeq`, calling onEvent(event) for each, until the
 * server ends the stream (the job is terminal and every event was sent) or `signal` aborts.
 * Resolves with the last seq seen; throws on HTTP or network errors (the caller retries from it).
 */
export async function streamEvents(jobId, sinceSeq, onEvent, signal) {
  const res = await fetch(`/api/learning/jobs/${enc(jobId)}/events?since_seq=${sinceSeq}`,
    { signal, headers: headers('text/event-stream'), cache: 'no-store' });
  if (!res.ok) throw await fail(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let last = sinceSeq;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return last;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    // One SSE message per blank-line-terminated block: `id:`, `event:`, `data:` lines; `:` is a comment.
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split('\n').filter(l => l.startsWith('data:')).map(l => l.slice(5).replace(/^ /, '')).join('\n');
      if (!data) continue;
      const event = JSON.parse(data);
      if (event.seq > last) { last = event.seq; onEvent(event); }
    }
  }
}

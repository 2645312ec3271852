// Console entry: sign-in, hash routes (#/jobs, #/jobs/ID, #/datasets, #/datasets/ID, #/models, #/chat/MODEL),
// and one AbortController per page so that leaving a page stops its polling and event stream.
// Routes live in the fragment, which browsers never send to the server.

import { api, session, onUnauthorized, ApiError } from './api.js';
import { h, replace } from './dom.js';
import { jobsPage } from './jobs.js';
import { jobPage } from './job.js';
import { datasetsPage, datasetPage } from './datasets.js';
import { modelsPage } from './models.js';
import { chatPage } from './chat.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const signOut = document.getElementById('sign-out');
let current = null;
let signingIn = false;   // a refused key at sign-in is answered by the form, not by signing out

const routes = [
  [/^#\/jobs\/([^/?]+)$/, m => jobPage(main, decodeURIComponent(m[1]), current.signal), 'jobs'],
  [/^#\/jobs(?:\?status=(\w*))?$/, m => jobsPage(main, m[1] || '', current.signal), 'jobs'],
  [/^#\/datasets\/([^/?]+)$/, m => datasetPage(main, decodeURIComponent(m[1]), current.signal), 'datasets'],
  [/^#\/datasets$/, () => datasetsPage(main, current.signal), 'datasets'],
  [/^#\/models$/, () => modelsPage(main, current.signal), 'models'],
  [/^#\/chat\/(.+)$/, m => chatPage(main, decodeURIComponent(m[1]), current.signal), 'models'],
];

function route() {
  current?.abort();
  current = new AbortController();
  if (!session.key) return signInPage();
  nav.hidden = false;
  signOut.hidden = false;
  const hash = location.hash || '#/jobs';
  for (const [pattern, render, page] of routes) {
    const m = hash.match(pattern);
    if (!m) continue;
    for (const a of nav.querySelectorAll('a')) a.classList.toggle('current', a.dataset.page === page);
    render(m).catch(showError);
    return;
  }
  replace(main, h('h1', {}, 'Not found'), h('p', {}, 'No console page at ', h('code', {}, hash), '. ', h('a', { href: '#/jobs' }, 'Jobs')));
}

function showError(e) {
  if (e?.name === 'AbortError') return;
  const text = e instanceof ApiError && e.status === 404 ? `Not found: ${e.message}` : `Error: ${e.message}`;
  main.prepend(h('div', { class: 'notice', role: 'alert' }, text));
}

function signInPage(message) {
  nav.hidden = true;
  signOut.hidden = true;
  const input = h('input', { type: 'password', name: 'api-key', id: 'api-key', autocomplete: 'off', placeholder: 'ank_…', required: true });
  const status = h('p', { class: 'error', id: 'sign-in-error', role: 'alert' }, message || '');
  const form = h('form', {},
    h('label', { for: 'api-key' }, 'API key'), input,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'), status);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    session.signIn(input.value.trim());
    signingIn = true;
    try {
      await api('/learning/jobs?limit=1');
      signingIn = false;
      route();
    } catch (e) {
      signingIn = false;
      session.signOut();
      status.textContent = e instanceof ApiError && e.status === 401 ? 'That API key was not accepted.' : `Could not reach the server: ${e.message}`;
    }
  });
  replace(main, h('div', { class: 'card signin' },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'Use an API key of this server (SYNTH_API_KEY; `anneal keys create`). It is kept for this browser tab only.'),
    form));
  input.focus();
}

onUnauthorized(() => {
  if (signingIn) return;
  session.signOut();
  current?.abort();
  signInPage('The server no longer accepts this API key; sign in again.');
});
signOut.addEventListener('click', () => { session.signOut(); route(); });
window.addEventListener('hashchange', route);
route();

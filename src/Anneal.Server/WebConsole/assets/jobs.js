// Jobs list: status, model, progress, tokens/s, ETA, filter by status. Refreshed every 5 s while
// a job on the page is still moving and the tab is visible: one list call, less than one job's
// CLI follower (job + events every 2 s).

import { api, enc } from './api.js';
import { h, replace, badge, number, duration, time, progressBar, TERMINAL } from './dom.js';

const STATUSES = ['', 'created', 'queued', 'running', 'paused', 'succeeded', 'failed', 'cancelled'];

export async function jobsPage(main, status, signal) {
  const filter = h('select', { id: 'status-filter', 'aria-label': 'Filter by status' },
    ...STATUSES.map(s => h('option', { value: s, selected: s === status }, s || 'all statuses')));
  filter.addEventListener('change', () => { location.hash = filter.value ? `#/jobs?status=${filter.value}` : '#/jobs'; });
  const body = h('tbody');
  const more = h('p', { class: 'muted' });
  replace(main,
    h('h1', {}, 'Jobs', filter),
    h('div', { class: 'card' }, h('table', { id: 'jobs' },
      h('thead', {}, h('tr', {}, ...['Job', 'Status', 'Model', 'Progress', '', 'Tokens/s', 'ETA', 'Created', 'Fine-tuned model']
        .map((t, i) => h('th', { class: i === 3 || i === 5 || i === 6 ? 'num' : null }, t)))),
      body), more));

  for (;;) {
    const list = await api(`/learning/jobs?limit=100${status ? `&status=${enc(status)}` : ''}`, { signal });
    const jobs = list.jobs || [];
    replace(body, ...jobs.map(row));
    if (jobs.length === 0) replace(body, h('tr', {}, h('td', { colspan: 9, class: 'muted' }, status ? `No ${status} jobs.` : 'No jobs yet. Start one with `anneal train`.')));
    more.textContent = list.has_more ? 'Showing the newest 100 jobs.' : '';
    if (jobs.every(j => TERMINAL.includes(j.status))) return;
    await sleep(5000, signal);
    while (document.hidden) await sleep(1000, signal);
  }
}

function row(j) {
  const p = j.progress || {};
  return h('tr', { 'data-job': j.id },
    h('td', {}, h('a', { href: `#/jobs/${enc(j.id)}`, class: 'mono' }, j.id)),
    h('td', {}, badge(j.status)),
    h('td', {}, j.model),
    h('td', { class: 'num' }, p.total_steps ? `${p.step}/${p.total_steps}` : ''),
    h('td', {}, p.total_steps ? progressBar(p.step, p.total_steps) : ''),
    h('td', { class: 'num' }, j.status === 'running' ? number(p.tokens_per_second) : ''),
    h('td', { class: 'num' }, j.status === 'running' ? duration(p.eta_seconds) : ''),
    h('td', {}, time(j.created_at)),
    h('td', { class: 'mono' }, j.fine_tuned_model || ''));
}

export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); reject(new DOMException('aborted', 'AbortError')); }, { once: true });
  });
}

// Datasets (uploaded files): status, example and token counts, the line-numbered errors of a
// failed upload, and the first example rendered as a job's trainer prepared it, with the trained
// tokens highlighted (from that job's sft.data.prepared event).

import { api, enc } from './api.js';
import { h, replace, badge, number, time, notice } from './dom.js';
import { renderPrepared } from './job.js';

export async function datasetsPage(main, signal) {
  const body = h('tbody');
  replace(main, h('h1', {}, 'Datasets'), h('div', { class: 'card' }, h('table', { id: 'datasets' },
    h('thead', {}, h('tr', {}, ...['File', 'Name', 'Status', 'Examples', 'Tokens', 'Bytes', 'Errors', 'Uploaded']
      .map((t, i) => h('th', { class: i >= 3 && i <= 6 ? 'num' : null }, t)))),
    body)));
  const { data } = await api('/learning/files?limit=100', { signal });
  if (!data?.length) { replace(body, h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'No datasets yet. Upload one with `anneal files upload PATH`.'))); return; }
  replace(body, ...data.map(f => h('tr', { 'data-file': f.id },
    h('td', {}, h('a', { href: `#/datasets/${enc(f.id)}`, class: 'mono' }, f.id)),
    h('td', {}, f.filename),
    h('td', {}, badge(f.status)),
    h('td', { class: 'num' }, number(f.num_examples)),
    h('td', { class: 'num' }, number(f.num_tokens)),
    h('td', { class: 'num' }, number(f.bytes)),
    h('td', { class: 'num' }, f.total_errors ? number(f.total_errors) : (f.errors?.length ? f.errors.length : '')),
    h('td', {}, time(f.created_at)))));
}

export async function datasetPage(main, id, signal) {
  const f = await api(`/learning/files/${enc(id)}`, { signal });
  const errors = f.errors || [];
  const total = f.total_errors ?? errors.length;
  const example = h('div', { id: 'prepared' }, h('p', { class: 'muted' }, 'Looking for a job that trained on this file…'));
  replace(main,
    h('h1', {}, h('span', { class: 'mono' }, f.id), badge(f.status)),
    h('div', { class: 'card' }, h('dl', { class: 'kv' },
      ...[['File name', f.filename], ['Purpose', f.purpose], ['Examples', number(f.num_examples)], ['Tokens', number(f.num_tokens)],
        ['Bytes', number(f.bytes)], ['sha256', h('code', {}, f.sha256)], ['Uploaded', time(f.created_at)]]
        .filter(([, v]) => v !== '' && v !== undefined).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]))),
    errors.length ? h('div', { class: 'card' },
      h('h2', {}, `Errors (${total > errors.length ? `first ${errors.length} of ${total}` : total})`),
      h('ul', { class: 'errors mono', id: 'file-errors' }, ...errors.map(e => h('li', {},
        e.line ? `Line ${e.line}: ` : '', e.field ? `${e.field}: ` : '', e.message)))) : null,
    f.status === 'processing' ? notice('Still being validated; reload in a moment.') : null,
    h('div', { class: 'card' }, h('h2', {}, 'Rendered example'), example));

  if (f.status !== 'ready') { replace(example, h('p', { class: 'muted' }, 'Only a ready file is trained on.')); return; }
  const { jobs } = await api('/learning/jobs?limit=100', { signal });
  for (const j of (jobs || []).filter(j => j.training_file_id === id)) {
    const { events } = await api(`/learning/jobs/${enc(j.id)}/events?since_seq=0&limit=50`, { signal });
    const prepared = (events || []).find(e => e.type === 'sft.data.prepared');
    if (!prepared) continue;
    renderPrepared(example, prepared);
    example.prepend(h('p', { class: 'muted' }, 'As prepared by job ', h('a', { href: `#/jobs/${enc(j.id)}`, class: 'mono' }, j.id), ':'));
    return;
  }
  replace(example, h('p', { class: 'muted' }, 'No job has prepared this file yet; the rendered example appears once one has started training on it.'));
}

// Models: the server's base models (GET /api/models) and this organisation's fine-tuned models
// (GET /api/learning/models), each linked to the job that made it and to a chat page.

import { api, enc } from './api.js';
import { h, replace, badge, time, copyButton } from './dom.js';

export async function modelsPage(main, signal) {
  const [base, tuned] = await Promise.all([api('/models', { signal }), api('/learning/models', { signal })]);
  const ft = tuned.data || [];
  replace(main,
    h('h1', {}, 'Models'),
    h('div', { class: 'card' }, h('h2', {}, 'Fine-tuned'),
      ft.length === 0 ? h('p', { class: 'muted' }, 'None yet: a job that succeeds adds its model here.') :
        h('table', { id: 'fine-tuned-models' },
          h('thead', {}, h('tr', {}, ...['Model', 'Base', 'Job', 'Status', 'Created', ''].map(t => h('th', {}, t)))),
          h('tbody', {}, ...ft.map(m => h('tr', {},
            h('td', {}, h('span', { class: 'ftm' }, h('code', {}, m.id), copyButton(m.id))),
            h('td', {}, m.base_model),
            h('td', {}, h('a', { href: `#/jobs/${enc(m.job_id)}`, class: 'mono' }, m.job_id)),
            h('td', {}, badge(m.status)),
            h('td', {}, time(m.created_at)),
            h('td', {}, h('a', { href: `#/chat/${enc(m.id)}`, 'data-chat': m.id }, 'Chat'))))))),
    h('div', { class: 'card' }, h('h2', {}, 'Base models'),
      h('table', { id: 'base-models' },
        h('thead', {}, h('tr', {}, ...['Model', 'Family', 'Parameters', 'Context', 'Vision', 'Precision', 'Training', 'Trainable', ''].map(t => h('th', {}, t)))),
        h('tbody', {}, ...(base.data || []).map(m => h('tr', {},
          h('td', { class: 'mono' }, m.id),
          h('td', {}, m.family),
          h('td', {}, parameters(m.parameters)),
          h('td', {}, m.context_length?.toLocaleString('en-US') ?? ''),
          h('td', {}, m.supports_vision ? 'yes' : ''),
          h('td', {}, m.precision),
          h('td', {}, (m.training_modes || []).join(', ')),
          h('td', {}, m.trainable === false ? h('span', { class: 'muted', title: m.trainable_note || '' }, `no${m.trainable_note ? `: ${m.trainable_note}` : ''}`) : 'yes'),
          h('td', {}, h('a', { href: `#/chat/${enc(m.id)}`, 'data-chat': m.id }, 'Chat'))))))));
}

/** `parameters` is in billions (0.6 → "0.6B"; the tiny test model's 0.0008 → "0.8M"). */
function parameters(billions) {
  if (typeof billions !== 'number') return '';
  return billions >= 1 ? `${Number(billions.toFixed(1))}B` : `${Number((billions * 1000).toPrecision(3))}M`;
}

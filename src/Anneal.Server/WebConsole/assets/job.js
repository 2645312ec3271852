// One job: summary and actions, live loss / validation-loss, learning-rate and grad-norm curves,
// events streaming over the SSE endpoint, the prepared-data example, checkpoints, effective
// config and the trainer's log.
// Load on the API while the job runs: one event stream, and after events that change numbers at
// most one job read and one incremental metrics read (after_step) every 2 s — no more than the
// CLI's follower, which reads the job and its events every poll interval.

import { api, enc, streamEvents } from './api.js';
import { h, replace, badge, number, value, duration, time, progressBar, copyButton, notice, TERMINAL } from './dom.js';
import { LineChart } from './chart.js';
import { sleep } from './jobs.js';

const REFRESH_TYPES = new Set(['sft.progress', 'sft.validation.summary', 'sft.running', 'sft.queued', 'sft.paused', 'sft.resumed',
  'sft.completed', 'sft.failed', 'sft.cancelled', 'sft.checkpoint.saved']);
const MAX_EVENT_LINES = 400;

export async function jobPage(main, id, signal) {
  let job = await api(`/learning/jobs/${enc(id)}`, { signal });
  const metrics = new Map();   // name → Map(step → value); a resumed run re-records steps, the latest wins
  let lastStep = null;
  let lastSeq = 0;

  const title = h('h1', {});
  const actions = h('div', { class: 'row', id: 'actions' });
  const alerts = h('div', {});
  const summary = h('dl', { class: 'kv', id: 'summary' });
  const loss = new LineChart('Loss', ['train.loss', 'val.loss'], { wide: true });
  const lr = new LineChart('Learning rate', ['train.lr']);
  const grad = new LineChart('Grad norm', ['train.grad_norm']);
  const eventsBox = h('div', { class: 'events mono', id: 'events' });
  const streamState = h('span', { class: 'muted', id: 'stream-state' });
  const prepared = h('div', { id: 'prepared' }, h('p', { class: 'muted' }, 'Shown once the trainer has prepared the data (sft.data.prepared).'));
  const checkpoints = h('div', { id: 'checkpoints' });
  const logBox = h('pre', { class: 'block', id: 'log', hidden: true });
  const logButton = h('button', { type: 'button', id: 'show-log' }, 'Show log');
  logButton.addEventListener('click', () => loadLog().catch(e => alerts.append(notice(`Log: ${e.message}`))));

  replace(main,
    title, alerts,
    h('div', { class: 'card' }, actions, h('div', { class: 'row' }, summary)),
    h('div', { class: 'grid charts' }, loss.el, lr.el, grad.el),
    h('div', { class: 'grid' },
      h('div', { class: 'card' }, h('h2', {}, 'Events ', streamState), eventsBox),
      h('div', { class: 'card' }, h('h2', {}, 'Training data'), prepared)),
    h('div', { class: 'card' }, h('h2', {}, 'Checkpoints'), checkpoints),
    h('div', { class: 'grid' },
      h('div', { class: 'card' }, h('h2', {}, 'Hyperparameters'), h('pre', { class: 'block', id: 'hyperparameters' }, JSON.stringify(job.hyperparameters ?? {}, null, 2))),
      h('div', { class: 'card' }, h('h2', {}, 'Effective config'), h('pre', { class: 'block', id: 'effective-config' },
        JSON.stringify(job.metadata?.effective_config ?? job.metadata ?? {}, null, 2)))),
    h('div', { class: 'card' }, h('h2', {}, 'Trainer log ', logButton), logBox));

  function renderJob() {
    replace(title, h('span', { class: 'mono' }, job.id), badge(job.status));
    const p = job.progress || {};
    const running = job.status === 'running';
    const rows = [
      ['Model', job.model],
      ['Progress', p.total_steps ? h('span', { class: 'row' }, `step ${p.step}/${p.total_steps}`, progressBar(p.step, p.total_steps),
        p.epoch !== undefined ? `epoch ${number(p.epoch, 2)}` : '') : ''],
      ['Tokens/s', running ? number(p.tokens_per_second) : ''],
      ['ETA', running ? duration(p.eta_seconds) : ''],
      ['Trained tokens', number(job.trained_tokens)],
      ['Training file', job.training_file_id ? h('a', { href: `#/datasets/${enc(job.training_file_id)}`, class: 'mono' }, job.training_file_id) : ''],
      ['Validation file', job.validation_file_id ? h('a', { href: `#/datasets/${enc(job.validation_file_id)}`, class: 'mono' }, job.validation_file_id) : ''],
      ['Created', time(job.created_at)], ['Started', time(job.started_at)], ['Finished', time(job.finished_at)],
      ['Fine-tuned model', job.fine_tuned_model
        ? h('span', { class: 'ftm' }, h('code', { id: 'fine-tuned-model' }, job.fine_tuned_model), copyButton(job.fine_tuned_model),
          h('a', { href: `#/chat/${enc(job.fine_tuned_model)}`, id: 'chat-link' }, 'Chat'))
        : ''],
      ['Error', job.error ? h('span', { class: 'error', id: 'job-error' }, `${job.error.code}: ${job.error.message}`) : ''],
    ];
    replace(summary, ...rows.filter(([, v]) => v !== '' && v !== null && v !== undefined).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
    renderActions();
  }

  function renderActions() {
    const s = job.status;
    replace(actions,
      action('Cancel', 'cancel', ['created', 'queued', 'running', 'paused'].includes(s), 'danger', true),
      action('Pause', 'pause', s === 'running'),
      action('Resume', 'resume', s === 'paused'));
  }

  /** A job action button; `confirm` asks for a second click within 4 s (no blocking dialog). */
  function action(label, verb, enabled, cls, confirm = false) {
    const button = h('button', { type: 'button', id: `${verb}-job`, class: cls, disabled: !enabled }, label);
    let armed = false;
    button.addEventListener('click', async () => {
      if (confirm && !armed) {
        armed = true;
        button.textContent = `Really ${verb}?`;
        setTimeout(() => { armed = false; button.textContent = label; }, 4000);
        return;
      }
      for (const b of actions.querySelectorAll('button')) b.disabled = true;
      button.textContent = `${label}…`;
      try {
        job = await api(`/learning/jobs/${enc(id)}/${verb}`, { method: 'POST' });
      } catch (e) {
        alerts.append(notice(`${label}: ${e.message}`));
      }
      renderJob();
    });
    return button;
  }

  async function loadMetrics() {
    // after_step is exclusive; asking from the step before the last one seen also picks up a
    // validation loss recorded at that step after its training loss was read.
    const after = lastStep === null ? '' : `?after_step=${Math.max(-1, lastStep - 1)}`;
    const { points } = await api(`/learning/jobs/${enc(id)}/metrics${after}`, { signal });
    for (const pt of points || []) {
      if (!metrics.has(pt.name)) metrics.set(pt.name, new Map());
      metrics.get(pt.name).set(pt.step, pt.value);
      if (lastStep === null || pt.step > lastStep) lastStep = pt.step;
    }
    const series = new Map([...metrics].map(([name, steps]) =>
      [name, [...steps].map(([x, y]) => ({ x, y })).sort((a, b) => a.x - b.x)]));
    loss.draw(series); lr.draw(series); grad.draw(series);
  }

  async function loadCheckpoints() {
    const list = await api(`/learning/jobs/${enc(id)}/checkpoints`, { signal });
    const data = list.data || [];
    if (data.length === 0) { replace(checkpoints, h('p', { class: 'muted' }, 'No checkpoints yet.')); return; }
    replace(checkpoints, h('table', {},
      h('thead', {}, h('tr', {}, h('th', { class: 'num' }, 'Step'), h('th', {}, 'Id (usable as a model)'), h('th', {}, 'Metrics'), h('th', {}, 'Saved'))),
      h('tbody', {}, ...data.map(c => h('tr', {},
        h('td', { class: 'num' }, c.step),
        h('td', {}, h('span', { class: 'ftm' }, h('code', {}, c.id), copyButton(c.id))),
        h('td', { class: 'mono' }, Object.entries(c.metrics || {}).map(([k, v]) => `${k} ${typeof v === 'number' ? value(v) : v}`).join(' · ')),
        h('td', {}, time(c.created_at)))))));
  }

  async function loadLog() {
    logBox.textContent = await api(`/learning/jobs/${enc(id)}/logs`, { text: true, signal });
    logBox.hidden = false;
    logButton.textContent = 'Refresh log';
    logBox.scrollTop = logBox.scrollHeight;
  }

  function addEvent(e) {
    const atBottom = eventsBox.scrollTop + eventsBox.clientHeight >= eventsBox.scrollHeight - 4;
    eventsBox.append(h('div', { class: e.level, 'data-seq': e.seq, 'data-type': e.type },
      `${time(e.created_at).slice(11)} ${e.type} ${eventText(e)}`));
    while (eventsBox.childElementCount > MAX_EVENT_LINES) eventsBox.firstElementChild.remove();
    if (atBottom) eventsBox.scrollTop = eventsBox.scrollHeight;
    if (e.type === 'sft.data.prepared' && e.data?.example) renderPrepared(prepared, e);
  }

  renderJob();
  await Promise.all([loadMetrics(), loadCheckpoints()]);

  if (TERMINAL.includes(job.status)) {
    // Finished: read the events once, page by page; nothing to follow.
    for (;;) {
      const { events } = await api(`/learning/jobs/${enc(id)}/events?since_seq=${lastSeq}&limit=1000`, { signal });
      for (const e of events || []) { addEvent(e); lastSeq = e.seq; }
      if (!events || events.length < 1000) break;
    }
    streamState.textContent = '(finished)';
    return;
  }

  // Live: numbers are re-read after events that change them, at most every 2 s.
  let dirty = false, checkpointsDirty = false, wake = null;
  const request = () => { dirty = true; wake?.(); };
  const refresher = (async () => {
    while (!signal.aborted) {
      if (!dirty) await new Promise(resolve => { wake = resolve; signal.addEventListener('abort', resolve, { once: true }); });
      wake = null;
      if (signal.aborted) return;
      dirty = false;
      try {
        job = await api(`/learning/jobs/${enc(id)}`, { signal });
        renderJob();
        await loadMetrics();
        if (checkpointsDirty) { checkpointsDirty = false; await loadCheckpoints(); }
      } catch (e) {
        if (e.name === 'AbortError') return;
      }
      await sleep(2000, signal).catch(() => {});
    }
  })();

  while (!signal.aborted) {
    try {
      streamState.textContent = '(live)';
      lastSeq = await streamEvents(id, lastSeq, e => {
        addEvent(e);
        if (e.type === 'sft.checkpoint.saved') checkpointsDirty = true;
        if (REFRESH_TYPES.has(e.type)) request();
      }, signal);
      streamState.textContent = '(finished)';
      // The stream ends with the job: one last read of everything that may have changed.
      job = await api(`/learning/jobs/${enc(id)}`, { signal });
      renderJob();
      await Promise.all([loadMetrics(), loadCheckpoints()]);
      break;
    } catch (e) {
      if (e.name === 'AbortError' || signal.aborted) return;
      if (e.status === 404 || e.status === 401) throw e;
      streamState.textContent = '(reconnecting…)';
      await sleep(2000, signal).catch(() => {});
    }
  }
  await Promise.race([refresher, Promise.resolve()]);
}

function eventText(e) {
  const d = e.data || {};
  if (e.type === 'sft.progress') {
    const parts = [`step ${d.step ?? '?'}/${d.total_steps ?? '?'}`];
    if (d.loss !== undefined) parts.push(`loss ${value(d.loss)}`);
    if (d.lr !== undefined) parts.push(`lr ${value(d.lr)}`);
    if (d.tokens_per_second !== undefined) parts.push(`${number(d.tokens_per_second)} tok/s`);
    if (d.eta_seconds !== undefined) parts.push(`ETA ${duration(d.eta_seconds)}`);
    return parts.join(' · ');
  }
  if (e.type === 'sft.failed' && d.error) return `${e.message} (${d.error.code}: ${d.error.message})`;
  return e.message;
}

/**
 * The first training example as the trainer saw it (sft.data.prepared: data.example.mask_preview,
 * trained spans inside [[ ]]), with the trained tokens highlighted.
 */
export function renderPrepared(box, e) {
  const d = e.data || {};
  const facts = [
    ['Examples', d.total_examples !== undefined ? `${d.examples} of ${d.total_examples} kept` : d.examples],
    ['Tokens', d.tokens !== undefined ? `${number(d.tokens)} (${number(d.trained_tokens)} trained)` : ''],
    ['Truncated / dropped', d.truncated !== undefined ? `${d.truncated} / ${d.dropped}` : ''],
    ['Sequence length', d.sequence_length],
  ].filter(([, v]) => v !== undefined && v !== '');
  replace(box,
    h('p', { class: e.level === 'warning' ? 'error' : 'muted' }, e.message),
    h('dl', { class: 'kv' }, ...facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    h('p', { class: 'muted' }, 'First example; the highlighted tokens are the ones the loss is computed on.'),
    maskedExample(d.example?.mask_preview ?? d.example?.text ?? ''));
}

export function maskedExample(preview) {
  const pre = h('pre', { class: 'example', 'data-example': '' });
  const pattern = /\[\[([\s\S]*?)\]\]/g;
  let at = 0, m;
  while ((m = pattern.exec(preview)) !== null) {
    pre.append(preview.slice(at, m.index), h('mark', {}, m[1]));
    at = m.index + m[0].length;
  }
  pre.append(preview.slice(at));
  return pre;
}

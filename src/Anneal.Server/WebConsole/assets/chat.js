// Chat with a model (#/chat/MODEL): deploy it into the server's inference process (POST
// /api/learning/deployments, status loading → ready), and send messages to this server's
// OpenAI-compatible /v1/chat/completions with the same key. A model also answers without a
// deployment (loaded on first use); deploying loads it ahead and says when it is ready.

import { api, enc } from './api.js';
import { h, replace, badge, copyButton, notice } from './dom.js';
import { sleep } from './jobs.js';

export async function chatPage(main, model, signal) {
  const deployment = h('div', { id: 'deployment' });
  const log = h('div', { class: 'chat-log', id: 'chat-log' });
  const input = h('textarea', { id: 'chat-input', rows: 3, placeholder: 'Message', 'aria-label': 'Message' });
  const maxTokens = h('input', { type: 'number', id: 'max-tokens', min: 1, max: 4096, value: 64, 'aria-label': 'Max new tokens' });
  const send = h('button', { type: 'submit', class: 'primary', id: 'chat-send' }, 'Send');
  const alerts = h('div', {});
  const messages = [];
  const form = h('form', { class: 'chat-form' }, input, h('div', { class: 'row' }, h('label', { for: 'max-tokens' }, 'Max new tokens'), maxTokens, send));
  replace(main,
    h('h1', {}, 'Chat with ', h('code', {}, model)),
    alerts,
    h('div', { class: 'card' }, h('h2', {}, 'Deployment'), deployment),
    h('div', { class: 'card' }, h('h2', {}, 'Chat'), log, form));

  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    messages.push({ role: 'user', content: text });
    log.append(h('div', { class: 'msg user' }, text));
    input.value = '';
    send.disabled = true;
    const pending = h('div', { class: 'msg assistant pending' }, '…');
    log.append(pending);
    try {
      const answer = await api('/chat/completions', {
        root: '/v1', method: 'POST', signal,
        body: { model, messages, max_tokens: Number(maxTokens.value) || 64 },
      });
      const content = answer.choices?.[0]?.message?.content ?? '';
      messages.push({ role: 'assistant', content });
      replace(pending, content || '(empty answer)');
      pending.classList.remove('pending');
    } catch (e) {
      if (e.name === 'AbortError') return;
      messages.pop();
      pending.remove();
      alerts.append(notice(`Chat: ${e.message}`));
    } finally {
      send.disabled = false;
    }
  });

  // The deployment of this model, followed while it loads.
  let current = ((await api('/learning/deployments', { signal })).data || []).find(d => d.model === model && d.status !== 'stopped');
  for (;;) {
    renderDeployment();
    if (current?.status !== 'loading') return;
    await sleep(1000, signal);
    current = await api(`/learning/deployments/${enc(current.id)}`, { signal });
  }

  function renderDeployment() {
    if (!current || current.status === 'stopped') {
      const deploy = h('button', { type: 'button', id: 'deploy', class: 'primary' }, 'Deploy');
      deploy.addEventListener('click', async () => {
        deploy.disabled = true;
        try {
          current = await api('/learning/deployments', { method: 'POST', body: { model }, signal });
          while (current.status === 'loading') {
            renderDeployment();
            await sleep(1000, signal);
            current = await api(`/learning/deployments/${enc(current.id)}`, { signal });
          }
        } catch (e) {
          if (e.name === 'AbortError') return;
          alerts.append(notice(`Deploy: ${e.message}`));
        }
        renderDeployment();
      });
      replace(deployment, h('p', { class: 'muted' }, 'Not deployed: the first message loads the model; deploying loads it now.'), deploy);
      return;
    }
    const stop = h('button', { type: 'button', id: 'undeploy', disabled: current.status === 'loading' }, 'Stop');
    stop.addEventListener('click', async () => {
      stop.disabled = true;
      try { current = await api(`/learning/deployments/${enc(current.id)}`, { method: 'DELETE', signal }); }
      catch (e) { if (e.name !== 'AbortError') alerts.append(notice(`Stop: ${e.message}`)); }
      renderDeployment();
    });
    replace(deployment, h('dl', { class: 'kv' },
      h('dt', {}, 'Status'), h('dd', {}, badge(current.status)),
      h('dt', {}, 'Device'), h('dd', {}, current.device),
      h('dt', {}, 'Endpoint'), h('dd', {}, h('span', { class: 'ftm' }, h('code', {}, current.endpoint), copyButton(current.endpoint))),
      current.error ? h('dt', {}, 'Error') : null, current.error ? h('dd', { class: 'error' }, current.error.message) : null),
      h('div', { class: 'row' }, stop));
  }
}

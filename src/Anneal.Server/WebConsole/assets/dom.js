// Small DOM helpers. Text always goes in as text nodes (never innerHTML), so names, messages and
// dataset contents from the server cannot inject markup.

/** h('td', { class: 'num' }, 'text', childNode, ...) — null/false children are skipped. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const TERMINAL = ['succeeded', 'failed', 'cancelled'];

export function badge(status) {
  return h('span', { class: `badge ${status}`, 'data-status': status }, status);
}

export function number(v, digits = 0) {
  if (v === null || v === undefined || Number.isNaN(v)) return '';
  return Number(v).toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** 4 significant digits, exponent form for small values such as learning rates. */
export function value(v) {
  if (v === null || v === undefined) return '';
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(2) : Number(v.toPrecision(4)).toString();
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds) || seconds < 0) return '';
  const s = Math.round(seconds);
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  return hh > 0 ? `${hh}:${String(mm).padStart(2, '0')}:${String(ss).padStart(2, '0')}` : `${mm}:${String(ss).padStart(2, '0')}`;
}

export function time(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return `${d.toISOString().slice(0, 10)} ${d.toISOString().slice(11, 19)}Z`;
}

export function progressBar(step, total) {
  const pct = total > 0 ? Math.min(100, (100 * step) / total) : 0;
  const fill = h('span');
  fill.style.width = `${pct}%`;
  return h('div', { class: 'bar', title: `${step}/${total}` }, fill);
}

/** A button that copies `text`; falls back to a selection copy where the Clipboard API is not allowed (plain http). */
export function copyButton(text, label = 'Copy') {
  const button = h('button', { type: 'button', 'data-copy': text }, label);
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const area = h('textarea', { readonly: true }, text);
      document.body.append(area);
      area.select();
      document.execCommand('copy');
      area.remove();
    }
    button.textContent = 'Copied';
    setTimeout(() => { button.textContent = label; }, 1500);
  });
  return button;
}

export function notice(message) {
  return h('div', { class: 'notice', role: 'alert' }, message);
}

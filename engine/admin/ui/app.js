// The pipeline console: a hash router over the admin API.
//   #/pipelines            every pipeline
//   #/pipelines/NAME       one pipeline: graph, checkpoints, runs, sinks, tail
//   #/deliveries?filters   the outbox
import { getToken, setToken, clearToken, onUnauthorized } from './api.js';
import { h } from './dom.js';
import { pipelinesPage } from './pipelines.js';
import { pipelinePage } from './pipeline.js';
import { deliveriesPage } from './deliveries.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const signOut = document.getElementById('sign-out');
let current = null; // the AbortController of the page shown

function parse() {
  const raw = location.hash.replace(/^#/, '') || '/pipelines';
  const i = raw.indexOf('?');
  const path = i < 0 ? raw : raw.slice(0, i);
  const query = new URLSearchParams(i < 0 ? '' : raw.slice(i + 1));
  let parts;
  try { parts = path.split('/').filter(Boolean).map(decodeURIComponent); } catch { parts = []; }
  return { parts, query };
}

function leave() {
  current?.abort();
  current = null;
}

function login(message) {
  leave();
  nav.hidden = true;
  signOut.hidden = true;
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'current-password', required: true, testid: 'token-input' });
  const form = h('form', { class: 'card login', testid: 'token-form' },
    h('h1', {}, 'Admin token'),
    message ? h('p', { class: 'error', testid: 'token-message', role: 'alert' }, message) : null,
    h('p', { class: 'muted' }, 'The token that pipeline serve was given (PIPELINE_ADMIN_TOKEN). It is kept in this tab only.'),
    h('label', { for: 'token' }, 'Token'), ' ', input, ' ',
    h('button', { type: 'submit', testid: 'token-submit' }, 'Sign in'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = input.value.trim();
    if (!t) return;
    setToken(t);
    route();
  });
  main.replaceChildren(form);
  input.focus();
}

function route() {
  leave();
  if (!getToken()) return login('');
  nav.hidden = false;
  signOut.hidden = false;
  const { parts, query } = parse();
  const ctl = new AbortController();
  current = ctl;
  main.replaceChildren();
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.page === parts[0]);
  if (parts[0] === 'pipelines' && parts.length === 1) {
    document.title = 'Pipelines · pipeline';
    pipelinesPage(main, ctl.signal);
  } else if (parts[0] === 'pipelines' && parts.length === 2) {
    document.title = `${parts[1]} · pipeline`;
    pipelinePage(main, parts[1], ctl.signal);
  } else if (parts[0] === 'deliveries' && parts.length === 1) {
    document.title = 'Deliveries · pipeline';
    deliveriesPage(main, query, ctl.signal);
  } else {
    main.append(h('p', { testid: 'not-found' }, 'No such page. ', h('a', { href: '#/pipelines' }, 'Pipelines')));
  }
}

onUnauthorized((message) => login(message));
signOut.addEventListener('click', () => { clearToken(); login('Signed out.'); });
window.addEventListener('hashchange', route);
route();

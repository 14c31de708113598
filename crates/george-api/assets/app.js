/*
 * George web dashboard: app.js
 *
 * This file owns the whole client side of the dashboard (with index.html and
 * app.css next to it): sign-in with a bearer token kept in localStorage
 * `george.token`, hash routing, the views (overview, jobs, job detail with its
 * step graph and live logs, agents, budgets with burn-down charts, triggers),
 * the single WebSocket to `/api/v1/watch` whose events trigger debounced
 * re-fetches of the current view, and the operator actions.
 *
 * The server sends a strict Content-Security-Policy, so: every element is
 * built with h()/svgEl() and textContent (never innerHTML: job params, logs,
 * comments... are user-provided), there are no inline handlers or style
 * attributes (element.style.x from JS is fine), and the token never goes into
 * a URL (the WebSocket carries it as a subprotocol).
 */
'use strict';

(() => {
  // ---------------------------------------------------------------- constants

  const TOKEN_KEY = 'george.token';
  const JOB_STATUSES = ['pending', 'in_progress', 'blocked', 'paused', 'completed', 'failed', 'aborted'];
  const FINAL_STATUSES = new Set(['completed', 'failed', 'aborted']);
  const STATUS_ALIASES = { running: 'in_progress', active: 'in_progress', done: 'completed' };
  const PRIORITIES = ['P0', 'P1', 'P2', 'P3', 'BACKGROUND'];
  // What POST /api/v1/jobs/{id}/override accepts (george-core api.rs OverrideRequest).
  const JOB_OVERRIDES = ['pending', 'completed', 'failed'];
  const STEP_OVERRIDES = ['pending', 'completed', 'skipped', 'failed'];
  const ACTION_REASON = 'from the dashboard';
  const LOG_CAP = 1000000; // characters kept in the log view
  const ARM_MS = 5000; // how long a "Really ...?" button stays armed

  // ---------------------------------------------------------------- DOM helpers

  const SVG_NS = 'http://www.w3.org/2000/svg';
  const PROPS = new Set(['value', 'checked', 'disabled', 'hidden']);

  /** Sets attributes (`on*` functions become listeners) and appends children. */
  function build(el, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'style' || k === 'innerHTML' || k === 'outerHTML') throw new Error(`h(): \`${k}\` is not allowed`);
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (PROPS.has(k) && !(el instanceof SVGElement)) el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    return append(el, children);
  }

  /** Appends children: nodes as they are, anything else as text. */
  function append(el, children) {
    for (const c of [children].flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
  const svgEl = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);
  const fill = (el, ...children) => {
    el.replaceChildren();
    return append(el, children);
  };
  const $ = (sel, root = document) => root.querySelector(sel);
  const enc = encodeURIComponent;

  // ---------------------------------------------------------------- formatting

  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.toLocaleString(undefined, {
      year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
    });
  }

  /** "3m ago", "in 2h". */
  function ago(iso) {
    const t = Date.parse(iso);
    if (!iso || Number.isNaN(t)) return iso ? String(iso) : '—';
    const s = Math.round((t - Date.now()) / 1000);
    const a = Math.abs(s);
    if (a < 5) return 'just now';
    const txt = a < 60 ? `${a}s` : a < 3600 ? `${Math.round(a / 60)}m` : a < 86400 ? `${Math.round(a / 3600)}h` : `${Math.round(a / 86400)}d`;
    return s < 0 ? `${txt} ago` : `in ${txt}`;
  }

  /** A <time> element: relative text, absolute time as tooltip (or the reverse). */
  const timeEl = (iso, relative = true) =>
    iso ? h('time', { datetime: iso, title: relative ? fmtTime(iso) : ago(iso) }, relative ? ago(iso) : fmtTime(iso)) : '—';

  /** 850 → "850ms", 12300 → "12.3s", 245000 → "4m05s". */
  function fmtDuration(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
    const m = Math.max(0, Math.round(ms));
    if (m < 1000) return `${m}ms`;
    if (m < 60000) return `${(m / 1000).toFixed(1)}s`;
    if (m < 3600000) return `${Math.floor(m / 60000)}m${String(Math.floor(m / 1000) % 60).padStart(2, '0')}s`;
    return `${Math.floor(m / 3600000)}h${String(Math.floor(m / 60000) % 60).padStart(2, '0')}m`;
  }

  /** How long a step took, or has been running. */
  const stepDuration = (s) => (s.duration_ms !== undefined && s.duration_ms !== null ? fmtDuration(s.duration_ms)
    : s.started_at ? `${fmtDuration(Date.now() - Date.parse(s.started_at))} so far` : '—');

  const fmtInt = (n) => (n === null || n === undefined ? '—' : Number(n).toLocaleString());

  /** 1234567 → "1.2M". */
  function compact(n) {
    if (n === null || n === undefined) return '—';
    const a = Math.abs(n);
    for (const [div, unit] of [[1e9, 'G'], [1e6, 'M'], [1e3, 'k']]) {
      if (a >= div) return `${(n / div).toFixed(a >= div * 10 ? 0 : 1)}${unit}`;
    }
    return String(Math.round(n));
  }

  const truncate = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
  const show = (x) => (typeof x === 'string' ? x : JSON.stringify(x));
  const orDash = (x) => (x === null || x === undefined || x === '' ? '—' : x);

  // ---------------------------------------------------------------- small components

  /** A status word with its colour; the text is exactly the status. */
  const statusBadge = (status, attrs = {}) => h('span', { class: 'status', 'data-status': status, ...attrs }, status);

  const badge = (text, kind) => h('span', { class: 'badge', 'data-kind': kind || 'neutral' }, text);

  /** A table in a horizontally scrolling box. `rows` are <tr>s. */
  function table(attrs, headers, rows, empty = 'Nothing here yet.') {
    const body = rows.length ? rows : [h('tr', { class: 'empty' }, h('td', { colspan: headers.length }, empty))];
    return h('div', { class: 'table-scroll' },
      h('table', attrs,
        h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, body)));
  }

  const card = (title, ...children) => h('section', { class: 'card' }, title ? h('h2', {}, title) : null, children);
  const muted = (text) => h('p', { class: 'muted' }, text);
  const jobLink = (id) => h('a', { class: 'job-link', href: `#/jobs/${enc(id)}` }, id);

  /** A horizontal bar: `value` of `max`, coloured by `alert`. */
  function bar(value, max, alert) {
    const fillEl = h('div', { class: 'bar-fill' });
    fillEl.style.width = `${Math.max(0, Math.min(100, max > 0 ? (value / max) * 100 : 0))}%`;
    return h('div', { class: 'bar', 'data-alert': alert || 'none' }, fillEl);
  }

  /**
   * A button that needs two clicks ("Really abort?"): no confirm() dialogs.
   * `armed` (a Set kept by the view) remembers armed keys across re-renders.
   */
  function twoStep(btn, label, confirmLabel, action, armed = new Set(), key = label) {
    let timer = null;
    const disarm = () => {
      clearTimeout(timer);
      armed.delete(key);
      btn.removeAttribute('data-armed');
      btn.textContent = label;
    };
    const arm = () => {
      clearTimeout(timer);
      armed.add(key);
      btn.setAttribute('data-armed', 'true');
      btn.textContent = confirmLabel;
      timer = setTimeout(disarm, ARM_MS);
    };
    if (armed.has(key)) arm();
    btn.addEventListener('click', () => {
      if (!btn.getAttribute('data-armed')) return arm();
      disarm();
      return action();
    });
    return btn;
  }

  // ---------------------------------------------------------------- state

  const S = {
    token: null,
    me: null, // {subject, role}
    lastSeq: null, // largest event seq seen on the WebSocket
    ws: null,
    wsGen: 0, // bumped to orphan an old socket's handlers
    backoff: 1000,
    reconnectTimer: null,
    view: null, // the current view object
    refreshTimer: null,
    flashTimer: null,
  };

  const canOperate = () => !!S.me && (S.me.role === 'operator' || S.me.role === 'admin');

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** Builds an ApiError from a failed response (body `{"error": {code, message, details?}}`). */
  async function errorFrom(res) {
    let code = `http_${res.status}`;
    let message = `${res.status} ${res.statusText || 'error'}`;
    try {
      const body = await res.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
        const details = body.error.details || [];
        if (details.length > 1) message += ` (${details.join('; ')})`;
      }
    } catch (_) { /* not JSON */ }
    return new ApiError(res.status, code, message);
  }

  /** Calls the API with the session's token. A 401 signs out. */
  async function api(path, opts = {}) {
    const headers = { Authorization: `Bearer ${S.token}`, Accept: opts.accept || 'application/json' };
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    let res;
    try {
      res = await fetch(path, { method: opts.method || 'GET', headers, body, signal: opts.signal, cache: 'no-store' });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'network', `Cannot reach the George server (${e.message}).`);
    }
    if (!res.ok) {
      const err = await errorFrom(res);
      if (res.status === 401 && S.token) signOut(`Signed out: ${err.message}`);
      throw err;
    }
    if (opts.raw) return res;
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }

  const post = (path, body) => api(path, { method: 'POST', body });
  const del = (path) => api(path, { method: 'DELETE' });

  /** GET /api/v1/whoami with a given token (sign-in). */
  async function whoami(token) {
    let res;
    try {
      res = await fetch('/api/v1/whoami', { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, 'network', `Cannot reach the George server (${e.message}).`);
    }
    if (!res.ok) throw await errorFrom(res);
    return res.json();
  }

  // ---------------------------------------------------------------- flash banner

  /** Says something at the top: an error, or (`kind` `done`) what an action did. */
  function flash(message, kind = 'error') {
    $('#flash').textContent = message;
    $('#flash-bar').dataset.kind = kind;
    $('#flash-bar').hidden = false;
    clearTimeout(S.flashTimer);
    S.flashTimer = setTimeout(hideFlash, 15000);
  }

  function hideFlash() {
    clearTimeout(S.flashTimer);
    $('#flash-bar').hidden = true;
    $('#flash').textContent = '';
  }

  /** Shows an error unless it is an abort or a 401 (which already signed out). */
  function reportError(e) {
    if (!e || e.name === 'AbortError' || e.status === 401) return;
    console.error(e);
    flash(e.message || String(e));
  }

  // ---------------------------------------------------------------- session

  function showLogin(message) {
    $('#app').hidden = true;
    $('#login-view').hidden = false;
    $('#login-error').textContent = message || '';
    $('#token-input').focus();
  }

  async function onLogin(ev) {
    ev.preventDefault();
    const input = $('#token-input');
    const button = $('#login-button');
    const token = input.value.trim();
    if (!token) {
      $('#login-error').textContent = 'Paste your API token first.';
      return;
    }
    button.disabled = true;
    $('#login-error').textContent = '';
    try {
      const me = await whoami(token);
      localStorage.setItem(TOKEN_KEY, token);
      input.value = '';
      startSession(token, me);
    } catch (e) {
      $('#login-error').textContent = e.message || 'Sign-in failed.';
    } finally {
      button.disabled = false;
    }
  }

  function startSession(token, me) {
    S.token = token;
    S.me = me;
    $('#whoami').textContent = `${me.subject} (${me.role || 'agent'})`;
    $('#login-view').hidden = true;
    $('#login-error').textContent = '';
    $('#app').hidden = false;
    document.body.setAttribute('data-role', me.role || 'agent');
    connectWs();
    route();
  }

  function signOut(message) {
    localStorage.removeItem(TOKEN_KEY);
    S.token = null;
    S.me = null;
    S.lastSeq = null;
    closeWs();
    leaveView();
    fill($('#view'));
    hideFlash();
    showLogin(message);
  }

  // ---------------------------------------------------------------- live updates

  /** Standard base64 of the UTF-8 bytes, URL-safe alphabet, no padding. */
  function base64url(text) {
    let bin = '';
    for (const b of new TextEncoder().encode(text)) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function setLive(state) {
    const el = $('#live');
    el.setAttribute('data-state', state);
    el.textContent = state === 'open' ? 'live' : 'offline';
  }

  function connectWs() {
    if (!S.token) return;
    const gen = ++S.wsGen;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // First connection: no `since`, the server starts at the end of the log.
    const since = S.lastSeq === null ? '' : `?since=${enc(S.lastSeq)}`;
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/api/v1/watch${since}`, ['george.v1', `george.bearer.${base64url(S.token)}`]);
    } catch (e) {
      console.error(e);
      scheduleReconnect();
      return;
    }
    S.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (gen !== S.wsGen) return;
      opened = true;
      S.backoff = 1000;
      setLive('open');
      requestRefresh(); // catch up on anything between the last fetch and now
    };
    ws.onmessage = (m) => {
      if (gen === S.wsGen) onEvent(m.data);
    };
    ws.onclose = () => {
      if (gen !== S.wsGen) return;
      S.ws = null;
      setLive('closed');
      // A refused upgrade looks like any close: check the token (a 401 signs out).
      if (!opened) api('/api/v1/whoami').catch(() => {});
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (!S.token) return;
    clearTimeout(S.reconnectTimer);
    const delay = S.backoff;
    S.backoff = Math.min(S.backoff * 2, 15000);
    S.reconnectTimer = setTimeout(connectWs, delay);
  }

  function closeWs() {
    S.wsGen += 1;
    clearTimeout(S.reconnectTimer);
    if (S.ws) S.ws.close(1000, 'signed out');
    S.ws = null;
    S.backoff = 1000;
    setLive('closed');
  }

  /** One frame from the watch stream: remember its seq, refresh the view. */
  function onEvent(text) {
    let ev = null;
    try {
      ev = JSON.parse(text);
    } catch (_) { /* not an event: refresh anyway */ }
    if (ev && typeof ev.seq === 'number' && (S.lastSeq === null || ev.seq > S.lastSeq)) S.lastSeq = ev.seq;
    const v = S.view;
    if (v && (!ev || !v.wants || v.wants(ev))) requestRefresh();
  }

  // ---------------------------------------------------------------- refreshing

  /** Refreshes the current view soon, at most once per the view's `throttle` ms. */
  function requestRefresh(delay) {
    if (S.refreshTimer || !S.view) return;
    S.refreshTimer = setTimeout(() => {
      S.refreshTimer = null;
      refreshNow();
    }, delay === undefined ? S.view.throttle || 300 : delay);
  }

  /** Refreshes the current view now (or right after the refresh in flight). */
  async function refreshNow() {
    const v = S.view;
    if (!v) return;
    if (v.refreshing) {
      v.again = true;
      return;
    }
    v.refreshing = true;
    try {
      await v.refresh();
    } catch (e) {
      if (v.alive) reportError(e);
    } finally {
      v.refreshing = false;
      if (v.again && v.alive) {
        v.again = false;
        refreshNow();
      }
    }
  }

  // ---------------------------------------------------------------- routing

  function parseHash() {
    const raw = location.hash.replace(/^#/, '') || '/';
    const qi = raw.indexOf('?');
    const path = qi >= 0 ? raw.slice(0, qi) : raw;
    const query = new URLSearchParams(qi >= 0 ? raw.slice(qi + 1) : '');
    const parts = path.split('/').filter(Boolean).map((p) => {
      try { return decodeURIComponent(p); } catch (_) { return p; }
    });
    return { parts, query };
  }

  const currentQuery = () => parseHash().query;

  /** `#/jobs` + query, keeping commas readable. */
  function hashWith(base, query) {
    const pairs = [...query.entries()].filter(([, v]) => v !== '').map(([k, v]) => `${enc(k)}=${enc(v).replace(/%2C/g, ',')}`);
    return pairs.length ? `${base}?${pairs.join('&')}` : base;
  }

  function leaveView() {
    clearTimeout(S.refreshTimer);
    S.refreshTimer = null;
    if (S.view) {
      S.view.alive = false;
      if (S.view.teardown) S.view.teardown();
    }
    S.view = null;
  }

  /** Shows the view the hash names; the same view with a new query only refreshes. */
  function route() {
    if (!S.token) return;
    const { parts, query } = parseHash();
    let name = 'notfound';
    let arg = '';
    if (!parts.length) name = 'overview';
    else if (parts[0] === 'jobs' && parts.length === 1) name = 'jobs';
    else if (parts[0] === 'jobs') [name, arg] = ['job', parts.slice(1).join('/')];
    else if (['agents', 'budgets', 'triggers'].includes(parts[0]) && parts.length === 1) name = parts[0];
    else if (parts[0] === 'triggers' && parts.length === 2) [name, arg] = ['trigger', parts[1]];
    const key = `${name}:${arg}`;
    const section = name === 'job' ? '#/jobs' : name === 'trigger' ? '#/triggers' : name === 'overview' ? '#/' : `#/${name}`;
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.getAttribute('href') === section) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    if (S.view && S.view.key === key) {
      if (S.view.onQuery) S.view.onQuery(query);
      refreshNow();
      return;
    }
    leaveView();
    const view = VIEWS[name](arg, query);
    view.key = key;
    view.alive = true;
    S.view = view;
    fill($('#view'), view.root);
    window.scrollTo(0, 0);
    document.title = `George · ${view.title || name}`;
    refreshNow();
  }

  // ---------------------------------------------------------------- shared renderers

  /** The jobs table of the list and the overview. */
  function jobsTable(jobs, attrs) {
    const rows = jobs.map((j) => h('tr', { 'data-job-id': j.id },
      h('td', {}, jobLink(j.id)),
      h('td', { 'data-field': 'status', class: 'status', 'data-status': j.status, title: j.reason || null }, j.status),
      h('td', { 'data-field': 'desired' }, j.desired),
      h('td', { 'data-field': 'priority' }, j.priority),
      h('td', {}, j.template),
      h('td', {}, j.agent),
      h('td', {}, orDash(j.chapter)),
      h('td', {}, j.origin ? j.origin.source : '—'),
      h('td', { class: 'num' }, attemptText(j)),
      h('td', { class: 'num', 'data-field': 'duration' }, fmtDuration(jobDuration(j))),
      h('td', {}, timeEl(j.updated_at)),
      h('td', { 'data-field': 'reason', class: 'reason', title: j.reason || null }, j.reason ? firstLine(j.reason) : '—')));
    return table(attrs,
      ['Job', 'Status', 'Desired', 'Priority', 'Template', 'Agent', 'Chapter', 'Source', 'Attempt', 'Duration', 'Updated', 'Reason'],
      rows, 'No jobs match.');
  }

  /** A job's attempt and how its attempts went: "2 (1 failed before)"; a failed job's last one says so. */
  function attemptText(j) {
    const before = j.failures ? `${j.failures} failed before` : '';
    const last = j.status === 'failed' ? 'this one failed' : '';
    const notes = [last, before].filter(Boolean).join(', ');
    return notes ? `${j.attempt} (${notes})` : `${j.attempt}`;
  }

  /** Milliseconds from a job's creation to its end (or to now while it runs). */
  function jobDuration(j) {
    const start = Date.parse(j.created_at);
    const end = FINAL_STATUSES.has(j.status) ? Date.parse(j.updated_at) : Date.now();
    return Number.isNaN(start) || Number.isNaN(end) ? null : end - start;
  }

  /** A text's first line, with "…" when there was more. */
  const firstLine = (text) => {
    const i = String(text).indexOf('\n');
    return i < 0 ? String(text) : `${String(text).slice(0, i).trimEnd()}…`;
  };

  const newestFirst = (key) => (a, b) => (Date.parse(b[key]) || 0) - (Date.parse(a[key]) || 0);

  /** A short, human summary of an event's data. */
  function summarize(ev) {
    const d = ev.data && typeof ev.data === 'object' && !Array.isArray(ev.data) ? ev.data : {};
    const parts = [];
    if (d.step) parts.push(`step ${show(d.step)}`);
    if ('to' in d) parts.push(`${d.from !== undefined && d.from !== null ? `${show(d.from)} → ` : '→ '}${show(d.to)}`);
    for (const k of ['reason', 'outcome', 'exit_code', 'agent_spec', 'runtime', 'kind', 'status', 'message', 'color', 'level', 'percent', 'agent', 'method', 'path', 'subject', 'role']) {
      if (d[k] !== undefined && d[k] !== null && d[k] !== '') parts.push(`${k}: ${show(d[k])}`);
    }
    if (!parts.length && ev.data !== undefined && ev.data !== null) {
      const j = JSON.stringify(ev.data);
      if (j !== '{}') parts.push(j);
    }
    return truncate(parts.join(' · '), 240);
  }

  /** Scopes of a budget report: the org, then each chapter. */
  function budgetScopes(report) {
    const chapters = report.chapters || [];
    return [
      { name: 'Organisation', chapter: null, standing: report.org, report: null },
      ...chapters.map((c) => ({ name: c.chapter ? `Chapter ${c.chapter}` : 'No chapter', chapter: c.chapter, standing: c, report: c })),
    ];
  }

  // ---------------------------------------------------------------- view: overview

  function overviewView() {
    const counts = h('div', { class: 'tiles' });
    const queue = h('div', {});
    const agents = h('div', {});
    const alerts = h('div', {});
    const burn = h('div', {});
    const recent = h('div', {});
    const root = h('section', { id: 'overview' },
      h('h1', {}, 'Overview'),
      card('Jobs by status', counts),
      h('div', { class: 'grid' },
        card('Queue by priority', queue),
        card('Alerts', alerts),
        card('Budget burn', burn),
        card('Running agents', agents)),
      card('Recently updated jobs', recent));

    async function refresh() {
      const [status, jobs, live, budget, sources] = await Promise.all([
        api('/api/v1/status'),
        api('/api/v1/jobs?order=newest&limit=200'),
        api('/api/v1/agents?limit=200'),
        api('/api/v1/budget?period=month').catch((e) => ({ failed: e })),
        api('/api/v1/sources').catch(() => []),
      ]);
      if (!view.alive) return;
      const jobCounts = status.jobs || {};
      fill(counts, JOB_STATUSES.map((s) => h('a', { class: 'tile', href: `#/jobs?status=${s}`, 'data-status': s },
        h('span', { class: 'tile-num', 'data-status-count': s }, String(jobCounts[s] || 0)),
        h('span', { class: 'tile-label' }, s))));

      const q = status.queue || {};
      const qmax = Math.max(1, ...PRIORITIES.map((p) => q[p] || 0));
      fill(queue, h('ul', { class: 'bars' }, PRIORITIES.filter((p) => p !== 'BACKGROUND' || q[p]).map((p) =>
        h('li', { 'data-priority': p }, h('span', { class: 'bar-label' }, p), bar(q[p] || 0, qmax, 'none'),
          h('span', { class: 'bar-value', 'data-queue-depth': p }, String(q[p] || 0))))));

      fill(alerts, renderAlerts(status.agents || [], budget, jobCounts, sources));
      fill(burn, renderBurnBars(budget));

      const registry = status.agents || [];
      fill(agents,
        muted(`${registry.filter((e) => e.instances > 0).length} of ${registry.length} agent specs awake, ${live.length} live instances.`),
        table({ id: 'overview-agents', class: 'compact' }, ['Agent', 'Spec', 'State', 'Heartbeat'],
          live.map((a) => h('tr', { 'data-agent-id': a.id },
            h('td', {}, h('a', { href: `#/jobs/${enc(a.job_id)}` }, a.id)),
            h('td', {}, a.agent_spec),
            h('td', {}, statusBadge(a.state)),
            h('td', {}, timeEl(a.last_heartbeat)))),
          'No agent is running.'));

      const latest = [...jobs].sort(newestFirst('updated_at')).slice(0, 10);
      fill(recent, jobsTable(latest, { id: 'recent-jobs', class: 'jobs' }));
    }

    const view = { title: 'Overview', root, refresh, throttle: 1000 };
    return view;
  }

  /** Failed jobs, rejected source revisions, budget alerts (non-green standings) and degraded agent specs. */
  function renderAlerts(registry, budget, jobCounts = {}, sources = []) {
    const items = [];
    if (jobCounts.failed) {
      items.push(h('li', { 'data-alert': 'failed-jobs' }, badge('failed', 'red'), ' ',
        h('a', { href: '#/jobs?status=failed' }, `${jobCounts.failed} failed job${jobCounts.failed === 1 ? '' : 's'}`)));
    }
    for (const src of sources.filter((x) => x.rejected_revision)) {
      const why = (src.errors || [])[0];
      items.push(h('li', { 'data-alert': 'rejected-source', 'data-source': src.name, title: (src.errors || []).join('\n') || null },
        badge('rejected', 'red'),
        ` Source ${src.name}: revision ${String(src.rejected_revision).slice(0, 12)} was rejected${why ? `: ${firstLine(why)}` : ''}`));
    }
    if (budget && !budget.failed) {
      for (const s of budgetScopes(budget)) {
        const st = s.standing;
        if (st.alert && st.alert !== 'green') {
          const used = st.budget ? ` (${Math.round((st.total / st.budget) * 100)}% of ${compact(st.budget)} used)` : '';
          items.push(h('li', { 'data-alert': st.alert }, badge(st.alert, st.alert), ` ${s.name} budget${used}`,
            st.projected_exhaustion ? `, runs out ${st.projected_exhaustion}` : ''));
        }
      }
    }
    for (const e of registry.filter((r) => r.degraded)) {
      items.push(h('li', { 'data-alert': 'red' }, badge('degraded', 'red'),
        ` Agent spec ${e.name}: ${e.consecutive_failures} failures in a row`));
    }
    const out = [items.length ? h('ul', { class: 'alerts' }, items) : muted('No alerts.')];
    if (budget && budget.failed) out.push(muted(`Budget report unavailable: ${budget.failed.message}`));
    return out;
  }

  /** Spent vs limit bars per scope. */
  function renderBurnBars(budget) {
    if (!budget || budget.failed) return muted('No budgets configured.');
    const scopes = budgetScopes(budget).filter((s) => s.standing.budget || s.standing.total);
    const anyBudget = scopes.some((s) => s.standing.budget);
    if (!scopes.length) return muted('No budgets configured; no tokens used this period.');
    return [
      muted(anyBudget ? `Period ${budget.period}.` : `No budgets configured; tokens used in ${budget.period}:`),
      h('ul', { class: 'bars' }, scopes.map((s) => {
        const st = s.standing;
        const text = st.budget ? `${compact(st.total)} / ${compact(st.budget)}` : `${compact(st.total)} (no limit)`;
        return h('li', { 'data-scope': s.chapter === null ? 'org' : s.chapter },
          h('span', { class: 'bar-label', title: s.name }, s.name),
          bar(st.total, st.budget || st.total, st.budget ? st.alert : 'none'),
          h('span', { class: 'bar-value' }, text));
      })),
      h('p', {}, h('a', { href: '#/budgets?period=month' }, 'Budget details →')),
    ];
  }

  // ---------------------------------------------------------------- view: jobs list

  function jobsView() {
    let jobs = [];
    const selected = () => (currentQuery().get('status') || '').split(',')
      .map((s) => STATUS_ALIASES[s] || s).filter((s) => JOB_STATUSES.includes(s));

    const setQuery = (changes) => {
      const q = currentQuery();
      for (const [k, v] of Object.entries(changes)) {
        if (v) q.set(k, v);
        else q.delete(k);
      }
      location.hash = hashWith('#/jobs', q);
    };

    const chips = JOB_STATUSES.map((s) => h('button', {
      type: 'button', class: 'chip', 'data-status': s, 'aria-pressed': 'false',
      onclick: () => {
        const set = new Set(selected());
        if (set.has(s)) set.delete(s);
        else set.add(s);
        setQuery({ status: JOB_STATUSES.filter((x) => set.has(x)).join(',') });
      },
    }, s));
    const chapter = h('input', { type: 'search', id: 'filter-chapter', placeholder: 'chapter', 'aria-label': 'Chapter',
      onchange: () => setQuery({ chapter: chapter.value.trim() }) });
    const source = h('input', { type: 'search', id: 'filter-source', placeholder: 'source (api, git, …)', 'aria-label': 'Source',
      onchange: () => setQuery({ source: source.value.trim() }) });
    const selector = h('input', { type: 'search', id: 'filter-selector', placeholder: 'labels: team=ops,!legacy', 'aria-label': 'Label selector',
      onchange: () => setQuery({ selector: selector.value.trim() }) });
    const idFilter = h('input', { type: 'search', id: 'filter-id', placeholder: 'filter by id…', 'aria-label': 'Job id contains',
      oninput: () => {
        const q = currentQuery();
        q.set('q', idFilter.value);
        history.replaceState(null, '', hashWith('#/jobs', q)); // no hashchange: filtering is local
        renderRows();
      } });
    const clear = h('button', { type: 'button', class: 'secondary small', onclick: () => {
      for (const input of [idFilter, chapter, source, selector]) input.value = '';
      if (location.hash === '#/jobs') route();
      else location.hash = '#/jobs';
    } }, 'Clear filters');
    const count = h('p', { class: 'muted', id: 'jobs-count' });
    const box = h('div', {}, muted('Loading…'));
    const root = h('section', { id: 'jobs' },
      h('h1', {}, 'Jobs'),
      h('div', { class: 'filters card' },
        h('div', { class: 'chips', role: 'group', 'aria-label': 'Status' }, chips),
        h('div', { class: 'filter-inputs' }, idFilter, chapter, source, selector, clear)),
      count, box);

    /** Puts the query's values into the inputs (after back/forward). */
    function syncInputs(q) {
      const sel = new Set(selected());
      for (const c of chips) c.setAttribute('aria-pressed', String(sel.has(c.getAttribute('data-status'))));
      for (const [input, k] of [[chapter, 'chapter'], [source, 'source'], [selector, 'selector'], [idFilter, 'q']]) {
        if (document.activeElement !== input) input.value = q.get(k) || '';
      }
    }

    // One page of the newest jobs (the API pages its lists).
    const PAGE = 500;

    function renderRows() {
      const needle = idFilter.value.trim().toLowerCase();
      const shown = needle
        ? jobs.filter((j) => [j.id, j.template, j.agent].some((x) => String(x).toLowerCase().includes(needle)))
        : jobs;
      count.textContent = `${shown.length} job${shown.length === 1 ? '' : 's'}${jobs.length >= PAGE ? `: the ${PAGE} newest` : ''}.`;
      fill(box, jobsTable(shown, { id: 'jobs-table', class: 'jobs' }));
    }

    async function refresh() {
      const q = currentQuery();
      const params = new URLSearchParams();
      const st = selected();
      if (st.length) params.set('status', st.join(','));
      if (q.get('chapter')) params.set('chapter', q.get('chapter'));
      if (q.get('source')) params.set('source', q.get('source'));
      if (q.get('selector')) params.set('selector', q.get('selector'));
      params.set('order', 'newest');
      params.set('limit', String(PAGE));
      const list = await api(`/api/v1/jobs?${params.toString()}`);
      if (!view.alive) return;
      jobs = list.sort(newestFirst('created_at'));
      syncInputs(currentQuery());
      renderRows();
    }

    syncInputs(currentQuery());
    const view = { title: 'Jobs', root, refresh, throttle: 500, onQuery: syncInputs };
    return view;
  }

  // ---------------------------------------------------------------- view: job detail

  function jobView(id) {
    const operate = canOperate();
    const armed = new Set();
    const state = { job: null, evidence: [], events: [], eventSeq: 0, busy: false, logs: null, pinned: null, selectedStep: null, stepIds: '' };

    // Header and summary, rebuilt on every refresh.
    const summary = h('div', { class: 'card' }, muted('Loading…'));

    // Operator actions (persistent, so armed buttons and typed text survive refreshes).
    const btnPause = h('button', { id: 'btn-pause', type: 'button', disabled: true, onclick: () => act('pause') }, 'Pause');
    const btnResume = h('button', { id: 'btn-resume', type: 'button', disabled: true, onclick: () => act('resume') }, 'Resume');
    const btnAbort = twoStep(h('button', { id: 'btn-abort', type: 'button', class: 'danger', disabled: true }, 'Abort'),
      'Abort', 'Really abort?', () => act('abort'), armed, 'abort');
    const btnRetry = h('button', { id: 'btn-retry', type: 'button', disabled: true, onclick: () => act('retry') }, 'Retry');
    const btnResubmit = h('button', { id: 'btn-resubmit', type: 'button', class: 'secondary', onclick: resubmit }, 'Resubmit');
    const btnDelete = twoStep(h('button', { id: 'btn-delete', type: 'button', class: 'danger', disabled: true }, 'Delete'),
      'Delete', 'Really delete?', remove, armed, 'delete');
    const actions = operate
      ? h('div', { class: 'actions' }, btnPause, btnResume, btnAbort, btnRetry, btnResubmit, btnDelete) : null;

    const graphBox = h('div', { class: 'graph-scroll' });
    const stepLog = h('div', { id: 'step-log' });
    const stepsBox = h('div', {});
    const logsHint = h('p', { class: 'muted', id: 'job-logs-state' });
    const logsPre = h('pre', { id: 'job-logs', class: 'logs', tabindex: '0' });
    const comments = h('ol', { id: 'job-comments', class: 'comments' });
    const injectText = h('textarea', { id: 'inject-text', rows: '3', placeholder: 'A message for the job\u2019s agent…' });
    const btnInject = h('button', { id: 'btn-inject', type: 'button', onclick: inject }, 'Send');
    const overrideStatus = h('select', { id: 'override-status', 'aria-label': 'New status' });
    const overrideStep = h('select', { id: 'override-step', 'aria-label': 'Step', onchange: () => fillOverrideStatuses() },
      h('option', { value: '' }, '(whole job)'));
    const overrideReason = h('input', { id: 'override-reason', type: 'text', placeholder: 'why (required, kept in the audit log)' });
    const btnOverride = twoStep(h('button', { id: 'btn-override', type: 'button', class: 'danger' }, 'Override'),
      'Override', 'Really override?', override, armed, 'override');
    const evidence = h('div', { id: 'job-evidence' });
    const attempts = h('div', { id: 'job-attempts' });
    const events = h('ol', { id: 'job-events', class: 'timeline' });
    const family = h('div', { id: 'job-family' });
    // Shown only for a job with a parent or children.
    const familyCard = card('Family', family);
    familyCard.hidden = true;

    fillOverrideStatuses();

    const root = h('section', { id: 'job-detail', 'data-job-id': id },
      h('div', { class: 'job-title' }, h('h1', {}, 'Job ', h('code', {}, id)), actions),
      summary,
      familyCard,
      card('Steps', graphBox, stepLog, stepsBox),
      card('Live log', logsHint, logsPre),
      h('div', { class: 'grid' },
        card('Conversation', comments, operate ? h('div', { class: 'inject' },
          h('label', { for: 'inject-text' }, 'Inject a message'), injectText, btnInject) : null),
        card('Timeline', events)),
      card('Attempts', attempts),
      card('Evidence', evidence),
      operate ? card('Override',
        muted('Set the status of the job or of one step by hand. Use it when the agent cannot, and say why.'),
        h('div', { class: 'override' }, overrideStep, overrideStatus, overrideReason, btnOverride)) : null);

    // -- actions

    function updateActions() {
      const job = state.job;
      if (!job) return;
      const final = FINAL_STATUSES.has(job.status);
      btnPause.disabled = state.busy || job.desired !== 'active' || final;
      btnResume.disabled = state.busy || job.desired !== 'paused';
      btnAbort.disabled = state.busy || job.desired === 'aborted' || final;
      btnRetry.disabled = state.busy || !['failed', 'aborted', 'blocked'].includes(job.status);
      btnResubmit.disabled = state.busy;
      btnDelete.disabled = state.busy || !final;
    }

    async function resubmit() {
      state.busy = true;
      updateActions();
      try {
        const copy = await post(`/api/v1/jobs/${enc(id)}/resubmit`, {});
        location.hash = `#/jobs/${enc(copy.id)}`;
      } catch (e) {
        reportError(e);
      } finally {
        state.busy = false;
        updateActions();
      }
    }

    async function remove() {
      state.busy = true;
      updateActions();
      try {
        await del(`/api/v1/jobs/${enc(id)}`);
        flash(`Job ${id} deleted.`, 'done');
        location.hash = '#/jobs';
      } catch (e) {
        reportError(e);
        state.busy = false;
        updateActions();
      }
    }

    async function act(what) {
      state.busy = true;
      updateActions();
      try {
        await post(`/api/v1/jobs/${enc(id)}/${what}`, { reason: ACTION_REASON });
      } catch (e) {
        reportError(e);
      } finally {
        state.busy = false;
        updateActions();
        refreshNow();
      }
    }

    async function inject() {
      const message = injectText.value;
      if (!message.trim()) {
        flash('Write a message first.');
        return;
      }
      btnInject.disabled = true;
      try {
        await post(`/api/v1/jobs/${enc(id)}/inject`, { message });
        injectText.value = '';
      } catch (e) {
        reportError(e);
      } finally {
        btnInject.disabled = false;
        refreshNow();
      }
    }

    async function override() {
      // The reason is required and kept in the audit log: an empty one is the server's to refuse.
      const body = { status: overrideStatus.value, reason: overrideReason.value.trim() };
      if (overrideStep.value) body.step = overrideStep.value;
      btnOverride.disabled = true;
      try {
        await post(`/api/v1/jobs/${enc(id)}/override`, body);
        overrideReason.value = '';
      } catch (e) {
        reportError(e);
      } finally {
        btnOverride.disabled = false;
        refreshNow();
      }
    }

    /** The statuses an override may set: a step's or the job's. */
    function fillOverrideStatuses() {
      const keep = overrideStatus.value;
      const options = overrideStep.value ? STEP_OVERRIDES : JOB_OVERRIDES;
      fill(overrideStatus, options.map((s) => h('option', { value: s }, s)));
      if (options.includes(keep)) overrideStatus.value = keep;
    }

    function fillOverrideSteps(steps) {
      const ids = steps.map((s) => s.id).join('\n');
      if (ids === state.stepIds) return;
      state.stepIds = ids;
      const keep = overrideStep.value;
      fill(overrideStep, h('option', { value: '' }, '(whole job)'), steps.map((s) => h('option', { value: s.id }, `step ${s.id}`)));
      overrideStep.value = steps.some((s) => s.id === keep) ? keep : '';
      fillOverrideStatuses();
    }

    // -- logs

    function stopLogs() {
      if (state.logs) state.logs.controller.abort();
      state.logs = null;
    }

    /** Streams the current (or pinned) attempt's log, unless it already is. */
    function ensureLogs() {
      const job = state.job;
      const attempt = state.pinned || job.attempt;
      if (!attempt) {
        stopLogs();
        logsPre.textContent = '';
        fill(logsHint, 'No attempt has started yet.');
        return;
      }
      const key = `${job.id}-${attempt}`;
      const cur = state.logs;
      if (cur && cur.key === key && (!cur.failed || cur.tries >= 3)) return;
      streamLogs(key, attempt, cur && cur.key === key ? cur.tries + 1 : 1);
    }

    function setLogsHint(text) {
      fill(logsHint, text, state.pinned ? [' ', h('button', { type: 'button', class: 'secondary small',
        onclick: () => { state.pinned = null; ensureLogs(); } }, 'Follow the current attempt')] : null);
    }

    async function streamLogs(key, attempt, tries) {
      stopLogs();
      const st = { key, controller: new AbortController(), failed: false, tries, length: 0 };
      state.logs = st;
      logsPre.textContent = '';
      setLogsHint(`Streaming the output of attempt ${attempt}…`);
      try {
        const res = await api(`/api/v1/agents/${enc(key)}/logs?follow=true`, { raw: true, signal: st.controller.signal, accept: 'text/plain' });
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          appendLog(st, decoder.decode(value, { stream: true }));
        }
        appendLog(st, decoder.decode());
        if (state.logs === st) {
          setLogsHint(st.length ? `Attempt ${attempt} has ended; its log is complete.` : `Attempt ${attempt} wrote no output.`);
        }
      } catch (e) {
        if (e.name === 'AbortError' || state.logs !== st) return;
        st.failed = true;
        setLogsHint(`The log of attempt ${attempt} is unavailable: ${e.message}`);
      }
    }

    function appendLog(st, text) {
      if (!text || state.logs !== st) return;
      const atBottom = logsPre.scrollHeight - logsPre.scrollTop - logsPre.clientHeight < 40;
      logsPre.append(text);
      st.length += text.length;
      if (st.length > LOG_CAP) {
        const all = logsPre.textContent;
        logsPre.textContent = `[… earlier output trimmed …]\n${all.slice(all.length - Math.floor(LOG_CAP * 0.8))}`;
        st.length = logsPre.textContent.length;
      }
      if (atBottom) logsPre.scrollTop = logsPre.scrollHeight;
    }

    // -- rendering

    function renderSummary(job) {
      const origin = job.origin || {};
      const originText = [origin.source, origin.reference, origin.revision ? `@${String(origin.revision).slice(0, 12)}` : null]
        .filter(Boolean).join(' ');
      const row = (label, ...value) => [h('dt', {}, label), h('dd', {}, value)];
      const params = job.params && Object.keys(job.params).length ? h('pre', { class: 'params' }, JSON.stringify(job.params, null, 2)) : '—';
      fill(summary,
        h('dl', { class: 'summary' },
          h('dt', {}, 'Status'), h('dd', {}, h('span', { id: 'job-status', class: 'status', 'data-status': job.status }, job.status)),
          h('dt', {}, 'Desired'), h('dd', {}, h('span', { id: 'job-desired', 'data-desired': job.desired }, job.desired)),
          row('Priority', job.priority),
          row('Template', job.template),
          row('Agent', job.agent),
          row('Chapter', orDash(job.chapter)),
          row('Labels', Object.keys(job.labels || {}).length
            ? h('span', { id: 'job-labels' }, Object.entries(job.labels).map(([k, v]) =>
              h('a', { class: 'badge', href: `#/jobs?selector=${enc(`${k}=${v}`)}`, title: `Jobs labelled ${k}=${v}` }, `${k}=${v}`)))
            : '—'),
          row('Origin', orDash(originText)),
          row('Attempt', attemptText(job), job.max_attempts ? ` · ${job.max_attempts} allowed` : ''),
          row('Duration', h('span', { id: 'job-duration' }, fmtDuration(jobDuration(job)))),
          job.reason ? row('Reason', h('span', { id: 'job-reason' }, job.reason)) : null,
          job.next_attempt_at ? row('Next attempt', timeEl(job.next_attempt_at)) : null,
          row('Created', timeEl(job.created_at, false)),
          row('Updated', timeEl(job.updated_at)),
          row('Params', params)));
    }

    function renderSteps(job) {
      const steps = job.steps || [];
      fill(graphBox, stepGraph(steps, state.selectedStep, (sid) => {
        state.selectedStep = state.selectedStep === sid ? null : sid;
        renderSteps(state.job);
      }));
      fill(stepsBox, table({ id: 'job-steps', class: 'compact' },
        ['Step', 'Status', 'Needs', 'Runs', 'Started', 'Duration', 'Reason', 'Description'],
        steps.map((s) => h('tr', { 'data-step-id': s.id, class: s.id === state.selectedStep ? 'selected' : null },
          h('td', {}, h('code', {}, s.id)),
          h('td', {}, statusBadge(s.status)),
          h('td', {}, orDash(depsOf(s).join(', '))),
          h('td', { class: 'num' }, String(s.runs)),
          h('td', {}, s.started_at ? timeEl(s.started_at) : '—'),
          h('td', { class: 'num', 'data-duration-ms': s.duration_ms ?? '' }, stepDuration(s)),
          h('td', {}, orDash(s.reason)),
          h('td', { class: 'wrap' }, s.description,
            s.run ? h('pre', { class: 'cmd' }, `run: ${s.run}`) : null,
            s.done_when ? h('pre', { class: 'cmd' }, `done when: ${s.done_when}`) : null))),
        'This job has no steps.'));
      renderStepLog();
    }

    /** The selected step's own output (what the agent recorded of each run), apart from the others'. */
    function renderStepLog() {
      const sid = state.selectedStep;
      const step = sid && state.job ? (state.job.steps || []).find((s) => s.id === sid) : null;
      if (!step) return fill(stepLog, muted('Select a step in the graph to see its output.'));
      const mine = (state.evidence || []).filter((e) => e.step_id === sid);
      const running = step.status === 'in_progress';
      fill(stepLog, h('div', { class: 'step-log', 'data-step-id': sid },
        h('h3', {}, 'Step ', h('code', {}, sid), ' ', statusBadge(step.status),
          step.duration_ms != null ? h('span', { class: 'muted' }, ` · ${stepDuration(step)}`) : null),
        step.reason ? h('p', {}, step.reason) : null,
        mine.length ? mine.map((e) => h('article', { class: 'evidence', 'data-step-output': e.id },
          h('div', { class: 'meta' }, badge(e.kind), ` · attempt ${e.attempt} · `, timeEl(e.created_at),
            e.truncated ? [' ', badge('truncated', 'yellow')] : null),
          h('pre', {}, e.content))) : null,
        running ? muted('Running: its output so far is in the live log below.')
          : mine.length ? null : muted('This step recorded no output.')));
    }

    function renderComments(list) {
      const atBottom = comments.scrollHeight - comments.scrollTop - comments.clientHeight < 40;
      fill(comments, list.length ? list.map((c) => h('li', { 'data-comment-id': c.id, 'data-author-kind': c.author.split(':')[0] },
        h('div', { class: 'meta' }, h('strong', {}, c.author), ' · ', timeEl(c.created_at)),
        h('div', { class: 'body' }, c.body))) : h('li', { class: 'empty' }, 'No messages yet.'));
      if (atBottom) comments.scrollTop = comments.scrollHeight; // follow the conversation
    }

    function renderEvidence(list) {
      fill(evidence, list.length ? [...list].reverse().map((e) => h('article', { class: 'evidence', 'data-evidence-id': e.id },
        h('div', { class: 'meta' }, badge(e.kind), e.step_id ? [' step ', h('code', {}, e.step_id)] : ' (job)',
          ` · attempt ${e.attempt} · `, timeEl(e.created_at), e.truncated ? [' ', badge('truncated', 'yellow')] : null),
        h('pre', {}, e.content))) : muted('No evidence recorded yet.'));
    }

    function renderAttempts(list, job) {
      fill(attempts, table({ class: 'compact' },
        ['Attempt', 'Agent', 'State', 'Runtime', 'Started', 'Heartbeat', 'Ended', 'Duration', 'Exit', 'Outcome', 'Log'],
        list.map((a) => h('tr', { 'data-agent-id': a.id, class: a.attempt === job.attempt ? 'current' : null },
          h('td', { class: 'num' }, String(a.attempt)),
          h('td', {}, h('code', {}, a.id)),
          h('td', {}, statusBadge(a.state)),
          h('td', {}, a.runtime),
          h('td', {}, timeEl(a.started_at)),
          h('td', {}, timeEl(a.last_heartbeat)),
          h('td', {}, timeEl(a.ended_at)),
          h('td', { class: 'num' }, a.ended_at ? fmtDuration(Date.parse(a.ended_at) - Date.parse(a.started_at))
            : `${fmtDuration(Date.now() - Date.parse(a.started_at))} so far`),
          h('td', { class: 'num' }, orDash(a.exit_code)),
          h('td', {}, orDash(a.outcome)),
          h('td', {}, h('button', { type: 'button', class: 'secondary small', onclick: () => {
            state.pinned = a.attempt === job.attempt ? null : a.attempt;
            ensureLogs();
            logsPre.scrollIntoView({ block: 'nearest' });
          } }, 'Show')))),
        'No attempt yet.'));
    }

    /** The job's children, theirs, and so on (a family is a few generations at most). */
    async function loadFamily(jid, depth = 1) {
      const kids = await api(`/api/v1/jobs/${enc(jid)}/children`);
      return Promise.all(kids.map(async (k) => ({ ...k, children: depth < 4 ? await loadFamily(k.id, depth + 1) : [] })));
    }

    function renderFamily(job, kids) {
      const origin = job.origin || {};
      const parent = origin.source === 'parent' ? origin.reference : null;
      const node = (k) => h('li', { 'data-child-id': k.id, 'data-status': k.status },
        h('a', { href: `#/jobs/${enc(k.id)}` }, h('code', {}, k.id)), ' ', statusBadge(k.status),
        h('span', { class: 'muted' }, ` ${k.template}`),
        h('span', { class: 'muted', 'data-tokens-used': k.tokens_used },
          k.tokens != null ? ` · ${k.tokens_used} of ${k.tokens} tokens` : k.tokens_used ? ` · ${k.tokens_used} tokens` : ''),
        k.reason && k.status !== 'completed' ? h('span', { class: 'muted' }, ` — ${k.reason}`) : null,
        k.summary ? h('pre', { class: 'child-summary' }, k.summary) : null,
        k.children.length ? h('ul', { class: 'family-tree' }, k.children.map(node)) : null);
      familyCard.hidden = !parent && !kids.length;
      fill(family,
        parent ? h('p', {}, 'Child ', h('code', {}, origin.revision || ''), ' of ',
          h('a', { id: 'job-parent', href: `#/jobs/${enc(parent)}` }, h('code', {}, parent))) : null,
        kids.length ? h('ul', { id: 'family-tree', class: 'family-tree' }, kids.map(node)) : muted('No children.'));
    }

    function renderEvents() {
      const recent = state.events.slice(-300).reverse();
      fill(events, recent.length ? recent.map((e) => eventItem(e, summarize(e))) : h('li', { class: 'empty' }, 'No events yet.'));
    }

    /** Fetches the job's events after the last one seen (the log only grows). */
    async function loadEvents() {
      for (let i = 0; i < 20; i += 1) {
        const batch = await api(`/api/v1/events?job=${enc(id)}&since=${state.eventSeq}&limit=500`);
        if (!batch.length) break;
        state.events.push(...batch);
        state.eventSeq = batch[batch.length - 1].seq;
        if (batch.length < 500) break;
      }
    }

    async function refresh() {
      let job;
      let comm;
      let evid;
      let agents;
      try {
        let kids;
        [job, comm, evid, agents, kids] = await Promise.all([
          api(`/api/v1/jobs/${enc(id)}`),
          api(`/api/v1/jobs/${enc(id)}/comments`),
          api(`/api/v1/jobs/${enc(id)}/evidence`),
          api('/api/v1/agents?all=true&limit=1000'),
          loadFamily(id),
          loadEvents(),
        ]);
        state.kids = kids;
      } catch (e) {
        if (e.status === 404 && view.alive) fill(summary, h('p', { class: 'error' }, e.message));
        throw e;
      }
      if (!view.alive) return;
      state.job = job;
      renderSummary(job);
      updateActions();
      renderSteps(job);
      fillOverrideSteps(job.steps || []);
      renderComments(comm);
      state.evidence = evid;
      renderStepLog();
      renderEvidence(evid);
      renderAttempts(agents.filter((a) => a.job_id === id).sort((a, b) => b.attempt - a.attempt), job);
      renderFamily(job, state.kids);
      renderEvents();
      ensureLogs();
    }

    const view = {
      title: `Job ${id}`,
      root,
      refresh,
      throttle: 300,
      // Its children's changes too (their ids begin with its own).
      wants: (ev) => !ev.job_id || ev.job_id === id || ev.job_id.startsWith(`${id}.`),
      teardown: stopLogs,
    };
    return view;
  }

  // ---------------------------------------------------------------- step graph

  const depsOf = (step) => step.depends_on || step.needs || [];

  /**
   * The steps' dependency graph as SVG: a step's layer (column) is 1 + the
   * largest layer of the steps it needs; edges go from a needed step to the
   * step that needs it.
   */
  function stepGraph(steps, selected, onSelect) {
    const W = 172;
    const H = 46;
    const GX = 56;
    const GY = 14;
    const PAD = 12;
    const byId = new Map(steps.map((s) => [s.id, s]));
    const layer = new Map();
    const visiting = new Set();
    const layerOf = (sid) => {
      if (layer.has(sid)) return layer.get(sid);
      if (visiting.has(sid)) return 0; // a cycle: the engine refuses them, but never loop
      visiting.add(sid);
      const deps = depsOf(byId.get(sid)).filter((d) => byId.has(d));
      const l = deps.length ? 1 + Math.max(...deps.map(layerOf)) : 0;
      visiting.delete(sid);
      layer.set(sid, l);
      return l;
    };
    steps.forEach((s) => layerOf(s.id));

    // Columns, each ordered by the mean row of its steps' dependencies (fewer crossings).
    const columns = [];
    steps.forEach((s, i) => {
      const l = layer.get(s.id);
      (columns[l] = columns[l] || []).push({ step: s, index: i });
    });
    const row = new Map();
    columns.forEach((col) => {
      const key = (n) => {
        const deps = depsOf(n.step).filter((d) => row.has(d));
        return deps.length ? deps.reduce((a, d) => a + row.get(d), 0) / deps.length : n.index;
      };
      col.sort((a, b) => key(a) - key(b) || a.index - b.index);
      col.forEach((n, r) => row.set(n.step.id, r));
    });

    const rows = Math.max(1, ...Array.from(columns, (c) => (c ? c.length : 0)));
    const cols = Math.max(1, columns.length);
    const width = PAD * 2 + cols * W + (cols - 1) * GX;
    const height = PAD * 2 + rows * H + (rows - 1) * GY;
    const pos = new Map();
    columns.forEach((col, c) => col.forEach((n, r) => {
      const offset = ((rows - col.length) * (H + GY)) / 2; // centre short columns
      pos.set(n.step.id, { x: PAD + c * (W + GX), y: PAD + offset + r * (H + GY) });
    }));

    const svg = svgEl('svg', {
      id: 'step-graph', class: 'step-graph', viewBox: `0 0 ${width} ${height}`, width, height,
      role: 'img', 'aria-label': `Dependency graph of ${steps.length} steps`,
    }, svgEl('defs', {}, svgEl('marker', {
      id: 'arrow', viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse',
    }, svgEl('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrow-head' }))));

    if (!steps.length) {
      svg.appendChild(svgEl('text', { x: PAD, y: PAD + 24, class: 'graph-empty' }, 'This job has no steps.'));
      return svg;
    }

    const edges = svgEl('g', { class: 'edges' });
    for (const s of steps) {
      for (const d of depsOf(s).filter((x) => pos.has(x))) {
        const a = pos.get(d);
        const b = pos.get(s.id);
        const x1 = a.x + W;
        const y1 = a.y + H / 2;
        const x2 = b.x;
        const y2 = b.y + H / 2;
        const done = ['completed', 'skipped'].includes(byId.get(d).status);
        edges.appendChild(svgEl('path', {
          class: done ? 'edge done' : 'edge', 'data-from': d, 'data-to': s.id, 'marker-end': 'url(#arrow)',
          d: `M ${x1} ${y1} C ${x1 + GX / 2} ${y1}, ${x2 - GX / 2} ${y2}, ${x2} ${y2}`,
        }));
      }
    }
    svg.appendChild(edges);

    for (const s of steps) {
      const p = pos.get(s.id);
      const g = svgEl('g', {
        class: s.id === selected ? 'step selected' : 'step', 'data-step-id': s.id, 'data-status': s.status,
        transform: `translate(${p.x} ${p.y})`, tabindex: '0', role: 'button',
      },
      svgEl('title', {}, [`${s.id}: ${s.status}`, s.description, s.reason ? `reason: ${s.reason}` : ''].filter(Boolean).join('\n')),
      svgEl('rect', { width: W, height: H, rx: '7', ry: '7' }),
      svgEl('text', { x: '10', y: '19', class: 'step-label' }, truncate(s.id, 20)),
      svgEl('text', { x: '10', y: '36', class: 'step-sub' }, `${s.status}${s.runs ? ` · ${s.runs} run${s.runs === 1 ? '' : 's'}` : ''}`));
      g.addEventListener('click', () => onSelect(s.id));
      g.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          onSelect(s.id);
        }
      });
      svg.appendChild(g);
    }
    return svg;
  }

  // ---------------------------------------------------------------- view: agents

  function agentsView() {
    const operate = canOperate();
    const armed = new Set();
    const registryBox = h('div', {}, muted('Loading…'));
    const agentsBox = h('div', {}, muted('Loading…'));
    const showAll = h('input', { type: 'checkbox', id: 'agents-all', onchange: () => refreshNow() });
    const root = h('section', { id: 'agents' },
      h('h1', {}, 'Agents'),
      card('Registry', registryBox),
      card('Instances', h('label', { class: 'inline' }, showAll, ' include ended instances'), agentsBox));

    async function postAction(path) {
      try {
        await post(path, { reason: ACTION_REASON });
      } catch (e) {
        reportError(e);
      } finally {
        refreshNow();
      }
    }

    async function refresh() {
      const [registry, agents] = await Promise.all([
        api('/api/v1/registry'),
        api(`/api/v1/agents?${showAll.checked ? 'all=true&' : ''}limit=200`),
      ]);
      if (!view.alive) return;
      fill(registryBox, table({ id: 'registry-table' },
        ['Agent spec', 'Type', 'Chapter', 'Version', 'Capabilities', 'State', 'Instances', 'Warm pool', 'Failures in a row', 'Health', 'Last heartbeat', operate ? '' : null].filter((x) => x !== null),
        registry.map((e) => h('tr', { 'data-agent-spec': e.name },
          h('td', {}, h('strong', {}, e.name)),
          h('td', {}, orDash(e.agent_type)),
          h('td', {}, orDash(e.chapter)),
          h('td', {}, orDash(e.version)),
          h('td', { class: 'wrap' }, e.capabilities.length ? e.capabilities.map((c) => badge(c)) : '—'),
          h('td', {}, statusBadge(e.state)),
          h('td', { class: 'num' }, String(e.instances)),
          h('td', { class: 'pool', title: e.pool ? `min ${e.pool.min}, max ${e.pool.max}; ${e.pool.starting} starting` : '' },
            e.pool ? `${e.pool.warm}/${e.pool.target} warm · ${e.pool.claimed} claimed · ${e.pool.cold} cold`
              + (e.pool.last_claim_us != null ? ` · claim ${(e.pool.last_claim_us / 1000).toFixed(1)} ms` : '') : '—'),
          h('td', { class: 'num' }, String(e.consecutive_failures)),
          h('td', {}, e.degraded ? badge('degraded', 'red') : badge('ok', 'green')),
          h('td', {}, timeEl(e.last_heartbeat)),
          operate ? h('td', {}, e.instances > 0 ? twoStep(h('button', { type: 'button', class: 'secondary small' }, 'Dismiss'),
            'Dismiss', 'Really dismiss?', () => postAction(`/api/v1/registry/${enc(e.name)}/dismiss`), armed, `dismiss:${e.name}`) : null) : null)),
        'No agent specs are defined.'));
      fill(agentsBox, table({ id: 'agents-table' },
        ['Agent', 'Job', 'Attempt', 'Spec', 'Runtime', 'State', 'Started', 'Heartbeat', 'Ended', 'Exit', 'Outcome', operate ? '' : null].filter((x) => x !== null),
        agents.map((a) => h('tr', { 'data-agent-id': a.id },
          h('td', {}, h('code', {}, a.id)),
          h('td', {}, jobLink(a.job_id)),
          h('td', { class: 'num' }, String(a.attempt)),
          h('td', {}, a.agent_spec),
          h('td', {}, a.runtime),
          h('td', {}, statusBadge(a.state)),
          h('td', {}, timeEl(a.started_at)),
          h('td', {}, timeEl(a.last_heartbeat)),
          h('td', {}, timeEl(a.ended_at)),
          h('td', { class: 'num' }, orDash(a.exit_code)),
          h('td', {}, orDash(a.outcome)),
          operate ? h('td', {}, a.state !== 'terminated' ? twoStep(h('button', { type: 'button', class: 'danger small' }, 'Halt'),
            'Halt', 'Really halt?', () => postAction(`/api/v1/agents/${enc(a.id)}/halt`), armed, `halt:${a.id}`) : null) : null)),
        showAll.checked ? 'No agent instances.' : 'No agent is running.'));
    }

    const view = { title: 'Agents', root, refresh, throttle: 1000 };
    return view;
  }

  // ---------------------------------------------------------------- view: budgets

  function budgetsView() {
    const box = h('div', {}, muted('Loading…'));
    const periodLinks = h('div', { class: 'chips' });
    const root = h('section', { id: 'budgets' }, h('h1', {}, 'Budgets'), periodLinks, box);
    const periodOf = () => (currentQuery().get('period') === 'day' ? 'day' : 'month');

    function renderPeriodLinks(period) {
      fill(periodLinks, ['month', 'day'].map((p) => h('a', {
        class: 'chip', href: `#/budgets?period=${p}`, 'aria-current': p === period ? 'true' : null,
      }, p === 'month' ? 'This month' : 'Today')));
    }

    async function refresh() {
      const period = periodOf();
      renderPeriodLinks(period);
      let report;
      try {
        report = await api(`/api/v1/budget?period=${period}`);
      } catch (e) {
        if (e.status === 401) throw e;
        if (view.alive) fill(box, card(null, h('p', {}, 'No budgets configured.'), muted(`The budget report is unavailable: ${e.message}`)));
        return;
      }
      let ledger = [];
      let ledgerError = null;
      try {
        ledger = await api(`/api/v1/ledger?since=${enc(report.since)}`);
      } catch (e) {
        if (e.status === 401) throw e;
        ledgerError = e;
      }
      if (!view.alive) return;
      const since = Date.parse(report.since);
      const end = periodEnd(since, period);
      const now = Date.parse(report.generated_at) || Date.now();
      const records = ledger.map((r) => ({ t: Date.parse(r.ts), tokens: (r.input_tokens || 0) + (r.output_tokens || 0), chapter: r.chapter || '' }))
        .filter((r) => !Number.isNaN(r.t)).sort((a, b) => a.t - b.t);
      const anyBudget = budgetScopes(report).some((s) => s.standing.budget);
      fill(box,
        muted(`Period ${report.period}, since ${fmtTime(report.since)}; report made ${fmtTime(report.generated_at)}.`),
        anyBudget ? null : h('p', { class: 'notice' }, 'No budgets configured: the charts show usage only.'),
        report.reserve_pool !== null && report.reserve_pool !== undefined
          ? muted(`Reserve pool: ${fmtInt(report.reserve_pool_remaining)} of ${fmtInt(report.reserve_pool)} tokens left.`) : null,
        ledgerError ? h('p', { class: 'error' }, `The ledger is unavailable: ${ledgerError.message}`) : null,
        h('div', { class: 'grid' }, budgetScopes(report).map((s) => budgetCard(s, s.chapter === null ? records
          : records.filter((r) => r.chapter === s.chapter), since, end, now, report))));
    }

    const view = { title: 'Budgets', root, refresh, throttle: 5000 };
    return view;
  }

  function periodEnd(since, period) {
    const d = new Date(since);
    return period === 'day' ? since + 86400000 : Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
  }

  function budgetCard(scope, records, since, end, now, report) {
    const st = scope.standing;
    const stat = (label, value) => [h('dt', {}, label), h('dd', {}, value)];
    let breakdown = scope.report ? scope.report.breakdown : null;
    if (!breakdown) { // the org: every chapter's breakdown summed
      breakdown = {};
      for (const c of report.chapters || []) {
        for (const [spec, u] of Object.entries(c.breakdown || {})) {
          const b = breakdown[spec] || (breakdown[spec] = { invocations: 0, input_tokens: 0, output_tokens: 0, total: 0 });
          for (const k of Object.keys(b)) b[k] += u[k] || 0;
        }
      }
    }
    const c = scope.report;
    return h('section', { class: 'card budget', 'data-scope': scope.chapter === null ? 'org' : scope.chapter },
      h('h2', {}, scope.name, ' ', badge(st.alert || 'green', st.alert || 'green')),
      st.budget ? bar(st.total, st.budget, st.alert) : null,
      h('dl', { class: 'stats' },
        stat('Used', `${fmtInt(st.total)} tokens`),
        stat('Budget', st.budget ? fmtInt(st.budget) : 'none'),
        stat('Left', st.budget ? fmtInt(st.budget_remaining) : '—'),
        stat('Burn rate', `${fmtInt(st.burn_rate_daily)} / day`),
        stat('Runs out', orDash(st.projected_exhaustion)),
        c ? stat('Last hour', `${fmtInt(c.used_last_hour)}${c.rate_per_hour ? ` of ${fmtInt(c.rate_per_hour)} / h` : ''}`) : null,
        c && c.throttle_per_hour ? stat('Throttle', `${fmtInt(c.throttle_per_hour)} / h`) : null),
      burndown(st, records, since, end, now),
      table({ class: 'compact' }, ['Agent spec', 'Calls', 'Input', 'Output', 'Total'],
        Object.entries(breakdown).map(([spec, u]) => h('tr', {},
          h('td', {}, spec), h('td', { class: 'num' }, fmtInt(u.invocations)), h('td', { class: 'num' }, fmtInt(u.input_tokens)),
          h('td', { class: 'num' }, fmtInt(u.output_tokens)), h('td', { class: 'num' }, fmtInt(u.total)))),
        'No usage this period.'));
  }

  /**
   * The burn-down chart: remaining budget over the period, stepping down at
   * each ledger record, with the even-pace line and the projection at the
   * current burn rate. Without a budget it shows cumulative usage.
   */
  function burndown(st, records, since, end, now) {
    const Wd = 560;
    const Ht = 210;
    const L = 58;
    const R = 14;
    const T = 14;
    const B = 30;
    const budget = st.budget || 0;
    const used = records.reduce((a, r) => a + r.tokens, 0);
    const remaining = budget ? budget - used : 0;
    const projectedEnd = budget ? remaining - (st.burn_rate_daily || 0) * Math.max(0, end - now) / 86400000 : 0;
    const yMax = budget ? Math.max(budget, 1) : Math.max(used, st.total || 0, 1);
    const yMin = budget ? Math.min(0, remaining, projectedEnd) : 0;
    const x = (t) => L + ((Math.min(Math.max(t, since), end) - since) / Math.max(1, end - since)) * (Wd - L - R);
    const y = (v) => T + (1 - (v - yMin) / Math.max(1, yMax - yMin)) * (Ht - T - B);

    // The series: a step line through the ledger records.
    let level = budget || 0;
    let d = `M ${x(since)} ${y(level)}`;
    for (const r of records) {
      d += ` L ${x(r.t)} ${y(level)}`;
      level = budget ? level - r.tokens : level + r.tokens;
      d += ` L ${x(r.t)} ${y(level)}`;
    }
    d += ` L ${x(now)} ${y(level)}`;

    const fmtDay = (t) => new Date(t).toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
    const label = budget
      ? `Remaining budget: ${fmtInt(Math.max(0, remaining))} of ${fmtInt(budget)} tokens`
      : `Tokens used: ${fmtInt(used)} (no budget)`;
    return svgEl('svg', {
      class: 'burndown', viewBox: `0 0 ${Wd} ${Ht}`, role: 'img', 'aria-label': label, preserveAspectRatio: 'xMidYMid meet',
    },
    svgEl('title', {}, label),
    // axes and grid
    svgEl('line', { class: 'axis', x1: L, y1: T, x2: L, y2: Ht - B }),
    svgEl('line', { class: 'axis', x1: L, y1: y(0), x2: Wd - R, y2: y(0) }),
    budget ? svgEl('line', { class: 'grid-line', x1: L, y1: y(budget), x2: Wd - R, y2: y(budget) }) : null,
    svgEl('text', { class: 'tick', x: L - 6, y: y(yMax) + 4, 'text-anchor': 'end' }, compact(yMax)),
    svgEl('text', { class: 'tick', x: L - 6, y: y(0) + 4, 'text-anchor': 'end' }, '0'),
    yMin < 0 ? svgEl('text', { class: 'tick', x: L - 6, y: y(yMin) + 4, 'text-anchor': 'end' }, compact(yMin)) : null,
    svgEl('text', { class: 'tick', x: L, y: Ht - 10 }, fmtDay(since)),
    svgEl('text', { class: 'tick', x: Wd - R, y: Ht - 10, 'text-anchor': 'end' }, fmtDay(end - 1)),
    // the even pace, the projection, now
    budget ? svgEl('line', { class: 'ideal', x1: x(since), y1: y(budget), x2: x(end), y2: y(0) }) : null,
    budget && now < end ? svgEl('line', { class: 'projection', x1: x(now), y1: y(remaining), x2: x(end), y2: y(projectedEnd) }) : null,
    svgEl('line', { class: 'now', x1: x(now), y1: T, x2: x(now), y2: Ht - B }),
    svgEl('text', { class: 'tick', x: x(now), y: T - 3, 'text-anchor': 'middle' }, 'now'),
    svgEl('path', { class: budget ? 'series' : 'series usage', d, 'data-alert': st.alert || 'green' }),
    svgEl('circle', { class: 'series-dot', cx: x(now), cy: y(level), r: '3.5' }));
  }

  // ---------------------------------------------------------------- view: triggers

  function triggersView() {
    const operate = canOperate();
    const box = h('div', {}, muted('Loading…'));
    const root = h('section', { id: 'triggers' }, h('h1', {}, 'Triggers'), card(null, box));

    /** Fires a trigger once now, and says which job it made. */
    async function fireNow(name) {
      try {
        const fired = await post(`/api/v1/triggers/${enc(name)}/fire`, {});
        flash(`Trigger ${name} fired: job ${fired.job}${fired.debounced ? ' (folded into a waiting wake)' : ''}.`, 'done');
      } catch (e) {
        reportError(e);
      } finally {
        refreshNow();
      }
    }

    async function refresh() {
      const list = await api('/api/v1/triggers');
      if (!view.alive) return;
      const sorted = [...list].sort((a, b) => (a.next_fire ? 0 : 1) - (b.next_fire ? 0 : 1)
        || String(a.next_fire || '').localeCompare(String(b.next_fire || '')) || a.name.localeCompare(b.name));
      fill(box, table({ id: 'triggers-table' },
        ['Trigger', 'Type', 'Template', 'Agent', 'Priority', 'Schedule', 'Next fire', 'Matches', 'Debounce', 'Intent'],
        sorted.map((t) => h('tr', { 'data-trigger': t.name, 'data-suspended': t.suspended ? 'true' : null },
          h('td', { class: 'trigger-name' }, h('a', { href: `#/triggers/${enc(t.name)}` }, h('strong', {}, t.name)),
            t.suspended ? [' ', h('span', { class: 'badge', 'data-status': 'paused', title: suspendedBy(t.suspended) }, 'suspended')] : '',
            operate && t.type !== 'summon' ? [' ', h('button', { type: 'button', class: 'secondary small', 'data-trigger-fire': t.name, onclick: () => fireNow(t.name) }, 'Run now'),
              ' ', suspendButton(t, refreshNow)] : ''),
          h('td', {}, badge(t.type)),
          h('td', {}, orDash(t.template)),
          h('td', {}, orDash(t.agent)),
          h('td', {}, orDash(t.priority)),
          h('td', {}, t.schedule ? [h('code', {}, t.schedule), t.timezone ? ` (${t.timezone})` : ' (UTC)'] : '—'),
          h('td', { 'data-field': 'next_fire' }, t.next_fire ? [fmtTime(t.next_fire), ' ', h('span', { class: 'muted' }, `(${ago(t.next_fire)})`)] : '—'),
          h('td', { class: 'wrap' }, triggerMatch(t)),
          h('td', {}, t.debounce ? show(t.debounce) : '—'),
          h('td', { class: 'wrap' }, orDash(t.intent)))),
        'No triggers are defined.'));
    }

    const view = { title: 'Triggers', root, refresh, throttle: 2000 };
    return view;
  }

  /** One event of a timeline: when, its kind, who, and `what` it says. */
  function eventItem(e, what) {
    return h('li', { 'data-seq': e.seq, 'data-kind': e.kind },
      h('span', { class: 'when' }, timeEl(e.ts)),
      h('code', { class: 'kind' }, e.kind),
      h('span', { class: 'actor' }, e.actor),
      h('span', { class: 'what' }, what));
  }

  /** Who suspended a trigger, when and why. */
  function suspendedBy(s) {
    return `Suspended by ${s.by} at ${fmtTime(s.at)}${s.reason ? `: ${s.reason}` : ''}`;
  }

  /** Suspend (or Resume) for an operator: its schedule and events stop (or start again) firing it. */
  function suspendButton(t, after) {
    const verb = t.suspended ? 'resume' : 'suspend';
    return h('button', { type: 'button', class: 'secondary small', [`data-trigger-${verb}`]: t.name, onclick: async () => {
      try {
        await post(`/api/v1/triggers/${enc(t.name)}/${verb}`, verb === 'suspend' ? { reason: 'from the dashboard' } : {});
        flash(`Trigger ${t.name} ${verb === 'suspend' ? 'suspended: its schedule and events no longer fire it' : 'resumed'}.`, 'done');
      } catch (e) {
        reportError(e);
      } finally {
        after();
      }
    } }, verb === 'suspend' ? 'Suspend' : 'Resume');
  }

  // ---------------------------------------------------------------- view: one trigger

  function triggerView(name) {
    const operate = canOperate();
    const head = h('div', {}, muted('Loading…'));
    const history = h('ol', { id: 'trigger-history', class: 'timeline' });
    const root = h('section', { id: 'trigger' },
      h('h1', {}, h('a', { href: '#/triggers' }, 'Triggers'), ' / ', h('code', {}, name)),
      card(null, head), card('History', history));

    async function refresh() {
      let t;
      try {
        t = await api(`/api/v1/triggers/${enc(name)}`);
      } catch (e) {
        if (e.status === 404) return fill(head, muted(`There is no trigger ${name}.`));
        throw e;
      }
      if (!view.alive) return;
      fill(head, h('dl', { class: 'summary' },
        h('dt', {}, 'Type'), h('dd', {}, badge(t.type)),
        h('dt', {}, 'Template'), h('dd', {}, orDash(t.template)),
        h('dt', {}, 'Schedule'), h('dd', {}, t.schedule ? [h('code', {}, t.schedule), t.timezone ? ` (${t.timezone})` : ' (UTC)'] : '—'),
        h('dt', {}, 'Next fire'), h('dd', { 'data-field': 'next_fire' }, t.next_fire ? fmtTime(t.next_fire) : '—'),
        h('dt', {}, 'Matches'), h('dd', {}, triggerMatch(t)),
        h('dt', {}, 'State'), h('dd', { 'data-field': 'state' }, t.suspended ? suspendedBy(t.suspended) : 'active',
          operate && t.type !== 'summon' ? [' ', suspendButton(t, refreshNow)] : '')));
      fill(history, t.history.length
        ? t.history.map((e) => eventItem(e, e.job_id ? h('a', { href: `#/jobs/${enc(e.job_id)}` }, e.job_id) : summarize(e)))
        : h('li', { class: 'empty' }, 'Nothing yet: it has not fired.'));
    }

    const view = { title: `Trigger ${name}`, root, refresh, throttle: 1000 };
    return view;
  }

  function triggerMatch(t) {
    const parts = [];
    if (t.source) parts.push(`source ${t.source}`);
    if (t.events && t.events.length) parts.push(`events ${t.events.join(', ')}`);
    for (const [k, v] of Object.entries(t.conditions || {})) parts.push(`${k} = ${v}`);
    return parts.length ? parts.join(' · ') : '—';
  }

  // ---------------------------------------------------------------- view: not found

  function notFoundView() {
    const root = h('section', { id: 'not-found' }, h('h1', {}, 'Not found'),
      h('p', {}, 'There is no such page. ', h('a', { href: '#/' }, 'Back to the overview'), '.'));
    return { title: 'Not found', root, refresh: async () => {} };
  }

  const VIEWS = {
    overview: overviewView,
    jobs: jobsView,
    job: jobView,
    agents: agentsView,
    budgets: budgetsView,
    triggers: triggersView,
    trigger: triggerView,
    notfound: notFoundView,
  };

  // ---------------------------------------------------------------- start

  async function boot() {
    $('#login-form').addEventListener('submit', onLogin);
    $('#logout-button').addEventListener('click', () => signOut(''));
    $('#flash-close').addEventListener('click', hideFlash);
    window.addEventListener('hashchange', route);
    const token = localStorage.getItem(TOKEN_KEY);
    if (!token) {
      showLogin('');
      return;
    }
    try {
      startSession(token, await whoami(token));
    } catch (e) {
      if (e.status === 401) localStorage.removeItem(TOKEN_KEY);
      showLogin(e.message);
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();

// The relay's ops dashboard (docs/DASHBOARD.md): one page, four views behind
// hash routes, plain DOM. Everything that comes from the API is inserted as
// text (textContent, createTextNode, setAttribute), never parsed as HTML.
'use strict';

(() => {
  const OVERVIEW_EVERY_MS = 2000;
  const VIEWS = ['overview', 'events', 'dlq', 'activity'];
  const TITLES = { overview: 'Overview', events: 'Events', dlq: 'Dead letters', activity: 'Replays & activity' };
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const RATE_WINDOW_S = 600; // the API's rate covers the last 10 minutes...
  const RATE_BUCKET_S = 10; // ...in 10 s buckets
  const DLQ_LIMIT = 200; // messages listed per dead-letter queue (the API's maximum)

  const state = {
    csrf: '',
    operator: '',
    view: null,
    sources: [], // names, from the last overview
    sourceCards: new Map(),
    pollToken: 0,
    pollTimer: 0,
    lastOverviewAt: 0,
    events: { query: null, rows: [], next: null, selected: null },
    sessionLost: false,
  };

  // Uncaught errors are shown and kept for the browser test to assert on.
  window.dashboardErrors = [];
  window.addEventListener('error', (e) => {
    window.dashboardErrors.push(String(e.message || e));
    showError(`Page error: ${e.message || e}`);
  });
  window.addEventListener('unhandledrejection', (e) => {
    const reason = e.reason && e.reason.message ? e.reason.message : String(e.reason);
    window.dashboardErrors.push(reason);
    showError(`Page error: ${reason}`);
  });

  // ------------------------------------------------------------------ DOM

  const $ = (selector, root = document) => root.querySelector(selector);

  /** An element; `props`: class, testid, text, title, href, attrs, on*, dataset. */
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    setProps(node, props);
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  function setProps(node, props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (key === 'class') node.className = value;
      else if (key === 'testid') node.dataset.testid = value;
      else if (key === 'text') node.textContent = String(value);
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key === 'attrs') for (const [a, v] of Object.entries(value)) node.setAttribute(a, String(v));
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else if (key === 'hidden' || key === 'disabled') node[key] = Boolean(value);
      else node.setAttribute(key, String(value));
    }
  }

  function setText(node, text) {
    const value = text === null || text === undefined ? '' : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function clear(node) {
    node.replaceChildren();
  }

  function badge(text, kind) {
    return el('span', { class: `badge ${kind || ''}`, text });
  }

  // ---------------------------------------------------------------- format

  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }

  function timeCell(iso) {
    const node = el('span', { class: 'time', text: fmtTime(iso) });
    if (iso) {
      const d = new Date(iso);
      if (!Number.isNaN(d.getTime())) node.title = `${d.toLocaleString()} (your time) · ${fmtAgo(d)}`;
    }
    return node;
  }

  function fmtAgo(date) {
    const s = (Date.now() - date.getTime()) / 1000;
    return s >= 0 ? `${fmtDuration(s)} ago` : `in ${fmtDuration(-s)}`;
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return '—';
    const s = Number(seconds);
    if (s < 10) return `${s.toFixed(1)} s`;
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
  }

  function fmtCount(n) {
    return n === null || n === undefined ? '—' : String(n);
  }

  function fmtRate(r) {
    if (r === null || r === undefined) return '—';
    const n = Number(r);
    return `${n >= 100 ? Math.round(n) : n.toFixed(1)}/s`;
  }

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many || `${one}s`}`;
  }

  function json(value) {
    if (value === undefined) return '';
    try {
      return JSON.stringify(value, null, 2);
    } catch {
      return String(value);
    }
  }

  /** RFC 3339 UTC from what the user typed ("2026-11-23T15:00:00Z", "2026-11-23 15:00"). */
  function parseTime(text, field) {
    const t = text.trim();
    if (!t) return '';
    const withZone = /([zZ]|[+-]\d\d:?\d\d)$/.test(t) ? t : `${t}Z`;
    const d = new Date(withZone.replace(' ', 'T'));
    if (Number.isNaN(d.getTime())) throw new Error(`${field}: "${t}" is not a time; write it as 2026-11-23T15:00:00Z`);
    return d.toISOString();
  }

  // ------------------------------------------------------------- banners

  let noticeTimer = 0;

  function showError(message) {
    setText($('#error-text'), message);
    $('#error').hidden = false;
  }

  function clearError() {
    $('#error').hidden = true;
    setText($('#error-text'), '');
  }

  function notice(message) {
    const node = $('#notice');
    setText(node, message);
    node.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => {
      node.hidden = true;
    }, 8000);
  }

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (method !== 'GET') {
      headers['Content-Type'] = 'application/json';
      headers['X-CSRF-Token'] = state.csrf;
      init.body = JSON.stringify(body === undefined ? {} : body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, `The relay does not answer (${e.message}).`);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    const message = data && typeof data.error === 'string' && data.error ? data.error : '';
    if (response.status === 401) {
      sessionLost();
      throw new ApiError(401, message || 'Your session has ended: log in again.');
    }
    if (!response.ok) {
      throw new ApiError(response.status, message || `${method} ${path}: ${response.status} ${response.statusText}`);
    }
    return data;
  }

  /** The session cookie expired or the token changed: stop polling, offer the login page. */
  function sessionLost() {
    if (state.sessionLost) return;
    state.sessionLost = true;
    stopOverview();
    const banner = $('#error');
    setText($('#error-text'), 'Your session has ended. ');
    $('#error-text').append(el('a', { href: '/', testid: 'login-again', text: 'Log in again' }));
    banner.hidden = false;
  }

  /** Runs an action started by `button`: disables it meanwhile, shows a failure. */
  async function act(button, fn) {
    if (button) button.disabled = true;
    try {
      await fn();
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) showError(e.message);
    } finally {
      if (button) button.disabled = false;
    }
  }

  const enc = encodeURIComponent;

  // --------------------------------------------------------------- dialog

  /**
   * Asks for a reason (`reason: 'required' | 'optional' | 'none'`); resolves
   * with the text ('' when none), or null when cancelled.
   */
  function ask({ title, message, confirm, reason = 'required', danger = false }) {
    const dialog = $('#reason-dialog');
    const input = $('#reason-input');
    const button = $('#reason-confirm');
    setText($('#reason-title'), title);
    setText($('#reason-message'), message || '');
    setText(button, confirm || 'OK');
    button.className = danger ? 'danger' : 'primary';
    input.value = '';
    input.required = reason === 'required';
    $('#reason-label').hidden = reason === 'none';
    setText($('#reason-label').firstChild, reason === 'required' ? 'Reason (required, recorded with your name)' : 'Reason (optional, recorded with your name)');
    dialog.returnValue = '';
    return new Promise((resolve) => {
      dialog.addEventListener(
        'close',
        () => resolve(dialog.returnValue === 'ok' ? input.value.trim() : null),
        { once: true },
      );
      dialog.showModal();
      (reason === 'none' ? button : input).focus();
    });
  }

  // --------------------------------------------------------------- routing

  function parseHash() {
    const hash = location.hash.replace(/^#\/?/, '');
    const cut = hash.indexOf('?');
    const path = cut < 0 ? hash : hash.slice(0, cut);
    const params = new URLSearchParams(cut < 0 ? '' : hash.slice(cut + 1));
    return { view: VIEWS.includes(path) ? path : 'overview', params };
  }

  function route() {
    if (state.sessionLost) return;
    const { view, params } = parseHash();
    const changed = state.view !== view;
    state.view = view;
    for (const name of VIEWS) $(`#view-${name}`).hidden = name !== view;
    for (const link of document.querySelectorAll('nav.tabs a')) {
      if (link.dataset.view === view) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    document.title = `${TITLES[view]} · outbox-relay`;
    if (view === 'overview') startOverview();
    else stopOverview();
    if (view === 'events') enterEvents(params);
    if (view === 'dlq') loadDlq(params.get('queue'));
    if (view === 'activity') loadActivity();
    if (changed) window.scrollTo(0, 0);
  }

  // -------------------------------------------------------------- overview

  function startOverview() {
    stopOverview();
    const token = ++state.pollToken;
    const tick = async () => {
      if (token !== state.pollToken) return;
      if (!document.hidden) await refreshOverview();
      if (token === state.pollToken) state.pollTimer = setTimeout(tick, OVERVIEW_EVERY_MS);
    };
    tick();
  }

  function stopOverview() {
    state.pollToken++;
    clearTimeout(state.pollTimer);
  }

  async function refreshOverview() {
    const banner = $('#overview-error');
    try {
      const data = await api('GET', '/api/overview');
      banner.hidden = true;
      renderOverview(data);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      setText(banner, `Cannot refresh: ${e.message}`);
      banner.hidden = false;
    }
    markStale();
  }

  function markStale() {
    const live = $('.live');
    live.classList.toggle('stale', Date.now() - state.lastOverviewAt > 3 * OVERVIEW_EVERY_MS + 2000);
  }

  /** Updates the source names every select offers. */
  function setSources(names) {
    if (names.join('\n') === state.sources.join('\n')) return;
    state.sources = names;
    for (const id of ['#events-source', '#replay-source']) {
      const select = $(id);
      const current = select.value;
      clear(select);
      for (const name of names) select.append(el('option', { value: name, text: name }));
      if (names.includes(current)) select.value = current;
    }
  }

  function renderOverview(data) {
    state.lastOverviewAt = Date.now();
    const updated = $('#overview-updated');
    setText(updated, `updated ${fmtTime(data.generated_at)}`);
    updated.dataset.generatedAt = data.generated_at || '';
    const sources = Array.isArray(data.sources) ? data.sources : [];
    setSources(sources.map((s) => s.name));

    const list = $('#sources');
    const seen = new Set();
    for (const source of sources) {
      seen.add(source.name);
      let card = state.sourceCards.get(source.name);
      if (!card) {
        card = buildSourceCard(source.name);
        state.sourceCards.set(source.name, card);
        list.append(card.root);
      }
      updateSourceCard(card, source, data.generated_at);
    }
    for (const [name, card] of state.sourceCards) {
      if (!seen.has(name)) {
        card.root.remove();
        state.sourceCards.delete(name);
      }
    }
    if (sources.length === 0 && !$('#sources-empty')) {
      list.append(el('p', { id: 'sources-empty', class: 'muted', text: 'No sources configured (RELAY_SOURCES).' }));
    } else if (sources.length > 0 && $('#sources-empty')) {
      $('#sources-empty').remove();
    }

    renderQueues(Array.isArray(data.queues) ? data.queues : [], data.queues_error);
  }

  function buildSourceCard(name) {
    const id = (part) => `source-${name}-${part}`;
    const stat = (label, part) => {
      const dd = el('dd', { testid: id(part), text: '—' });
      const box = el('div', {}, el('dt', { text: label }), dd);
      return { box, dd };
    };
    const card = {
      name,
      paused: false,
      state: el('span', { class: 'badge', testid: id('state'), text: '…' }),
      database: el('p', { class: 'db', testid: id('database') }),
      pausedInfo: el('p', { class: 'paused-info', testid: id('paused-info'), hidden: true }),
      pending: stat('Pending', 'pending'),
      oldest: stat('Oldest pending', 'oldest'),
      parked: stat('Parked', 'parked'),
      failing: stat('Failing', 'failing'),
      published: stat('Published', 'published'),
      failures: stat('Failures', 'failures'),
      rate: el('strong', { testid: id('rate'), text: '—' }),
      peak: el('span', { testid: id('rate-peak') }),
      chart: svg('svg', {
        viewBox: `0 0 ${RATE_WINDOW_S / RATE_BUCKET_S} 40`,
        preserveAspectRatio: 'none',
        role: 'img',
        'data-testid': id('chart'),
      }),
      noData: el('span', { class: 'no-data', text: 'nothing published yet' }),
      toggle: el('button', { type: 'button', testid: id('pause'), text: 'Pause…' }),
    };
    card.toggle.addEventListener('click', () => togglePause(card));
    card.root = el(
      'article',
      { class: 'card source', testid: `source-${name}`, dataset: { source: name } },
      el('header', {}, el('h3', { text: name }), card.state),
      card.database,
      card.pausedInfo,
      el('dl', { class: 'stats' }, [card.pending, card.oldest, card.parked, card.failing, card.published, card.failures].map((s) => s.box)),
      el(
        'figure',
        { class: 'chart' },
        el('figcaption', {}, el('span', {}, 'Publish rate, 10 min'), el('span', {}, 'now ', card.rate)),
        el('div', { class: 'plot' }, card.chart, card.noData),
        el('div', { class: 'axis' }, el('span', { text: '−10 min' }), card.peak, el('span', { text: 'now' })),
      ),
      el(
        'div',
        { class: 'actions' },
        card.toggle,
        el('a', { href: `#/events?source=${enc(name)}`, testid: id('events'), text: 'Browse events' }),
        el('a', { href: `#/events?source=${enc(name)}&status=parked`, testid: id('parked-link'), text: 'Parked events' }),
      ),
    );
    return card;
  }

  function updateSourceCard(card, s, generatedAt) {
    card.paused = Boolean(s.paused);
    card.root.classList.toggle('paused', card.paused);
    card.root.dataset.state = card.paused ? 'paused' : 'running';
    setText(card.state, card.paused ? 'paused' : 'running');
    card.state.className = `badge ${card.paused ? 'warn' : 'ok'}`;
    setText(card.database, s.database || '');
    setText(card.toggle, card.paused ? 'Resume…' : 'Pause…');
    card.toggle.className = card.paused ? 'primary' : '';
    if (card.paused) {
      const by = s.paused_by ? ` by ${s.paused_by}` : '';
      const at = s.paused_at ? ` at ${fmtTime(s.paused_at)}` : '';
      const why = s.pause_reason ? `: ${s.pause_reason}` : '';
      setText(card.pausedInfo, `Paused${by}${at}${why}`);
    }
    card.pausedInfo.hidden = !card.paused;

    const put = (stat, text, value, level) => {
      setText(stat.dd, text);
      stat.dd.dataset.value = value === null || value === undefined ? '' : String(value);
      stat.box.className = level || '';
    };
    put(card.pending, fmtCount(s.pending), s.pending, s.pending > 0 && s.oldest_pending_seconds > 60 ? 'warn' : '');
    put(card.oldest, s.pending > 0 ? fmtDuration(s.oldest_pending_seconds) : '—', s.oldest_pending_seconds,
      s.oldest_pending_seconds > 60 ? 'danger' : s.oldest_pending_seconds > 5 ? 'warn' : '');
    put(card.parked, fmtCount(s.parked), s.parked, s.parked > 0 ? 'danger' : '');
    put(card.failing, fmtCount(s.failing), s.failing, s.failing > 0 ? 'warn' : '');
    put(card.published, fmtCount(s.published_total), s.published_total, '');
    put(card.failures, fmtCount(s.failures_total), s.failures_total, s.failures_total > 0 ? 'warn' : '');
    drawRate(card, Array.isArray(s.rate) ? s.rate : [], generatedAt);
  }

  /** Bars of `rate` (10 s buckets, oldest first) over the 10 minutes before `generatedAt`. */
  function drawRate(card, rate, generatedAt) {
    const slots = RATE_WINDOW_S / RATE_BUCKET_S;
    const height = 40;
    const end = Date.parse(generatedAt) || Date.now();
    const start = end - RATE_WINDOW_S * 1000;
    const values = new Array(slots).fill(null);
    const times = new Array(slots).fill(null);
    rate.forEach((point, i) => {
      const t = Date.parse(point.t);
      let slot = Number.isNaN(t) ? slots - rate.length + i : Math.floor((t - start) / (RATE_BUCKET_S * 1000));
      if (slot >= slots) slot = slots - 1;
      if (slot < 0) return;
      values[slot] = Number(point.per_second) || 0;
      times[slot] = point.t;
    });
    const max = Math.max(0, ...values.filter((v) => v !== null));
    const last = rate.length ? Number(rate[rate.length - 1].per_second) || 0 : null;
    setText(card.rate, fmtRate(last));
    setText(card.peak, max > 0 ? `peak ${fmtRate(max)}` : '');
    card.chart.dataset.points = String(rate.length);
    card.chart.setAttribute('aria-label', `Publish rate of ${card.name}: now ${fmtRate(last)}, peak ${fmtRate(max)}`);

    card.noData.hidden = rate.length > 0;
    const nodes = [svg('line', { class: 'grid', x1: 0, x2: slots, y1: height - 0.5, y2: height - 0.5 })];
    const scale = max > 0 ? (height - 2) / max : 0;
    values.forEach((v, slot) => {
      if (v === null) return;
      const h = v > 0 ? Math.max(1, v * scale) : 1;
      const bar = svg('rect', {
        class: v > 0 ? 'bar' : 'bar zero',
        x: slot + 0.1,
        y: height - h,
        width: 0.8,
        height: h,
      });
      bar.append(svg('title', {}, `${fmtTime(times[slot])}: ${fmtRate(v)}`));
      nodes.push(bar);
    });
    card.chart.replaceChildren(...nodes);
  }

  function renderQueues(queues, error) {
    const banner = $('#queues-error');
    if (error) setText(banner, `RabbitMQ's management API cannot be read: ${error}`);
    banner.hidden = !error;
    const body = $('#queues-body');
    const rows = queues.map((q) => {
      const id = (part) => `queue-${q.name}-${part}`;
      const dlqLink = q.dlq
        ? el('a', { href: `#/dlq?queue=${enc(q.dlq)}`, testid: id('dlq-link'), class: 'mono', text: q.dlq })
        : el('span', { class: 'muted', text: '—' });
      const dlqCount = q.dlq
        ? el('a', {
          href: `#/dlq?queue=${enc(q.dlq)}`,
          testid: id('dlq-messages'),
          class: q.dlq_messages > 0 ? 'danger-text' : '',
          text: fmtCount(q.dlq_messages),
        })
        : el('span', { testid: id('dlq-messages'), text: '—' });
      return el(
        'tr',
        { testid: `queue-${q.name}` },
        el('td', { class: 'mono', text: q.name }),
        el('td', { class: 'num' }, el('span', { testid: id('messages'), text: fmtCount(q.messages) })),
        el('td', { class: 'num' }, el('span', {
          testid: id('consumers'),
          // A handler's queue (it has a DLQ) that nobody consumes is a problem.
          class: q.consumers === 0 && q.dlq ? 'warn-text' : '',
          title: q.consumers === 0 && q.dlq ? 'Nobody consumes this queue' : null,
          text: fmtCount(q.consumers),
        })),
        el('td', {}, dlqLink),
        el('td', { class: 'num' }, dlqCount),
      );
    });
    if (rows.length === 0) {
      rows.push(el('tr', {}, el('td', { colspan: 5, class: 'empty', text: error ? 'Unknown while the management API cannot be read.' : 'No consumer queues.' })));
    }
    body.replaceChildren(...rows);
  }

  async function togglePause(card) {
    const resume = card.paused;
    const reason = await ask({
      title: `${resume ? 'Resume' : 'Pause'} source ${card.name}`,
      message: resume
        ? 'Every replica starts publishing this source again within a second.'
        : 'Every replica stops publishing this source within a second. Events keep being written and wait in the outbox.',
      confirm: resume ? 'Resume' : 'Pause',
      reason: resume ? 'optional' : 'required',
      danger: !resume,
    });
    if (reason === null) return;
    await act(card.toggle, async () => {
      const source = await api('POST', `/api/sources/${enc(card.name)}/${resume ? 'resume' : 'pause'}`, { reason });
      if (source && source.name === card.name) updateSourceCard(card, source, new Date().toISOString());
      notice(`Source ${card.name} ${resume ? 'resumed' : 'paused'}.`);
      if (!resume) card.toggle.focus();
    });
  }

  // ---------------------------------------------------------------- events

  const EVENT_FIELDS = ['source', 'id', 'aggregate_id', 'type', 'from', 'to', 'status', 'limit'];

  async function enterEvents(params) {
    if (state.sources.length === 0) await loadSources();
    const form = $('#events-form');
    if (![...params.keys()].length) {
      if (!form.elements.source.value && state.sources.length) form.elements.source.value = state.sources[0];
      return;
    }
    for (const field of EVENT_FIELDS) {
      const input = form.elements[field];
      if (field === 'source' && params.get('source') && !state.sources.includes(params.get('source'))) {
        input.append(el('option', { value: params.get('source'), text: params.get('source') }));
      }
      if (field === 'limit') input.value = params.get('limit') || '50';
      else input.value = params.get(field) || '';
    }
    if (params.get('source')) await searchEvents(false);
  }

  async function loadSources() {
    try {
      const data = await api('GET', '/api/overview');
      setSources((data.sources || []).map((s) => s.name));
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) showError(e.message);
    }
  }

  function eventsQuery() {
    const form = $('#events-form');
    const params = new URLSearchParams();
    const value = (name) => form.elements[name].value.trim();
    if (!value('source')) throw new Error('Choose a source.');
    params.set('source', value('source'));
    for (const name of ['id', 'aggregate_id', 'type', 'status']) if (value(name)) params.set(name, value(name));
    const from = parseTime(value('from'), 'from');
    const to = parseTime(value('to'), 'to');
    if (from) params.set('from', from);
    if (to) params.set('to', to);
    if (value('limit') && value('limit') !== '50') params.set('limit', value('limit'));
    return params;
  }

  function onEventsSubmit(e) {
    e.preventDefault();
    let params;
    try {
      params = eventsQuery();
    } catch (err) {
      showError(err.message);
      return;
    }
    const hash = `#/events?${params}`;
    if (location.hash === hash) searchEvents(false);
    else location.hash = hash; // route() runs the search
  }

  async function searchEvents(more) {
    const button = more ? $('#events-more') : $('#events-form button[type=submit]');
    await act(button, async () => {
      const params = more ? new URLSearchParams(state.events.query) : eventsQuery();
      if (more) params.set('before_seq', String(state.events.next));
      const data = await api('GET', `/api/events?${params}`);
      const events = Array.isArray(data.events) ? data.events : [];
      if (!more) {
        state.events.query = eventsQuery().toString();
        state.events.rows = [];
        closeEventDetail();
      }
      state.events.rows.push(...events);
      state.events.next = data.next_before_seq ?? null;
      renderEvents();
    });
  }

  function eventStatus(e) {
    if (e.published) return { text: 'published', kind: 'ok' };
    if (e.parked_at) return { text: 'parked', kind: 'danger' };
    if (e.attempts > 0) return { text: 'retrying', kind: 'warn' };
    return { text: 'pending', kind: '' };
  }

  function renderEvents() {
    const rows = state.events.rows;
    const source = new URLSearchParams(state.events.query || '').get('source');
    setText($('#events-summary'), rows.length
      ? `${plural(rows.length, 'event')} of ${source}, newest first${state.events.next !== null ? ' (more below)' : ''}. Click one for its payload.`
      : `No event of ${source} matches.`);
    $('#events-more').hidden = state.events.next === null || state.events.next === undefined;
    const body = $('#events-body');
    body.replaceChildren(...rows.map((e) => {
      const status = eventStatus(e);
      const row = el(
        'tr',
        { class: 'clickable', testid: `event-${e.id}`, tabindex: 0, dataset: { id: e.id, source: e.source || source } },
        el('td', { class: 'num', text: fmtCount(e.seq) }),
        el('td', {}, timeCell(e.created_at)),
        el('td', { class: 'mono nowrap', text: e.event_type }),
        el('td', { class: 'mono nowrap', title: e.aggregate_type, text: e.aggregate_id }),
        el('td', {}, el('span', { class: `badge ${status.kind}`, testid: `event-${e.id}-status`, text: status.text })),
        el('td', { class: 'num', text: fmtCount(e.attempts) }),
        el('td', {}, timeCell(e.next_attempt_at)),
      );
      const open = () => openEvent(e.source || source, e.id);
      row.addEventListener('click', open);
      row.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' || ev.key === ' ') {
          ev.preventDefault();
          open();
        }
      });
      if (state.events.selected && state.events.selected.id === e.id) row.classList.add('selected');
      return row;
    }));
    if (!rows.length) body.append(el('tr', {}, el('td', { colspan: 7, class: 'empty', text: 'No events.' })));
  }

  async function openEvent(source, id) {
    await act(null, async () => {
      const event = await api('GET', `/api/events/${enc(source)}/${enc(id)}`);
      state.events.selected = { ...event, source: event.source || source };
      renderEventDetail();
      for (const row of document.querySelectorAll('#events-body tr')) row.classList.toggle('selected', row.dataset.id === id);
      if (window.innerWidth < 1500) $('#event-detail').scrollIntoView({ block: 'start' });
    });
  }

  function renderEventDetail() {
    const e = state.events.selected;
    const status = eventStatus(e);
    setText($('#event-detail-title'), e.event_type);
    setText($('#event-detail-id'), e.id);
    setText($('#event-detail-seq'), `${e.source} · ${e.seq}`);
    setText($('#event-detail-aggregate'), `${e.aggregate_type} ${e.aggregate_id}`);
    $('#event-detail-status').replaceChildren(badge(status.text, status.kind));
    setText($('#event-detail-created'), fmtTime(e.created_at));
    setText($('#event-detail-published'), e.published ? 'yes' : 'not yet');
    setText($('#event-detail-attempts'), fmtCount(e.attempts));
    setText($('#event-detail-next'), e.next_attempt_at ? fmtTime(e.next_attempt_at) : '—');
    setText($('#event-detail-parked'), e.parked_at ? fmtTime(e.parked_at) : '—');
    setText($('#event-detail-last-error'), e.last_error || '—');
    setText($('#event-detail-payload'), json(e.payload));
    setText($('#event-detail-headers'), json(e.headers === undefined ? {} : e.headers));
    $('#event-unpark').hidden = !e.parked_at;
    $('#event-replay').hidden = !e.published;
    $('#event-aggregate-link').href = `#/events?source=${enc(e.source)}&aggregate_id=${enc(e.aggregate_id)}`;
    $('#event-detail').hidden = false;
    $('#events-table').closest('.split').classList.add('with-detail');
  }

  function closeEventDetail() {
    state.events.selected = null;
    $('#event-detail').hidden = true;
    $('#events-table').closest('.split').classList.remove('with-detail');
    for (const row of document.querySelectorAll('#events-body tr.selected')) row.classList.remove('selected');
  }

  async function unparkSelected() {
    const e = state.events.selected;
    if (!e) return;
    await act($('#event-unpark'), async () => {
      const answer = await api('POST', `/api/events/${enc(e.source)}/unpark`, { ids: [e.id] });
      notice(`${plural(answer && answer.unparked !== undefined ? answer.unparked : 1, 'event')} unparked: back in line.`);
      await openEvent(e.source, e.id);
    });
  }

  async function unparkAll() {
    const source = $('#events-source').value;
    if (!source) {
      showError('Choose a source.');
      return;
    }
    const ok = await ask({
      title: `Unpark every parked event of ${source}`,
      message: 'They go back in line and are published again (their aggregates\' later events follow).',
      confirm: 'Unpark all',
      reason: 'none',
    });
    if (ok === null) return;
    await act($('#events-unpark-all'), async () => {
      const answer = await api('POST', `/api/events/${enc(source)}/unpark`, { ids: [] });
      notice(`${plural(answer && answer.unparked !== undefined ? answer.unparked : 0, 'event')} of ${source} unparked.`);
      if (state.events.query) await searchEvents(false);
    });
  }

  async function replaySelected() {
    const e = state.events.selected;
    if (!e) return;
    const reason = await ask({
      title: `Replay ${e.event_type}`,
      message: `Publishes event ${e.id} of ${e.source} again with the same message id; consumers deduplicate it.`,
      confirm: 'Replay',
    });
    if (reason === null) return;
    await act($('#event-replay'), async () => {
      const replay = await api('POST', '/api/replays', { source: e.source, reason, ids: [e.id] });
      notice(replayNotice(replay));
    });
  }

  function replayNotice(replay) {
    const count = replay && replay.count !== undefined && replay.count !== null ? ` (${plural(replay.count, 'event')})` : '';
    const id = replay && replay.id !== undefined ? ` #${replay.id}` : '';
    return `Replay${id} recorded${count}: the events go back in line.`;
  }

  // ----------------------------------------------------------- dead letters

  let dlqLoad = 0;

  async function loadDlq(focusQueue) {
    const token = ++dlqLoad;
    await act($('#dlq-refresh'), async () => {
      const data = await api('GET', '/api/dlq');
      const queues = Array.isArray(data.queues) ? data.queues : [];
      const details = await Promise.all(queues.map(async (q) => {
        try {
          const answer = await api('GET', `/api/dlq/${enc(q.queue)}?limit=${DLQ_LIMIT}`);
          return { queue: q, messages: Array.isArray(answer.messages) ? answer.messages : [], error: null };
        } catch (e) {
          return { queue: q, messages: [], error: e.message };
        }
      }));
      if (token !== dlqLoad) return;
      const total = details.reduce((n, d) => n + dlqCount(d.queue, d.messages, d.error), 0);
      setText($('#dlq-summary'), queues.length
        ? `${plural(queues.length, 'dead-letter queue')}, ${plural(total, 'message')}.`
        : 'No dead-letter queues.');
      // Queues with messages first, then by name.
      details.sort((a, b) => (b.messages.length > 0) - (a.messages.length > 0) || a.queue.queue.localeCompare(b.queue.queue));
      $('#dlq-list').replaceChildren(...details.map(renderDlqQueue));
      if (focusQueue) {
        const section = [...document.querySelectorAll('#dlq-list .dlq')].find((s) => s.dataset.queue === focusQueue);
        if (section) {
          section.classList.add('highlight');
          section.scrollIntoView({ block: 'start' });
        }
      }
    });
  }

  /**
   * Messages in a DLQ: the list just read, unless it is cut at the limit;
   * then RabbitMQ's count (its statistics lag a few seconds behind).
   */
  function dlqCount(q, messages, error) {
    const stats = Number(q.messages) || 0;
    if (error) return stats;
    return messages.length < DLQ_LIMIT ? messages.length : Math.max(messages.length, stats);
  }

  function renderDlqQueue({ queue: q, messages, error }) {
    const name = q.queue;
    const count = dlqCount(q, messages, error);
    const retryAll = el('button', { type: 'button', class: 'small', testid: `dlq-retry-all-${name}`, text: 'Retry all', disabled: count === 0 });
    const discardAll = el('button', { type: 'button', class: 'small danger', testid: `dlq-discard-all-${name}`, text: 'Discard all…', disabled: count === 0 });
    retryAll.addEventListener('click', () => retryAllOf(name, retryAll));
    discardAll.addEventListener('click', () => discardFrom(name, null, discardAll));

    const section = el(
      'section',
      { class: 'card dlq', testid: `dlq-queue-${name}`, dataset: { queue: name } },
      el(
        'header',
        {},
        el('div', {},
          el('h3', { text: name }),
          el('span', { class: 'muted' }, 'work queue ', el('span', { class: 'mono', text: q.work_queue || '—' }))),
        el('div', { class: 'actions' },
          el('span', { class: count > 0 ? 'badge danger' : 'badge', testid: `dlq-count-${name}`, text: plural(count, 'message') }),
          retryAll,
          discardAll),
      ),
    );
    if (error) {
      section.append(el('p', { class: 'banner error inline note', text: `Cannot read the messages: ${error}` }));
      return section;
    }
    if (messages.length === 0) {
      section.append(el('p', { class: 'muted note', text: 'Empty.' }));
      return section;
    }
    if (count > messages.length) {
      section.append(el('p', { class: 'muted note', text: `Showing the first ${messages.length} of ${count}.` }));
    }
    const rows = messages.map((m, i) => renderDlqMessage(name, m, i));
    section.append(el('div', { class: 'table-wrap' }, el(
      'table',
      { testid: `dlq-table-${name}` },
      el('thead', {}, el('tr', {},
        el('th', { scope: 'col', text: 'Message' }),
        el('th', { scope: 'col', text: 'Type' }),
        el('th', { scope: 'col', text: 'Error' }),
        el('th', { scope: 'col', text: 'Kind' }),
        el('th', { scope: 'col', text: 'Handler' }),
        el('th', { scope: 'col', text: 'Failed at' }),
        el('th', { scope: 'col', class: 'num', text: 'Attempt' }),
        el('th', { scope: 'col', text: '' }))),
      el('tbody', {}, rows),
    )));
    return section;
  }

  function renderDlqMessage(queue, m, index) {
    const id = m.message_id || '';
    const key = id || `index-${index}`;
    const retry = el('button', { type: 'button', class: 'small', testid: `dlq-retry-${key}`, dataset: { queue }, text: 'Retry', disabled: !id });
    const discard = el('button', { type: 'button', class: 'small danger', testid: `dlq-discard-${key}`, dataset: { queue }, text: 'Discard…', disabled: !id });
    if (!id) {
      retry.title = 'This message has no message id: use Retry all.';
      discard.title = 'This message has no message id: use Discard all.';
    }
    retry.addEventListener('click', () => retryOne(queue, id, retry));
    discard.addEventListener('click', () => discardFrom(queue, id, discard));
    const kindLevel = m.error_kind === 'exhausted' ? 'warn' : 'danger';
    return el(
      'tr',
      { testid: `dlq-msg-${key}`, dataset: { queue, messageId: id } },
      el('td', { class: 'mono', title: id, text: id || '(no id)' }),
      el('td', { class: 'mono nowrap', text: m.type || m.routing_key || '—' }),
      el('td', { class: 'error-cell' }, el(
        'details',
        {},
        el('summary', { testid: `dlq-error-${key}`, text: m.error || '(no error recorded)' }),
        el('h3', { text: 'Body' }),
        el('pre', { class: 'json', testid: `dlq-body-${key}`, text: prettyBody(m.body) }),
        el('h3', { text: 'Headers' }),
        el('pre', { class: 'json', testid: `dlq-headers-${key}`, text: json(m.headers || {}) }),
        el('p', { class: 'muted', text: `from ${m.exchange || '(default exchange)'} with routing key ${m.routing_key || '—'}` }),
      )),
      el('td', {}, m.error_kind ? badge(m.error_kind, kindLevel) : '—'),
      el('td', { class: 'mono nowrap', text: m.handler || '—' }),
      el('td', {}, timeCell(m.failed_at)),
      el('td', { class: 'num', text: fmtCount(m.attempt) }),
      el('td', {}, el('div', { class: 'actions' }, retry, discard)),
    );
  }

  function prettyBody(body) {
    if (body === null || body === undefined) return '';
    if (typeof body !== 'string') return json(body);
    try {
      return JSON.stringify(JSON.parse(body), null, 2);
    } catch {
      return body;
    }
  }

  async function retryOne(queue, id, button) {
    await act(button, async () => {
      const answer = await api('POST', `/api/dlq/${enc(queue)}/retry`, { message_ids: [id] });
      notice(`${plural(answer && answer.retried !== undefined ? answer.retried : 1, 'message')} sent back to ${queue.replace(/\.dlq$/, '')}.`);
    });
    await loadDlq(null);
  }

  async function retryAllOf(queue, button) {
    const ok = await ask({
      title: `Retry every message of ${queue}`,
      message: 'They go back to the work queue with their attempt count reset.',
      confirm: 'Retry all',
      reason: 'none',
    });
    if (ok === null) return;
    await act(button, async () => {
      const answer = await api('POST', `/api/dlq/${enc(queue)}/retry`, { all: true });
      notice(`${plural(answer && answer.retried !== undefined ? answer.retried : 0, 'message')} sent back to ${queue.replace(/\.dlq$/, '')}.`);
    });
    await loadDlq(null);
  }

  /** Discards one message (`id`) or, with `id` null, every message of `queue`. */
  async function discardFrom(queue, id, button) {
    const reason = await ask({
      title: id ? 'Discard this message' : `Discard every message of ${queue}`,
      message: id
        ? `Message ${id} is removed from ${queue}; its body is kept in the audit log.`
        : `Every message of ${queue} is removed; their bodies are kept in the audit log.`,
      confirm: id ? 'Discard' : 'Discard all',
      danger: true,
    });
    if (reason === null) return;
    await act(button, async () => {
      const body = id ? { message_ids: [id], reason } : { all: true, reason };
      const answer = await api('POST', `/api/dlq/${enc(queue)}/discard`, body);
      notice(`${plural(answer && answer.discarded !== undefined ? answer.discarded : 0, 'message')} discarded from ${queue}.`);
    });
    await loadDlq(null);
  }

  // -------------------------------------------------------------- activity

  async function loadActivity() {
    if (state.sources.length === 0) loadSources();
    await act($('#activity-refresh'), async () => {
      const [replays, audit] = await Promise.all([api('GET', '/api/replays'), api('GET', '/api/audit')]);
      renderEntries($('#replays-body'), replays.entries || [], 'replay', true);
      renderEntries($('#audit-body'), audit.entries || [], 'audit', false);
    });
  }

  function renderEntries(body, entries, prefix, replays) {
    const rows = entries.map((e) => {
      const detail = e.detail && typeof e.detail === 'object' && Object.keys(e.detail).length
        ? el('details', {}, el('summary', { text: 'detail' }), el('pre', { class: 'json', text: json(e.detail) }))
        : null;
      const cells = [
        el('td', {}, timeCell(e.at)),
        el('td', { text: e.by || '—' }),
      ];
      if (!replays) cells.push(el('td', {}, badge(e.action || '—', actionLevel(e.action))));
      cells.push(
        el('td', { text: e.source || '—' }),
        el('td', { class: 'wrap' }, el('span', { text: e.target || '—' }), detail),
        el('td', { class: 'num', text: fmtCount(e.count) }),
        el('td', { class: 'wrap', text: e.reason || '—' }),
      );
      return el('tr', { testid: `${prefix}-${e.id}`, dataset: { action: e.action || '' } }, cells);
    });
    if (!rows.length) rows.push(el('tr', {}, el('td', { colspan: replays ? 6 : 7, class: 'empty', text: replays ? 'No replay yet.' : 'No action yet.' })));
    body.replaceChildren(...rows);
  }

  function actionLevel(action) {
    if (action === 'dlq-discard' || action === 'pause') return 'warn';
    if (action === 'resume' || action === 'dlq-retry' || action === 'unpark') return 'ok';
    return '';
  }

  function onReplayModeChange() {
    const mode = $('#replay-mode').value;
    for (const label of document.querySelectorAll('#replay-form [data-mode]')) label.hidden = label.dataset.mode !== mode;
  }

  async function onReplaySubmit(e) {
    e.preventDefault();
    const form = $('#replay-form');
    const button = form.querySelector('button[type=submit]');
    await act(button, async () => {
      const source = form.elements.source.value;
      const reason = form.elements.reason.value.trim();
      if (!source) throw new Error('Choose a source.');
      if (!reason) throw new Error('A reason is required.');
      const body = { source, reason };
      const mode = form.elements.mode.value;
      if (mode === 'ids') {
        const ids = form.elements.ids.value.split(/[\s,;]+/).filter(Boolean);
        if (!ids.length) throw new Error('List at least one event id.');
        body.ids = ids;
      } else if (mode === 'aggregate') {
        const aggregate = form.elements.aggregate_id.value.trim();
        if (!aggregate) throw new Error('Give the aggregate id.');
        body.aggregate_id = aggregate;
      } else {
        body.from = parseTime(form.elements.from.value, 'from');
        body.to = parseTime(form.elements.to.value, 'to');
        if (!body.from || !body.to) throw new Error('Give both ends of the time range.');
      }
      const replay = await api('POST', '/api/replays', body);
      notice(replayNotice(replay));
      form.elements.reason.value = '';
      form.elements.ids.value = '';
    });
    await loadActivity();
  }

  // ----------------------------------------------------------------- start

  async function logout() {
    const button = $('#logout');
    button.disabled = true;
    try {
      const response = await fetch('/logout', {
        method: 'POST',
        headers: { 'X-CSRF-Token': state.csrf },
        credentials: 'same-origin',
        redirect: 'manual',
      });
      if (response.type !== 'opaqueredirect' && !response.ok && response.status !== 401) {
        let message = `Log out failed: ${response.status}`;
        try {
          const data = await response.json();
          if (data && data.error) message = data.error;
        } catch {
          // not JSON: keep the status
        }
        throw new Error(message);
      }
      stopOverview();
      location.replace('/');
    } catch (e) {
      showError(e.message);
      button.disabled = false;
    }
  }

  function wire() {
    $('#error-dismiss').addEventListener('click', clearError);
    $('#logout').addEventListener('click', logout);
    $('#events-form').addEventListener('submit', onEventsSubmit);
    $('#events-form').addEventListener('reset', () => {
      setTimeout(() => {
        if (state.sources.length) $('#events-source').value = state.sources[0];
      });
    });
    $('#events-more').addEventListener('click', () => searchEvents(true));
    $('#event-detail-close').addEventListener('click', closeEventDetail);
    $('#event-unpark').addEventListener('click', unparkSelected);
    $('#event-replay').addEventListener('click', replaySelected);
    $('#events-unpark-all').addEventListener('click', unparkAll);
    $('#dlq-refresh').addEventListener('click', () => loadDlq(null));
    $('#activity-refresh').addEventListener('click', loadActivity);
    $('#replay-mode').addEventListener('change', onReplayModeChange);
    $('#replay-form').addEventListener('submit', onReplaySubmit);
    window.addEventListener('hashchange', route);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && state.view === 'overview') startOverview();
    });
    setInterval(markStale, 1000);
  }

  async function start() {
    wire();
    try {
      const session = await api('GET', '/api/session');
      state.csrf = session.csrf_token || '';
      state.operator = session.operator || '';
      setText($('#operator'), state.operator || '(unnamed)');
      document.body.dataset.ready = 'true';
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) showError(`Cannot start: ${e.message}`);
      return;
    }
    route();
  }

  start();
})();

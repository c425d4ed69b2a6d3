// Sluice status page. It polls the admin API (GET /admin/status every
// second, the dead letters every few seconds) and updates the page in place,
// so that keyboard focus and a screen reader's position survive each update.
// No framework and no build step: this file is what the browser runs.
'use strict';

(() => {
  const STATUS_EVERY_MS = 1000;
  const DEADLETTERS_EVERY_MS = 3000;
  const TICK_MS = 250; // countdowns
  const SHOWN = 20; // dead letters listed
  const DAY_MS = 24 * 60 * 60e3; // how far back the list looks
  const PAGE = 1000; // records per list call, the API's maximum
  const MAX_PAGES = 10; // list calls per refresh
  const FULL_EVERY = 20; // refreshes between scans from the start
  const TOKEN_KEY = 'sluice.admin-token';

  const $ = (id) => document.getElementById(id);

  // ---- storage and the token ---------------------------------------------

  function loadToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch {
      return ''; // storage disabled: the token lives in memory only
    }
  }

  function saveToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // storage disabled: keep it in memory only
    }
  }

  let token = loadToken();
  let signedOut = false; // the API answered 401: polling waits for a token

  // ---- the API -----------------------------------------------------------

  class AuthError extends Error {}

  class APIError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, init = {}) {
    const headers = new Headers(init.headers || {});
    if (token) headers.set('Authorization', 'Bearer ' + token);
    const resp = await fetch(path, { ...init, headers, cache: 'no-store' });
    if (resp.status === 401) {
      askForToken();
      throw new AuthError('the admin API wants a token');
    }
    const text = await resp.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!resp.ok) {
      const e = (body && body.error) || {};
      throw new APIError(resp.status, e.code || '', e.message || `HTTP ${resp.status}`);
    }
    return { body, resp };
  }

  // ---- small DOM helpers -------------------------------------------------

  let lastID = 0;
  const uid = (prefix) => `${prefix}-${++lastID}`;

  // el builds an element: el('td', {className: 'x'}, 'text', child...).
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'dataset') Object.assign(e.dataset, v);
      else if (k in e) e[k] = v; // a property: className, htmlFor, hidden, ...
      else e.setAttribute(k, v); // aria-*
    }
    e.append(...children);
    return e;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function setState(node, state) {
    for (const c of ['ok', 'warn', 'bad']) node.classList.toggle('state-' + c, c === state);
  }

  // reconcile makes container's children match items, in order, reusing the
  // element already made for each key. It removes stale elements first and
  // moves an element only when the order changed, so a focused button stays
  // focused across updates.
  function reconcile(container, items, key, make, update) {
    const want = new Set(items.map(key));
    for (const child of [...container.children]) {
      if (!want.has(child.dataset.key)) child.remove();
    }
    const have = new Map([...container.children].map((c) => [c.dataset.key, c]));
    items.forEach((item, i) => {
      const k = key(item);
      let node = have.get(k);
      if (!node) {
        node = make(item);
        node.dataset.key = k;
      }
      update(node, item);
      if (container.children[i] !== node) container.insertBefore(node, container.children[i] || null);
    });
  }

  // ---- numbers and times -------------------------------------------------

  const num = (n) =>
    Number(n || 0).toLocaleString(undefined, { maximumFractionDigits: Math.abs(n) < 100 ? 1 : 0 });

  // Go writes nanoseconds; Date.parse is only sure to read milliseconds.
  function parseTime(s) {
    if (!s) return NaN;
    return Date.parse(String(s).replace(/(\.\d{3})\d+/, '$1'));
  }

  // clockOffset is the server's clock minus this browser's, in ms, from the
  // X-Sluice-Time header of the last status: the countdowns run on the
  // server's clock.
  let clockOffset = 0;
  const serverNow = () => Date.now() + clockOffset;

  function duration(ms) {
    if (ms <= 0) return 'now';
    const s = ms / 1000;
    if (s < 10) return `${s.toFixed(1)} s`;
    if (s < 120) return `${Math.round(s)} s`;
    const m = Math.floor(s / 60);
    if (m < 120) return `${m} min ${Math.round(s - m * 60)} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  const clock = (ms) => new Date(ms - clockOffset).toLocaleTimeString();

  function localTime(iso) {
    const t = parseTime(iso);
    if (isNaN(t)) return el('span', { className: 'muted' }, '—');
    const d = new Date(t);
    return el('time', { dateTime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
  }

  // Countdowns: elements with data-until (a server time in ms) and
  // data-prefix are rewritten on every tick, between two polls.
  function tick() {
    for (const node of document.querySelectorAll('[data-until]')) {
      const left = Number(node.dataset.until) - serverNow();
      setText(node, left > 0 ? `${node.dataset.prefix} ${duration(left)}` : node.dataset.done);
    }
  }

  function countdown(node, until, prefix, done) {
    if (isNaN(until)) {
      delete node.dataset.until;
      setText(node, '');
      return;
    }
    node.dataset.until = String(until);
    node.dataset.prefix = prefix;
    node.dataset.done = done;
  }

  // ---- connection banner -------------------------------------------------

  const problems = new Map(); // source -> message

  function problem(source, message) {
    if (message) problems.set(source, message);
    else problems.delete(source);
    const banner = $('conn');
    const text = [...problems.values()].join(' ');
    setText(banner, text);
    banner.hidden = text === '';
  }

  function report(source, err) {
    if (err instanceof AuthError) return; // the token form says it
    if (err instanceof APIError) {
      problem(source, `The ${source} request failed: ${err.message} (HTTP ${err.status}). Retrying.`);
    } else {
      problem(source, `Cannot reach Sluice's admin listener for the ${source}. Retrying.`);
    }
  }

  // ---- the token form ----------------------------------------------------

  function askForToken() {
    const section = $('auth');
    const refused = token !== '';
    token = '';
    saveToken('');
    $('signout').hidden = true;
    const err = $('auth-error');
    if (refused) {
      err.textContent = 'The admin API refused that token. Enter it again.';
      err.hidden = false;
    }
    if (!signedOut) {
      signedOut = true;
      section.hidden = false;
      setText($('providers-empty'), 'Sign in to see the status.');
      $('providers-empty').hidden = false;
      $('token').focus();
    }
  }

  function signIn(ev) {
    ev.preventDefault();
    const input = $('token');
    const value = input.value.trim();
    if (!value) return;
    token = value;
    saveToken(value);
    input.value = '';
    signedOut = false;
    $('auth').hidden = true;
    $('auth-error').hidden = true;
    $('signout').hidden = false;
    $('main').focus();
    refreshStatus();
    refreshDeadLetters();
  }

  function signOut() {
    token = '';
    saveToken('');
    $('signout').hidden = true;
    refreshStatus();
  }

  // ---- status ------------------------------------------------------------

  let statusSent = 0;
  let statusShown = 0;

  async function refreshStatus() {
    const seq = ++statusSent;
    const sent = Date.now();
    try {
      const { body, resp } = await api('/admin/status');
      if (seq < statusShown) return; // a later answer is already shown
      statusShown = seq;
      const server = parseTime(resp.headers.get('X-Sluice-Time'));
      if (!isNaN(server)) clockOffset = server - (sent + Date.now()) / 2;
      renderStatus(body || {});
      problem('status', '');
    } catch (err) {
      report('status', err);
    }
  }

  function renderStatus(doc) {
    setText($('mode'), doc.mode === 'shared' ? 'shared (Redis)' : doc.mode || 'unknown');
    setText($('replica'), doc.replica || (doc.mode === 'shared' ? 'unknown' : 'this process only'));
    const redis = $('redis');
    if (doc.redis_up === undefined) {
      setText(redis, 'not used');
      setState(redis, '');
    } else {
      setText(redis, doc.redis_up ? 'up' : 'down: limits held locally, dead letters spooled to disk');
      setState(redis, doc.redis_up ? 'ok' : 'bad');
    }
    const now = new Date();
    $('updated').dateTime = now.toISOString();
    setText($('updated'), now.toLocaleTimeString());

    const providers = doc.providers || [];
    $('providers-empty').hidden = providers.length > 0;
    setText($('providers-empty'), 'No providers are configured.');
    reconcile($('providers'), providers, (p) => p.name, makeProvider, updateProvider);
    tick();
  }

  function makeProvider(p) {
    const h = uid('provider');
    const card = el('article', { className: 'card provider', 'aria-labelledby': h, dataset: { provider: p.name } });
    card.append(
      el('h3', { id: h }, p.name, ' ', el('span', { className: 'tag default-tag', hidden: !p.default }, 'default')),
      el('p', { className: 'upstream' }, 'Upstream ', el('code', {}, p.upstream || '')),
      el('dl', { className: 'facts' },
        el('div', {},
          el('dt', {}, 'Breaker'),
          el('dd', {}, el('span', { className: 'badge breaker-state' }), ' ', el('span', { className: 'breaker-until' }))),
        el('div', {}, el('dt', {}, 'In flight'), el('dd', { className: 'provider-inflight' }))),
      el('div', { className: 'scopes' }));
    return card;
  }

  function updateProvider(card, p) {
    const state = p.breaker || 'unknown';
    const badge = card.querySelector('.breaker-state');
    setText(badge, state);
    setState(badge, state === 'closed' ? 'ok' : state === 'open' ? 'bad' : 'warn');
    const until = card.querySelector('.breaker-until');
    if (state === 'open') {
      countdown(until, parseTime(p.breaker_open_until), 'probes again in', 'probing soon');
    } else {
      countdown(until, NaN);
      setText(until, state === 'half-open' ? 'probing the upstream' : '');
    }
    setText(card.querySelector('.provider-inflight'), num(p.inflight));
    reconcile(card.querySelector('.scopes'), p.scopes || [], (s) => s.name,
      (s) => makeScope(p, s), updateScope);
  }

  function makeScope(p, s) {
    const h = uid('scope');
    const title = s.name === p.name ? 'Provider quota' : `Model ${s.name.slice(p.name.length + 1) || s.name}`;
    return el('section', { className: 'scope', 'aria-labelledby': h, dataset: { scope: s.name } },
      el('h4', { id: h }, title),
      el('p', { className: 'pause' },
        el('span', { className: 'badge pause-state' }), ' ', el('span', { className: 'pause-until' })),
      el('table', { className: 'classes' },
        el('caption', {}, 'Queues by priority class'),
        el('thead', {}, el('tr', {},
          el('th', { scope: 'col' }, 'Class'),
          el('th', { scope: 'col' }, 'Queued'),
          el('th', { scope: 'col' }, 'In flight'))),
        el('tbody', {})),
      el('div', { className: 'buckets' }));
  }

  function updateScope(section, s) {
    const until = parseTime(s.paused_until);
    const paused = !isNaN(until) && until > serverNow();
    section.classList.toggle('is-paused', paused);
    const badge = section.querySelector('.pause-state');
    setText(badge, paused ? 'paused' : 'not paused');
    setState(badge, paused ? 'bad' : 'ok');
    const left = section.querySelector('.pause-until');
    if (paused) countdown(left, until, 'at the provider’s request; resumes in', 'resuming');
    else countdown(left, NaN);

    reconcile(section.querySelector('tbody'), s.classes || [], (c) => c.name, (c) =>
      el('tr', { dataset: { class: c.name } },
        el('th', { scope: 'row' }, c.name),
        el('td', { className: 'queued' }),
        el('td', { className: 'inflight' })),
    (row, c) => {
      setText(row.querySelector('.queued'), String(c.queued || 0));
      setText(row.querySelector('.inflight'), String(c.inflight || 0));
      row.classList.toggle('busy', (c.queued || 0) > 0);
    });

    reconcile(section.querySelector('.buckets'), s.buckets || [], (b) => b.key, makeBucket, updateBucket);
  }

  function makeBucket(b) {
    const h = uid('bucket');
    return el('div', { className: 'bucket', role: 'group', 'aria-labelledby': h },
      el('h5', { id: h }, 'Limits of ', el('code', {}, b.key)),
      el('p', { className: 'muted no-limits' }, 'No limits configured: only pauses and the breaker hold requests.'),
      el('div', { className: 'gauges' }));
  }

  // gauges lists what a bucket limits: used = capacity - available.
  function gauges(b) {
    const out = [];
    if (b.request_capacity) {
      const used = clamp(b.request_capacity - (b.requests_available || 0), b.request_capacity);
      out.push({ kind: 'requests', label: 'Requests', value: used, max: b.request_capacity,
        text: `${num(used)} of ${num(b.request_capacity)} used (burst), ${num(b.requests_per_minute)}/min` });
    }
    if (b.token_capacity) {
      const used = clamp(b.token_capacity - (b.tokens_available || 0), b.token_capacity);
      out.push({ kind: 'tokens', label: 'Tokens', value: used, max: b.token_capacity,
        text: `${num(used)} of ${num(b.token_capacity)} used (burst), ${num(b.tokens_per_minute)}/min` });
    }
    if (b.max_concurrency) {
      out.push({ kind: 'concurrency', label: 'Concurrency', value: b.inflight || 0, max: b.max_concurrency,
        text: `${num(b.inflight || 0)} of ${num(b.max_concurrency)} in flight` });
    }
    return out;
  }

  const clamp = (v, max) => Math.min(Math.max(v, 0), max);

  function updateBucket(div, b) {
    const list = gauges(b);
    div.querySelector('.no-limits').hidden = list.length > 0;
    reconcile(div.querySelector('.gauges'), list, (g) => g.kind, (g) => {
      const id = uid('meter');
      const text = uid('meter-text');
      return el('div', { className: 'gauge', dataset: { kind: g.kind } },
        el('label', { htmlFor: id }, g.label),
        el('meter', { id, min: 0, 'aria-describedby': text }),
        el('span', { id: text, className: 'nums' }));
    }, (node, g) => {
      const m = node.querySelector('meter');
      m.max = g.max;
      m.value = g.value;
      m.low = g.max * 0.5;
      m.high = g.max * 0.8;
      m.optimum = 0;
      setText(node.querySelector('.nums'), g.text);
    });
  }

  // ---- dead letters ------------------------------------------------------

  const shown = new Map(); // id -> record, as listed

  // The list API pages oldest first, so the newest records come at the end
  // of a scan, and a scan of a Redis stream reads it from its start. So the
  // page remembers where the records it shows begin (resume: the cursor of
  // the page that holds the oldest of them) and the next refresh reads from
  // there: what it shows, with fresh replay marks, plus what is new. Every
  // FULL_EVERY refreshes it scans the day again, which brings back older
  // records when shown ones were deleted.
  let resume = '';
  let carried = []; // {rec, from} kept from a scan cut at MAX_PAGES
  let refreshes = 0;

  // scan returns the newest SHOWN records of the last day, oldest first,
  // and whether the scan was cut short (more remain to read).
  async function scan() {
    if (++refreshes % FULL_EVERY === 0) {
      resume = '';
      carried = [];
    }
    const since = new Date(serverNow() - DAY_MS).toISOString();
    let kept = carried;
    let after = resume;
    for (let pages = 1; ; pages++) {
      const q = new URLSearchParams({ since, limit: String(PAGE) });
      if (after) q.set('after', after);
      let body;
      try {
        ({ body } = await api('/admin/deadletters?' + q));
      } catch (err) {
        if (after && err instanceof APIError && err.code === 'not_found') {
          // The cursor was a record, since deleted: read from the start.
          resume = '';
          carried = [];
          refreshes = 0;
          return scan();
        }
        throw err;
      }
      const from = after;
      kept = kept.concat(((body && body.records) || []).map((rec) => ({ rec, from }))).slice(-SHOWN);
      const next = body && body.next;
      if (!next) {
        resume = kept.length > 0 ? kept[0].from : from;
        carried = [];
        return { records: kept.map((k) => k.rec), cut: false };
      }
      if (pages >= MAX_PAGES) {
        resume = next; // go on from here next time
        carried = kept;
        return { records: kept.map((k) => k.rec), cut: true };
      }
      after = next;
    }
  }

  function byFailedAtDesc(a, b) {
    return (parseTime(b.failed_at) || 0) - (parseTime(a.failed_at) || 0) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
  }

  // refreshDeadLetters runs one scan at a time, since scans share the
  // cursor; a call during a scan asks for one more after it.
  let scanning = null;
  let again = false;

  function refreshDeadLetters() {
    if (scanning) {
      again = true;
      return scanning;
    }
    scanning = (async () => {
      try {
        do {
          again = false;
          await refreshOnce();
        } while (again);
      } finally {
        scanning = null;
      }
    })();
    return scanning;
  }

  async function refreshOnce() {
    try {
      const { records, cut } = await scan();
      renderDeadLetters(records.sort(byFailedAtDesc), cut);
      problem('dead letters', '');
    } catch (err) {
      if (err instanceof APIError && err.status === 404) {
        setText($('dl-summary'), 'This Sluice serves no dead-letter API.');
        problem('dead letters', '');
        return;
      }
      report('dead letters', err);
    }
  }

  function renderDeadLetters(records, cut) {
    shown.clear();
    for (const r of records) shown.set(r.id, r);
    const n = records.length;
    let summary = n === 0 ? 'No dead letters in the last 24 hours.'
      : `The newest ${n === 1 ? 'dead letter' : `${n} dead letters`} of the last 24 hours, newest first.`;
    if (cut) {
      summary += ' Many more failed recently: still reading them, so these may not be the newest yet.';
    }
    setText($('dl-summary'), summary);
    $('dl-table').hidden = records.length === 0;
    reconcile($('dl-rows'), records, (r) => r.id, makeRow, updateRow);
  }

  function makeRow(r) {
    return el('tr', { dataset: { id: r.id } },
      el('td', {}, el('code', {}, r.id)),
      el('td', { className: 'failed' }),
      el('td', { className: 'provider' }),
      el('td', { className: 'class' }),
      el('td', { className: 'kind' }),
      el('td', { className: 'last-status' }),
      el('td', { className: 'replay-status' }),
      el('td', { className: 'actions' },
        el('button', { type: 'button', dataset: { action: 'show' }, 'aria-label': `Show dead letter ${r.id}` }, 'Show'),
        ' ',
        el('button', { type: 'button', dataset: { action: 'replay' }, 'aria-label': `Replay dead letter ${r.id}` }, 'Replay')));
  }

  function updateRow(row, r) {
    const failed = row.querySelector('.failed');
    if (failed.dataset.at !== r.failed_at) {
      failed.dataset.at = r.failed_at;
      failed.replaceChildren(localTime(r.failed_at));
    }
    setText(row.querySelector('.provider'), r.provider || '');
    setText(row.querySelector('.class'), r.class || '');
    setText(row.querySelector('.kind'), r.error_kind || '');
    setText(row.querySelector('.last-status'), r.last_status ? String(r.last_status) : 'no response');
    const rs = row.querySelector('.replay-status');
    if (r.replay_status) {
      setText(rs, `${r.replay_status} at ${new Date(parseTime(r.replayed_at)).toLocaleTimeString()}`);
      setState(rs, r.replay_status >= 200 && r.replay_status < 300 ? 'ok' : 'bad');
    } else {
      setText(rs, 'not replayed');
      setState(rs, '');
    }
  }

  // ---- show and replay ---------------------------------------------------

  let opener = null;

  async function showRecord(id, button) {
    let rec = shown.get(id);
    let note = '';
    try {
      rec = (await api('/admin/deadletters/' + encodeURIComponent(id))).body;
    } catch (err) {
      if (err instanceof AuthError) return;
      note = err instanceof APIError ? `(${err.message}; showing the record as listed)` : '(Sluice did not answer; showing the record as listed)';
    }
    opener = button;
    setText($('record-h'), `Dead letter ${id}`);
    setText($('record-json'), (note ? note + '\n' : '') + JSON.stringify(rec, null, 2));
    $('record-dialog').showModal();
  }

  function outcome(text, state) {
    const out = $('replay-outcome');
    out.textContent = text; // always rewritten, so a repeated outcome is announced again
    setState(out, state || '');
  }

  const replaying = new Set();

  async function replay(id, button) {
    if (replaying.has(id)) return;
    replaying.add(id);
    // aria-disabled, not disabled: a disabled button would drop the focus.
    button.setAttribute('aria-disabled', 'true');
    outcome(`Replaying dead letter ${id}…`);
    const req = {};
    const key = $('api-key').value.trim();
    if (key) req.api_key = key;
    if ($('force').checked) req.force = true;
    try {
      const { body: r } = await api(`/admin/deadletters/${encodeURIComponent(id)}/replay`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(req),
      });
      if (r.delivered) {
        outcome(`Dead letter ${id} replayed: delivered, status ${r.status}.`, 'ok');
      } else {
        outcome(`Dead letter ${id} replayed but not delivered: status ${r.status}${r.error ? `, ${r.error}` : ''}.`, 'bad');
      }
    } catch (err) {
      if (err instanceof AuthError) {
        outcome('Sign in to replay dead letters.', 'bad');
      } else if (err instanceof APIError && err.code === 'no_api_key') {
        $('replay-options').open = true;
        outcome(`Dead letter ${id} was not replayed: it needs an API key. ${err.message}. ` +
          'Enter a key for its provider under Replay options, then replay it again.', 'bad');
        $('api-key').focus();
      } else if (err instanceof APIError && err.code === 'already_replayed') {
        $('replay-options').open = true;
        outcome(`Dead letter ${id} was not replayed: ${err.message}. ` +
          'To send it again, tick the box under Replay options.', 'warn');
      } else if (err instanceof APIError) {
        outcome(`Dead letter ${id} was not replayed: ${err.message} (HTTP ${err.status}).`, 'bad');
      } else {
        outcome(`Dead letter ${id} was not replayed: Sluice's admin listener did not answer.`, 'bad');
      }
    } finally {
      replaying.delete(id);
      button.removeAttribute('aria-disabled');
      refreshDeadLetters();
    }
  }

  function onRowClick(ev) {
    const button = ev.target.closest('button[data-action]');
    if (!button) return;
    const id = button.closest('tr').dataset.id;
    if (button.dataset.action === 'show') showRecord(id, button);
    else if (button.dataset.action === 'replay') replay(id, button);
  }

  // ---- start -------------------------------------------------------------

  function every(ms, fn) {
    const loop = async () => {
      if (!signedOut) await fn();
      setTimeout(loop, ms);
    };
    loop();
  }

  function start() {
    $('auth-form').addEventListener('submit', signIn);
    $('signout').addEventListener('click', signOut);
    $('signout').hidden = token === '';
    $('dl-rows').addEventListener('click', onRowClick);
    const dialog = $('record-dialog');
    $('record-close').addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => {
      if (opener && opener.isConnected) opener.focus();
      opener = null;
    });
    setInterval(tick, TICK_MS);
    every(STATUS_EVERY_MS, refreshStatus);
    every(DEADLETTERS_EVERY_MS, refreshDeadLetters);
  }

  start();
})();

// app.js — the page `ramole serve` gives at /: a playground for completions
// and chats (adapters retrieved, named or none; composition; sampling;
// streaming) showing the adapters each answer used and the router's weights
// per layer; the pool with its samples and an upload form; live metrics.
// Everything goes through the server's own HTTP API (README "HTTP API").
'use strict';

const $ = (id) => document.getElementById(id);
let server = null;      // GET /info
let chat = [];          // the chat so far: {role, content}
let running = null;     // the AbortController of the request under way

// ---- talking to the server ----

function headers(key) {
  const k = key !== undefined ? key : $('api-key').value.trim();
  return k ? { Authorization: 'Bearer ' + k } : {};
}

// The error message of a failed answer (OpenAI's shape), or its status.
async function failure(resp) {
  try {
    const j = await resp.json();
    if (j && j.error && j.error.message) return resp.status + ': ' + j.error.message;
  } catch (e) { /* not JSON */ }
  return 'HTTP ' + resp.status;
}

async function getJSON(path) {
  const resp = await fetch(path, { headers: headers() });
  if (!resp.ok) throw new Error(await failure(resp));
  return resp.json();
}

function cell(row, text) {
  const td = document.createElement('td');
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function showServerError(msg) {
  $('server-error').textContent = msg;
  $('server-error').hidden = !msg;
}

async function loadServer() {
  try {
    server = await getJSON('/info');
    showServerError('');
  } catch (e) {
    server = null;
    $('server-model').textContent = '';
    showServerError('The server did not answer /info (' + e.message + '). With --api-key, enter the key above.');
    return;
  }
  $('server-model').textContent = server.model + (server.pool ? ' + a pool of ' + server.adapters + ' adapters' : '') +
    (server.router ? ', router' : '');
  $('k').value = server.retrieve;
  $('compose').options[0].textContent = 'server default (' + (server.router ? 'router' : 'mixture') + ')';
  if (!server.pool) $('adapter-mode').value = 'none';
  await loadPool();
}

// ---- tabs ----

function showTab(name) {
  for (const b of document.querySelectorAll('.tab')) b.setAttribute('aria-selected', String(b.dataset.tab === name));
  for (const t of ['play', 'pool', 'metrics']) $('tab-' + t).hidden = t !== name;
  if (name === 'pool') loadPool();
  if (name === 'metrics') pollMetrics();
}

// ---- the playground ----

function num(id) {
  const v = $(id).value.trim();
  return v === '' ? null : Number(v);
}

function isChat() { return document.querySelector('input[name="kind"]:checked').value === 'chat'; }

function showAdapterMode() {
  const mode = $('adapter-mode').value;
  for (const el of document.querySelectorAll('.auto-only')) el.hidden = mode !== 'auto';
  for (const el of document.querySelectorAll('.named-only')) el.hidden = mode !== 'named';
}

// The request's JSON from the form.
function buildRequest(text) {
  const req = {
    max_tokens: num('max-tokens') || 16,
    temperature: num('temperature') ?? 0,
    top_p: num('top-p') ?? 1,
    top_k: num('top-k') ?? 0,
    min_p: num('min-p') ?? 0,
    repeat_penalty: num('repeat-penalty') ?? 1,
    stream: $('stream').checked,
    return_routing: true,
  };
  const seed = num('seed');
  if (seed !== null) req.seed = seed;
  if (req.stream) req.stream_options = { include_usage: true };
  const mode = $('adapter-mode').value;
  let compose = $('compose').value;
  if (mode === 'auto') {
    req.model = server.auto_model;
    req.retrieve = num('k') || 1;
    const min = num('min-score');
    if (min !== null) req.min_score = min;
    if (compose === 'default' && server.router) compose = 'router'; // what the auto model composes with
  } else {
    req.model = server.model;
    if (mode === 'named') req.adapters = Array.from($('adapter-names').selectedOptions, (o) => o.value);
  }
  if (compose !== 'default' && mode !== 'none') req.compose = compose;
  if (isChat()) {
    const messages = [];
    const system = $('system').value.trim();
    if (system) messages.push({ role: 'system', content: system });
    req.messages = messages.concat(chat, [{ role: 'user', content: text }]);
  } else {
    req.prompt = text;
  }
  return req;
}

function showAdapters(list) {
  const body = $('used-adapters').tBodies[0];
  body.replaceChildren();
  for (const a of list || []) {
    const tr = body.insertRow();
    cell(tr, a.name);
    cell(tr, typeof a.score === 'number' ? a.score.toFixed(4) : String(a.score));
  }
  if (!list || !list.length) cell(body.insertRow(), 'none: the base model answered').colSpan = 2;
}

// The router's weights: a row per layer, a column per adapter, each cell
// coloured by its weight (0 white, 1 full blue).
function showRouting(routing) {
  const table = $('heatmap');
  table.replaceChildren();
  $('heatmap-note').hidden = !!routing;
  if (!routing) return;
  const head = table.createTHead().insertRow();
  cell(head, 'layer');
  for (const name of routing.adapters) cell(head, name);
  const body = table.createTBody();
  routing.layers.forEach((weights, layer) => {
    const tr = body.insertRow();
    cell(tr, String(layer));
    for (const w of weights) {
      const td = cell(tr, w.toFixed(2));
      td.className = 'heat';
      const t = Math.max(0, Math.min(1, w));
      td.style.backgroundColor = 'rgb(' + Math.round(255 - 215 * t) + ',' + Math.round(255 - 155 * t) + ',255)';
      td.style.color = t > 0.6 ? '#fff' : '#000';
      td.title = routing.adapters.length ? 'layer ' + layer + ': ' + w : '';
    }
  });
}

function addChatLine(role, text) {
  const p = document.createElement('p');
  p.className = 'msg ' + role;
  const who = document.createElement('b');
  who.textContent = role + ': ';
  p.append(who, document.createTextNode(text));
  $('chat-log').appendChild(p);
  return p;
}

// Reads a server-sent event stream, calling onData with each JSON chunk.
async function readEvents(resp, onData) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let at;
    while ((at = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, at);
      buf = buf.slice(at + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        if (data === '[DONE]') return;
        onData(JSON.parse(data));
      }
    }
  }
}

async function send(ev) {
  ev.preventDefault();
  if (!server) await loadServer();
  if (!server || running) return;
  const text = $('prompt').value;
  const req = buildRequest(text);
  const path = isChat() ? '/v1/chat/completions' : '/v1/completions';
  const out = $('answer');
  out.textContent = '';
  $('answer-meta').textContent = 'waiting…';
  showAdapters([]);
  showRouting(null);
  const t0 = performance.now();
  let ttft = null, answer = '', finish = null, usage = null;
  const took = (text) => { if (ttft === null && text) ttft = performance.now() - t0; answer += text; out.textContent = answer; };
  const ended = (choice, whole) => {
    if (choice.finish_reason) finish = choice.finish_reason;
    if (whole.adapters) showAdapters(whole.adapters);
    if (choice.routing !== undefined) showRouting(choice.routing);
  };
  running = new AbortController();
  $('send').disabled = true;
  $('stop').disabled = false;
  try {
    const resp = await fetch(path, {
      method: 'POST', signal: running.signal,
      headers: Object.assign({ 'Content-Type': 'application/json' }, headers()),
      body: JSON.stringify(req),
    });
    if (!resp.ok) throw new Error(await failure(resp));
    if (req.stream) {
      await readEvents(resp, (chunk) => {
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        for (const c of chunk.choices || []) {
          took(isChat() ? (c.delta && c.delta.content) || '' : c.text || '');
          ended(c, chunk);
        }
      });
    } else {
      const j = await resp.json();
      const c = j.choices[0];
      took(isChat() ? c.message.content : c.text);
      ended(c, j);
      usage = j.usage;
    }
    const ms = performance.now() - t0;
    $('answer-meta').textContent = 'finish: ' + finish + (usage ? ', ' + usage.prompt_tokens + ' prompt and ' +
      usage.completion_tokens + ' generated tokens' : '') + (ttft !== null ? ', first text after ' + ttft.toFixed(0) + ' ms' : '') +
      ', ' + ms.toFixed(0) + ' ms in all';
    if (isChat()) {
      chat.push({ role: 'user', content: text }, { role: 'assistant', content: answer });
      addChatLine('user', text);
      addChatLine('assistant', answer);
      $('prompt').value = '';
    }
  } catch (e) {
    $('answer-meta').textContent = e.name === 'AbortError' ? 'stopped (the server stops generating when the connection closes)'
      : 'error: ' + e.message;
  } finally {
    running = null;
    $('send').disabled = false;
    $('stop').disabled = true;
  }
}

// ---- the pool ----

async function loadPool() {
  if (!server || !server.pool) return;
  let list;
  try {
    list = (await getJSON('/v1/adapters')).data;
  } catch (e) {
    showServerError('GET /v1/adapters: ' + e.message);
    return;
  }
  const body = $('pool-table').tBodies[0];
  body.replaceChildren();
  const names = $('adapter-names');
  const chosen = new Set(Array.from(names.selectedOptions, (o) => o.value));
  names.replaceChildren();
  for (const a of list) {
    const tr = body.insertRow();
    tr.dataset.name = a.name;
    tr.tabIndex = 0;
    cell(tr, a.name);
    cell(tr, a.task || '');
    cell(tr, a.domain || '');
    cell(tr, String(a.n_samples));
    tr.addEventListener('click', () => showDetail(a.name));
    tr.addEventListener('keydown', (e) => { if (e.key === 'Enter') showDetail(a.name); });
    if (a.weights) {
      const o = new Option(a.name, a.name, false, chosen.has(a.name));
      names.add(o);
    }
  }
  server.adapters = list.length;
}

async function showDetail(name) {
  let a;
  try {
    a = await getJSON('/v1/adapters/' + encodeURIComponent(name));
  } catch (e) {
    showServerError(e.message);
    return;
  }
  $('pool-detail').hidden = false;
  $('detail-name').textContent = a.name + (a.task ? ' (task ' + a.task + (a.domain ? ', domain ' + a.domain : '') + ')' : '');
  $('detail-weights').textContent = a.weights ? 'weights: ' + a.weights : 'no weights (retrievable only)';
  const ol = $('detail-samples');
  ol.replaceChildren();
  for (const s of a.samples) {
    const li = document.createElement('li');
    li.textContent = s;
    ol.appendChild(li);
  }
  if (a.n_samples > a.samples.length) {
    const li = document.createElement('li');
    li.textContent = '… and ' + (a.n_samples - a.samples.length) + ' more';
    ol.appendChild(li);
  }
}

async function upload(ev) {
  ev.preventDefault();
  const status = $('upload-status');
  const samples = $('up-samples').value.split('\n').map((s) => s.trim()).filter((s) => s);
  const form = new FormData();
  form.append('name', $('up-name').value.trim());
  form.append('samples', JSON.stringify(samples));
  if ($('up-task').value.trim()) form.append('task', $('up-task').value.trim());
  if ($('up-domain').value.trim()) form.append('domain', $('up-domain').value.trim());
  for (const f of $('up-files').files) form.append('file', f, f.name);
  const admin = $('admin-key').value.trim();
  status.textContent = 'uploading…';
  $('upload').disabled = true;
  try {
    const resp = await fetch('/v1/adapters', { method: 'POST', headers: headers(admin || undefined), body: form });
    if (!resp.ok) throw new Error(await failure(resp));
    const j = await resp.json();
    status.textContent = 'stored ' + j.name + ' (the pool holds ' + j.pool_size + '): ' + j.weights;
    status.className = 'ok';
    $('upload-form').reset();
    await loadPool();
  } catch (e) {
    status.textContent = 'refused: ' + e.message;
    status.className = 'error';
  } finally {
    $('upload').disabled = false;
  }
}

// ---- metrics ----

let metricsTimer = null, lastTokens = null;

// Prometheus text: {name: {value, help}}.
function parseMetrics(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const help = line.match(/^# HELP (\S+) (.*)$/);
    if (help) { (out[help[1]] = out[help[1]] || {}).help = help[2]; continue; }
    const m = line.match(/^([a-zA-Z_:][\w:]*) (\S+)$/);
    if (m) (out[m[1]] = out[m[1]] || {}).value = Number(m[2]);
  }
  return out;
}

async function pollMetrics() {
  clearTimeout(metricsTimer);
  if ($('tab-metrics').hidden) return;
  try {
    const resp = await fetch('/metrics', { headers: headers() });
    if (!resp.ok) throw new Error(await failure(resp));
    const m = parseMetrics(await resp.text());
    const body = $('metrics-table').tBodies[0];
    body.replaceChildren();
    for (const [name, v] of Object.entries(m)) {
      const tr = body.insertRow();
      tr.dataset.metric = name;
      cell(tr, name.replace(/^ramole_/, ''));
      cell(tr, String(v.value));
      cell(tr, v.help || '');
    }
    const passes = m.ramole_forward_passes_total, rows = m.ramole_batch_rows_total, gen = m.ramole_generation_tokens_total;
    const now = performance.now();
    let rate = '';
    if (gen && lastTokens) rate = ', ' + ((gen.value - lastTokens.value) / ((now - lastTokens.t) / 1000)).toFixed(1) + ' tokens/s lately';
    if (gen) lastTokens = { value: gen.value, t: now };
    $('metrics-derived').textContent = passes && passes.value ? 'mean batch ' + (rows.value / passes.value).toFixed(2) + ' rows' + rate : rate;
  } catch (e) {
    $('metrics-derived').textContent = 'GET /metrics: ' + e.message;
  }
  metricsTimer = setTimeout(pollMetrics, 2000);
}

// ---- wiring ----

document.addEventListener('DOMContentLoaded', () => {
  for (const b of document.querySelectorAll('.tab')) b.addEventListener('click', () => showTab(b.dataset.tab));
  for (const r of document.querySelectorAll('input[name="kind"]')) r.addEventListener('change', () => { $('chat-box').hidden = !isChat(); });
  $('adapter-mode').addEventListener('change', showAdapterMode);
  $('play-form').addEventListener('submit', send);
  $('stop').addEventListener('click', () => { if (running) running.abort(); });
  $('clear-chat').addEventListener('click', () => { chat = []; $('chat-log').replaceChildren(); });
  $('upload-form').addEventListener('submit', upload);
  $('pool-refresh').addEventListener('click', loadPool);
  $('api-key').addEventListener('change', loadServer);
  showAdapterMode();
  loadServer();
});

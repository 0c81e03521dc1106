// web_page.cjs — the page `ramole serve` gives at /, in headless Chromium
// driven by playwright-core; run by the test serve_web_browser
// (tests/test_serve_web.c):
//   node tests/web_page.cjs PW_DIR URL CHROMIUM API_KEY ADMIN_KEY ADAPTER.gguf
// PW_DIR holds node_modules/playwright-core. The server has a pool with
// "german" and "sentiment", a router and both keys. The page is loaded; a
// streamed request retrieves german and shows the router's weights per
// layer; the pool browser shows samples; an adapter uploaded through the
// form is retrieved for the next request; a chat; a stream stopped early;
// the metrics. Prints "ok N checks" and exits 0, or names the first failed
// check and exits 1.
'use strict';
const path = require('path');
const { createRequire } = require('module');
const [pwDir, url, chromiumPath, apiKey, adminKey, adapterFile] = process.argv.slice(2);
const { chromium } = createRequire(path.resolve(pwDir) + '/')('playwright-core');

let checks = 0;
function check(cond, what) {
  checks++;
  if (!cond) throw new Error('check failed: ' + what);
}

const WAIT = { timeout: 60000 };

// Sends what the playground form holds; resolves when the answer is complete.
async function send(page) {
  await page.click('#send');
  await page.waitForFunction(() => /^(finish|error|stopped)/.test(document.getElementById('answer-meta').textContent), null, WAIT);
  return page.textContent('#answer-meta');
}

const usedAdapters = (page) => page.$$eval('#used-adapters tbody tr', (rows) => rows.map((r) => r.cells[0].textContent));

async function main() {
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [],
  });
  const problems = []; // script errors and what the Content-Security-Policy refused
  try {
    const page = await browser.newPage();
    page.on('pageerror', (e) => problems.push('page error: ' + e.message));
    page.on('console', (m) => { if (m.type() === 'error' && !/status of 401/.test(m.text())) problems.push('console: ' + m.text()); });
    const resp = await page.goto(url + '/');
    check(resp.status() === 200 && /text\/html/.test(resp.headers()['content-type']), 'GET / is the page');
    check(/default-src 'self'/.test(resp.headers()['content-security-policy'] || ''), 'the page has a Content-Security-Policy');

    // without the key the page says so; with it, it knows the server
    await page.waitForSelector('#server-error:not([hidden])', WAIT);
    check(/api-key|key/.test(await page.textContent('#server-error')), 'asks for the key');
    await page.fill('#api-key', apiKey);
    await page.dispatchEvent('#api-key', 'change');
    await page.waitForFunction(() => /router/.test(document.getElementById('server-model').textContent), null, WAIT);
    check(await page.isHidden('#server-error'), 'no error once the key is in');

    // a streamed request: adapters retrieved (k 2), composed by the router
    await page.fill('#prompt', 'Translate to German: the house is red.');
    await page.selectOption('#adapter-mode', 'auto');
    await page.fill('#k', '2');
    await page.fill('#max-tokens', '24');
    await page.check('#stream');
    await page.evaluate(() => { // counts the answer's updates: a stream shows it piece by piece
      window.answerUpdates = 0;
      new MutationObserver((records) => { window.answerUpdates += records.length; })
        .observe(document.getElementById('answer'), { childList: true, characterData: true, subtree: true });
    });
    const streamed = page.waitForResponse((r) => r.url().endsWith('/v1/completions'), WAIT);
    let meta = await send(page);
    check(/text\/event-stream/.test((await streamed).headers()['content-type']), 'the answer came as a stream of events');
    check(/^finish: (length|stop)/.test(meta), 'the streamed answer finished: ' + meta);
    check((await page.textContent('#answer')).length > 0, 'the answer is shown');
    check(await page.evaluate(() => window.answerUpdates) >= 3, 'the answer came in pieces');
    let used = await usedAdapters(page);
    check(used.length === 2 && used[0] === 'german', 'the retrieved adapters: ' + used);
    const scores = await page.$$eval('#used-adapters tbody tr', (rows) => rows.map((r) => Number(r.cells[1].textContent)));
    check(scores.every((s) => Number.isFinite(s)) && scores[0] >= scores[1], 'their scores: ' + scores);
    const heat = await page.$$eval('#heatmap td.heat', (cells) => cells.map((c) => [Number(c.textContent), c.style.backgroundColor]));
    const layers = await page.$$eval('#heatmap tbody tr', (rows) => rows.length);
    check(layers >= 1 && heat.length === 2 * layers, `the heat map: ${layers} layers, ${heat.length} cells`);
    check(heat.every(([w, bg]) => w >= 0 && w <= 1 && /^rgb/.test(bg)), 'each cell coloured by its weight');
    const header = await page.$$eval('#heatmap thead th, #heatmap thead td', (c) => c.map((x) => x.textContent));
    check(header.includes('german'), 'the heat map names the adapters: ' + header);

    // the pool browser: tasks, samples
    await page.click('.tab[data-tab="pool"]');
    await page.waitForSelector('#pool-table tbody tr[data-name="german"]', WAIT);
    await page.click('#pool-table tbody tr[data-name="german"]');
    await page.waitForSelector('#detail-samples li', WAIT);
    const samples = await page.$$eval('#detail-samples li', (li) => li.map((x) => x.textContent));
    check(samples.length === 3 && samples[0].startsWith('Translate to German'), 'the samples: ' + samples);

    // an upload through the form: the api key is not enough, the admin key is
    const weather = ['Will it rain in Paris tomorrow? Give the weather forecast.', 'Is it sunny in Rome today? Give the weather forecast.',
      'How cold will Oslo be tonight? Give the weather forecast.'];
    const fillUpload = async (key) => {
      await page.fill('#up-name', 'weather');
      await page.fill('#up-task', 'forecast');
      await page.fill('#up-samples', weather.join('\n'));
      await page.setInputFiles('#up-files', adapterFile);
      await page.fill('#admin-key', key);
      await page.click('#upload');
      await page.waitForFunction(() => /^(stored|refused)/.test(document.getElementById('upload-status').textContent), null, WAIT);
      return page.textContent('#upload-status');
    };
    let status = await fillUpload('');
    check(/^refused: 401/.test(status), 'an upload without the admin key: ' + status);
    status = await fillUpload(adminKey);
    check(/^stored weather/.test(status), 'the upload: ' + status);
    await page.waitForSelector('#pool-table tbody tr[data-name="weather"]', WAIT);
    check(await page.textContent('#pool-table tbody tr[data-name="weather"] td:nth-child(2)') === 'forecast', 'its task is listed');

    // ... and retrieved for the next request
    await page.click('.tab[data-tab="play"]');
    await page.fill('#prompt', 'Will it snow in Berlin? Give the weather forecast.');
    await page.fill('#k', '1');
    meta = await send(page);
    check(/^finish/.test(meta), 'the second answer: ' + meta);
    used = await usedAdapters(page);
    check(used.length === 1 && used[0] === 'weather', 'the uploaded adapter is retrieved: ' + used);

    // named adapters, not streamed
    await page.selectOption('#adapter-mode', 'named');
    await page.selectOption('#adapter-names', ['sentiment']);
    await page.selectOption('#compose', 'mixture');
    await page.uncheck('#stream');
    meta = await send(page);
    used = await usedAdapters(page);
    check(/^finish/.test(meta) && used.length === 1 && used[0] === 'sentiment', 'a named adapter: ' + used + ' ' + meta);
    check(await page.isVisible('#heatmap-note'), 'no heat map without the router');

    // a chat with the base model
    await page.check('input[name="kind"][value="chat"]');
    await page.selectOption('#adapter-mode', 'none');
    await page.fill('#prompt', 'Hello there');
    meta = await send(page);
    check(/^finish/.test(meta), 'the chat answer: ' + meta);
    check(await page.$$eval('#chat-log .msg', (m) => m.length) === 2, 'the chat shows both turns');
    check((await usedAdapters(page))[0].startsWith('none'), 'the base model answered');

    // a long stream stopped from the page: the server stops generating
    await page.check('input[name="kind"][value="prompt"]');
    await page.check('#stream');
    await page.fill('#max-tokens', '480');
    await page.fill('#prompt', 'Once');
    await page.evaluate(() => { // Stop pressed as soon as the first text shows, long before 480 tokens
      const answer = document.getElementById('answer');
      const seen = new MutationObserver(() => {
        if (!answer.textContent) return; // the old answer cleared
        seen.disconnect();
        document.getElementById('stop').click();
      });
      seen.observe(answer, { childList: true, characterData: true, subtree: true });
      document.getElementById('send').click();
    });
    await page.waitForFunction(() => /^stopped/.test(document.getElementById('answer-meta').textContent), null, WAIT);

    // live metrics: requests counted, the stopped one cancelled
    await page.click('.tab[data-tab="metrics"]');
    await page.waitForFunction(() => {
      const row = document.querySelector('#metrics-table tr[data-metric="ramole_requests_cancelled_total"]');
      return row && Number(row.cells[1].textContent) >= 1;
    }, null, WAIT);
    const total = Number(await page.textContent('#metrics-table tr[data-metric="ramole_requests_total"] td:nth-child(2)'));
    check(total >= 5, 'requests counted: ' + total);
    check(/mean batch/.test(await page.textContent('#metrics-derived')), 'the mean batch is shown');

    check(problems.length === 0, 'no script errors or refused loads: ' + problems.join('; '));
  } finally {
    await browser.close();
  }
}

main().then(() => { console.log(`ok ${checks} checks`); }, (e) => { console.error(e && e.stack ? e.stack : String(e)); process.exit(1); });

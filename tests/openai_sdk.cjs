// openai_sdk.cjs — `ramole serve` through the official OpenAI Node SDK (npm
// `openai`), run by the test serve_openai_sdk (tests/test_serve_http.c):
//   node tests/openai_sdk.cjs SDK_DIR BASE_URL MODEL ADAPTER
// SDK_DIR holds node_modules/openai. Every field the SDK reads must be there
// and right; its stream helper must assemble a chat answer; bad requests
// must come back as the SDK's BadRequestError with the field named. Prints
// "ok N checks" and exits 0, or names the first failed check and exits 1.
'use strict';
const path = require('path');
const { createRequire } = require('module');
const [sdkDir, baseURL, model, adapter] = process.argv.slice(2);
const OpenAI = createRequire(path.resolve(sdkDir) + '/')('openai');
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 120000 });

let checks = 0;
function check(cond, what) {
  checks++;
  if (!cond) throw new Error('check failed: ' + what);
}
const isInt = (v) => Number.isInteger(v) && v >= 0;

async function expect400(body, param, what) {
  try {
    await client.chat.completions.create(body);
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError, `${what}: a BadRequestError (got ${e && e.constructor && e.constructor.name} ${e && e.message})`);
    check(e.status === 400 && e.param === param, `${what}: status 400, param ${param} (got ${e.status}, ${e.param})`);
    check(typeof e.error.message === 'string' && e.error.type === 'invalid_request_error', `${what}: message and type`);
    return;
  }
  check(false, `${what}: answered instead of 400`);
}

async function main() {
  // models
  const models = [];
  for await (const m of client.models.list()) models.push(m.id);
  check(models.includes(model) && models.includes(adapter) && models.includes('ramole-auto'), `models list: ${models}`);
  const auto = await client.models.retrieve('ramole-auto');
  check(auto.id === 'ramole-auto' && auto.object === 'model' && isInt(auto.created), 'one model by id');
  try {
    await client.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 1 });
    check(false, 'an unknown model answered');
  } catch (e) {
    check(e instanceof OpenAI.NotFoundError && e.code === 'model_not_found' && e.param === 'model', `unknown model: ${e}`);
  }
  const ra = await client.chat.completions.create({ model: 'ramole-auto', messages: [{ role: 'user', content: 'Translate to German: hello' }], max_tokens: 3 });
  check(ra.model === 'ramole-auto' && Array.isArray(ra.adapters) && ra.adapters.length > 0 && ra.adapters[0].name === 'german', 'ramole-auto retrieves');

  // a completion: every field, model = what was asked for
  const base = { model, prompt: 'The cat sat on', max_tokens: 24, temperature: 0 };
  const c = await client.completions.create(base);
  check(/^cmpl-/.test(c.id) && c.object === 'text_completion' && isInt(c.created) && c.created > 1.6e9, 'completion id, object, created');
  check(c.model === model, 'completion model is the one asked for');
  check(c.choices.length === 1 && c.choices[0].index === 0 && typeof c.choices[0].text === 'string', 'completion choice');
  check(c.choices[0].finish_reason === 'length' && c.choices[0].logprobs === null, 'completion finish_reason, logprobs null');
  const u = c.usage;
  check(isInt(u.prompt_tokens) && u.completion_tokens === 24 && u.total_tokens === u.prompt_tokens + 24, 'completion usage');
  const text = c.choices[0].text;

  // echo; max_completion_tokens; seed and user taken
  const e = await client.completions.create({ ...base, max_tokens: 4, echo: true, seed: 5, user: 'u1' });
  const et = e.choices[0].text;
  check(et.startsWith(base.prompt) && et.length > base.prompt.length && text.startsWith(et.slice(base.prompt.length)), 'echo puts the prompt first');

  // stop: a character met in a greedy text ends it there, not included (the
  // tiny random model writes mostly stray bytes: find a prompt whose text has one)
  let sp = null, st = '', at = -1;
  for (const p of ['The cat sat on', 'Once upon a time', 'Hello', 'a b c d', '1 2 3 4', 'zzz', 'Q:', '{"x":']) {
    st = (await client.completions.create({ ...base, prompt: p, max_tokens: 32 })).choices[0].text;
    at = [...st].findIndex((ch, i) => i > 0 && ch !== '\uFFFD' && ch !== [...st][0]);
    if (at > 0) { sp = p; break; }
  }
  check(sp !== null, 'a greedy text with a character to stop at');
  const stopChar = [...st][at];
  const cut = st.slice(0, st.indexOf(stopChar));
  const sb = { ...base, prompt: sp, max_tokens: 32 };
  const s1 = await client.completions.create({ ...sb, stop: stopChar });
  check(s1.choices[0].text === cut && s1.choices[0].finish_reason === 'stop', `stop ${JSON.stringify(stopChar)}: ${JSON.stringify(s1.choices[0].text)} vs ${JSON.stringify(cut)}`);
  const s2 = await client.completions.create({ ...sb, stop: ['\u0001never', stopChar] });
  check(s2.choices[0].text === cut && s2.choices[0].finish_reason === 'stop', 'stop as a list');
  let streamed = '', finish = null;
  for await (const ch of await client.completions.create({ ...sb, stop: stopChar, stream: true })) {
    if (ch.choices.length) { streamed += ch.choices[0].text; finish = ch.choices[0].finish_reason || finish; }
  }
  check(streamed === cut && finish === 'stop', `streamed stop: ${JSON.stringify(streamed)} vs ${JSON.stringify(cut)}`);

  // logprobs with alternatives: greedy, so the chosen token is the best one
  const l = await client.completions.create({ ...base, max_tokens: 6, logprobs: 3 });
  const lp = l.choices[0].logprobs;
  check(lp && lp.tokens.length === 6 && lp.token_logprobs.length === 6 && lp.top_logprobs.length === 6 && lp.text_offset.length === 6, 'completion logprobs arrays');
  check(lp.token_logprobs.every((v) => v <= 0) && lp.text_offset[0] === 0, 'completion logprobs values');
  // (alternatives with the same text share a key, so the object may hold fewer than 3)
  check(lp.top_logprobs.every((t, i) => Object.keys(t).length >= 1 && Object.values(t).every((v) => v <= lp.token_logprobs[i] + 1e-9)),
        'greedy: no alternative beats the chosen token');

  // n and prompt lists: prompt-major choices
  const n2 = await client.completions.create({ ...base, max_tokens: 3, n: 2, temperature: 1, seed: 3 });
  check(n2.choices.length === 2 && n2.choices[1].index === 1 && n2.usage.completion_tokens === 6, 'n = 2');
  const pl = await client.completions.create({ ...base, max_tokens: 3, prompt: ['The cat sat on', 'A dog'] });
  check(pl.choices.length === 2 && pl.choices[0].text === text.slice(0, pl.choices[0].text.length), 'a list of prompts');

  // chat, plain and streamed with the SDK's helper (it needs delta.role first)
  const msg = [{ role: 'system', content: 'Be short.' }, { role: 'user', content: 'Say something.' }];
  const chat = await client.chat.completions.create({ model, messages: msg, max_tokens: 12, temperature: 0 });
  check(/^chatcmpl-/.test(chat.id) && chat.object === 'chat.completion' && isInt(chat.created) && chat.model === model, 'chat head');
  const m0 = chat.choices[0];
  check(m0.index === 0 && m0.message.role === 'assistant' && typeof m0.message.content === 'string' && m0.finish_reason === 'length', 'chat choice');
  const runner = client.chat.completions.stream({ model, messages: msg, max_tokens: 12, temperature: 0, stream_options: { include_usage: true } });
  let deltas = '';
  runner.on('content', (d) => { deltas += d; });
  const fin = await runner.finalChatCompletion();
  check(fin.choices[0].message.content === m0.message.content && deltas === m0.message.content, 'stream helper assembles the same answer');
  check(fin.choices[0].message.role === 'assistant' && fin.choices[0].finish_reason === 'length', 'stream helper role and finish_reason');
  check(fin.usage && fin.usage.completion_tokens === 12, 'include_usage gives the usage');

  // content as text parts; max_completion_tokens
  const parts = await client.chat.completions.create({
    model, max_completion_tokens: 12, temperature: 0,
    messages: [{ role: 'system', content: [{ type: 'text', text: 'Be short.' }] }, { role: 'user', content: [{ type: 'text', text: 'Say ' }, { type: 'text', text: 'something.' }] }],
  });
  check(parts.choices[0].message.content === m0.message.content && parts.usage.completion_tokens === 12, 'text parts and max_completion_tokens');

  // chat logprobs
  const cl = await client.chat.completions.create({ model, messages: msg, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2 });
  const cc = cl.choices[0].logprobs.content;
  check(cc.length === 4 && cc.every((t) => t.top_logprobs.length === 2 && t.logprob === t.top_logprobs[0].logprob && Array.isArray(t.bytes)), 'chat logprobs');

  // the adapter as the model
  const ad = await client.completions.create({ ...base, model: adapter });
  check(ad.model === adapter && ad.choices[0].text !== text, 'an adapter by model name changes the answer');

  // embeddings: the SDK asks for base64 by default and decodes it
  const em = await client.embeddings.create({ model, input: ['hello there', 'hello there', 'something else'] });
  const v = em.data.map((d) => d.embedding);
  const norm = (a) => Math.sqrt(a.reduce((s, x) => s + x * x, 0));
  check(em.object === 'list' && v.length === 3 && v[0].length > 8 && Math.abs(norm(v[0]) - 1) < 1e-5, 'embeddings: unit vectors');
  check(v[0].every((x, i) => x === v[1][i]) && v[0].some((x, i) => x !== v[2][i]) && em.usage.prompt_tokens > 0, 'embeddings: same input, same vector');
  const ef = await client.embeddings.create({ model, input: 'hello there', encoding_format: 'float' });
  check(ef.data[0].embedding.every((x, i) => Math.abs(x - v[0][i]) < 1e-6), 'embeddings: float and base64 agree');
  const er = await client.embeddings.create({ model: 'ramole-retriever', input: 'Translate to German: hello' });
  check(er.data.length === 1 && Math.abs(norm(er.data[0].embedding) - 1) < 1e-4, 'retriever embeddings');

  // refused in OpenAI's error shape, the field named
  await expect400({ model, messages: msg, temperature: 'hot' }, 'temperature', 'a string temperature');
  await expect400({ model, messages: msg, max_tokens: -1 }, 'max_tokens', 'negative max_tokens');
  await expect400({ model, messages: msg, n: 0 }, 'n', 'n = 0');
  await expect400({ model, messages: msg, stop: 7 }, 'stop', 'a number as stop');
  await expect400({ model, messages: [{ role: 'robot', content: 'x' }] }, 'messages', 'an unknown role');
  await expect400({ model, messages: msg, frequency_penalty: 1 }, 'frequency_penalty', 'an unsupported penalty');
  await expect400({ model, messages: msg, whatever: 1 }, 'whatever', 'an unknown field');
  await expect400({ model, messages: msg, top_logprobs: 2 }, 'top_logprobs', 'top_logprobs without logprobs');
  console.log(`ok ${checks} checks`);
}

main().catch((err) => {
  console.log(String(err && err.stack ? err.stack : err));
  process.exit(1);
});

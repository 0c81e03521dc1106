// metrics.c — GET /metrics: the server's counters and gauges in the
// Prometheus text format.
#include "serve/server_impl.h"
#include "base/json.h"

#include <stdio.h>

// One counter or gauge.
static void metric(rm_sb *b, const char *name, const char *type, const char *help, double v) {
    rm_sb_printf(b, "# HELP ramole_%s %s\n# TYPE ramole_%s %s\nramole_%s %.17g\n", name, help, name, type, name, v);
}

void metrics_answer(rm_server *s, rm_http_req *r) {
    rm_engine_stats st;
    server_engine_stats(s, &st);
    rm_http_stats hs;
    rm_http_get_stats(s->http, &hs);
    pthread_mutex_lock(&s->cache_mu);
    rm_lora_cache_stats cs = rm_lora_cache_stats_get(&s->cache);
    size_t budget = s->cache.budget;
    double load_s = s->load_seconds;
    pthread_mutex_unlock(&s->cache_mu);
    rm_sb b;
    rm_sb_init(&b);
    metric(&b, "requests_running", "gauge", "Sequences in a slot of the engine.", st.running);
    metric(&b, "requests_waiting", "gauge", "Sequences queued for a free slot.", st.waiting);
    metric(&b, "slots", "gauge", "Sequences the engine runs at once (--slots).", s->p.slots);
    char kv_help[96];
    snprintf(kv_help, sizeof kv_help, "Bytes of the KV cache (--slots x --ctx positions, %s elements).",
             rm_kv_type_name(st.kv_type));
    metric(&b, "kv_cache_bytes", "gauge", kv_help, (double)st.kv_bytes);
    metric(&b, "requests_total", "counter", "Completions accepted (plain and chat, streamed or not).",
           (double)atomic_load(&s->n_completions));
    metric(&b, "requests_finished_total", "counter", "Sequences that ended at a stop token or max_tokens.",
           (double)st.finished);
    metric(&b, "requests_cancelled_total", "counter",
           "Sequences ended because their client left (a stream closed early).", (double)st.cancelled);
    metric(&b, "http_requests_total", "counter", "HTTP requests answered (any path and status).", (double)hs.requests);
    metric(&b, "errors_total", "counter", "Answers with an HTTP status of 400 or more.", (double)hs.errors);
    metric(&b, "uploads_total", "counter", "Adapters added through POST /v1/adapters.",
           (double)atomic_load(&s->n_uploads));
    metric(&b, "prompt_tokens_total", "counter", "Prompt tokens fed through the model.", (double)st.prompt_tokens);
    metric(&b, "generation_tokens_total", "counter", "Tokens sampled.", (double)st.generated_tokens);
    metric(&b, "forward_passes_total", "counter", "Batched forward passes (engine steps).", (double)st.steps);
    metric(&b, "batch_rows_total", "counter", "Rows carried by those passes (mean batch = rows / passes).",
           (double)st.rows);
    metric(&b, "adapters", "gauge", "Adapters in the pool.", atomic_load(&s->pool_size));
    metric(&b, "adapters_loaded", "gauge", "Adapters loaded and bound to the model.", cs.loaded);
    metric(&b, "adapters_in_use", "gauge", "Loaded adapters held by running requests (never evicted).", cs.in_use);
    metric(&b, "adapter_cache_bytes", "gauge", "Bytes held by loaded adapters.", (double)cs.bytes);
    metric(&b, "adapter_cache_budget_bytes", "gauge", "The loaded adapters' budget (--adapter-cache-mb; 0: none).",
           (double)budget);
    metric(&b, "adapter_cache_hits_total", "counter", "Adapters a request found loaded.", (double)cs.hits);
    metric(&b, "adapter_cache_misses_total", "counter", "Adapters a request did not find loaded.", (double)cs.misses);
    metric(&b, "adapter_cache_loads_total", "counter", "Adapters loaded from disk into the cache.", (double)cs.loads);
    metric(&b, "adapter_cache_evictions_total", "counter", "Adapters evicted to stay within the budget.",
           (double)cs.evictions);
    metric(&b, "adapter_load_seconds_total", "counter", "Seconds spent loading adapters for requests.", load_s);
    metric(&b, "connections_deadline_closed_total", "counter",
           "Connections closed because their request was not in by --request-timeout.", (double)hs.deadline_closed);
    metric(&b, "connections_client_gone_total", "counter",
           "Connections closed because the client closed its side before its request was in.", (double)hs.client_gone);
    metric(&b, "connections_reserve_total", "counter",
           "Connections taken past --max-connections into the /health reserve.", (double)hs.reserve_used);
    metric(&b, "connections_open", "gauge", "Connections open now (this one included).", hs.open);
    metric(&b, "connections_open_reserve", "gauge", "Of the open connections, those in the /health reserve.",
           hs.open_reserve);
    metric(&b, "uptime_seconds", "gauge", "Seconds since the server started.", (double)(time(NULL) - s->started));
    if (b.oom) rm_http_reply_error(r, 500, "out of memory");
    else rm_http_reply(r, 200, "text/plain; version=0.0.4", b.buf, b.len);
    rm_sb_free(&b);
}

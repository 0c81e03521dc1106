// progress.c — see progress.h.
#include "base/progress.h"
#include "base/file.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void rm_progress_start(rm_progress *p, const char *label, const char *unit, long total) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->t0 = p->t_last = rm_now();
    const char *env = getenv("RAMOLE_PROGRESS");
    p->enabled = env ? atoi(env) != 0 : isatty(2);
}

static void fmt_secs(char *buf, size_t n, double s) {
    if (s < 0 || s > 1e7) {
        snprintf(buf, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

// "12.3 steps/s", or per minute when slower than one a second.
static void fmt_rate(char *buf, size_t n, double rate, const char *unit) {
    if (rate > 0 && rate < 1) snprintf(buf, n, "%.1f %s/min", rate * 60, unit);
    else snprintf(buf, n, "%.1f %s/s", rate, unit);
}

void rm_progress_update(rm_progress *p, long done, int force) {
    if (!p->enabled) return;
    double now = rm_now();
    if (!force && now - p->t_last < 0.1) return;
    p->t_last = now;
    double el = now - p->t0, rate = el > 0 ? done / el : 0;
    char eta[32] = "?", elapsed[32], rt[64];
    fmt_secs(elapsed, sizeof elapsed, el);
    fmt_rate(rt, sizeof rt, rate, p->unit);
    if (p->total > 0 && rate > 0) fmt_secs(eta, sizeof eta, (p->total - done) / rate);
    if (p->total > 0)
        fprintf(stderr, "\r%s %ld/%ld %s (%.0f%%) %s elapsed %s ETA %s %s\033[K", p->label, done, p->total, p->unit,
                100.0 * done / p->total, rt, elapsed, eta, p->extra);
    else fprintf(stderr, "\r%s %ld %s %s elapsed %s %s\033[K", p->label, done, p->unit, rt, elapsed, p->extra);
    fflush(stderr);
}

void rm_progress_finish(rm_progress *p, long done) {
    if (!p->enabled) return;
    rm_progress_update(p, done, 1);
    fputc('\n', stderr);
}

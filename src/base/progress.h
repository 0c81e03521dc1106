// progress.h — a one-line progress display on stderr: done/total, rate, ETA.
#ifndef RM_BASE_PROGRESS_H
#define RM_BASE_PROGRESS_H
#include <stdio.h>

typedef struct rm_progress {
    const char *label;
    const char *unit; // e.g. "steps", "docs"
    long total;       // <= 0 if unknown
    double t0, t_last;
    int enabled;     // 0: silent (not a tty and not forced)
    char extra[128]; // appended text, e.g. "loss 2.31"
} rm_progress;

// Enabled when stderr is a terminal or env RAMOLE_PROGRESS=1.
void rm_progress_start(rm_progress *p, const char *label, const char *unit, long total);
// Redraws at most ~10 times per second unless force.
void rm_progress_update(rm_progress *p, long done, int force);
void rm_progress_finish(rm_progress *p, long done);
#endif

// svg.h — a small line-plot writer (loss curves and the like) with no
// dependencies: axes with ticks, one polyline per series, a legend.
#ifndef RM_BASE_SVG_H
#define RM_BASE_SVG_H

typedef struct rm_svg_series {
    const char *name;      // legend text
    const double *x, *y;   // n points; non-finite points are skipped
    int n;
} rm_svg_series;

// Writes an 720x420 SVG plot of the series to path (atomically). log_y plots
// y on a log10 scale (points <= 0 are skipped).
int rm_svg_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                const rm_svg_series *series, int n_series, int log_y);
#endif

// svg.h — small chart writers with no dependencies: a line plot (loss curves
// and the like: axes with ticks, one polyline per series, a legend) and a
// grouped bar chart (benchmark figures next to their bounds).
#ifndef RM_BASE_SVG_H
#define RM_BASE_SVG_H

typedef struct rm_svg_series {
    const char *name;    // legend text
    const double *x, *y; // n points; non-finite points are skipped
    int n;
} rm_svg_series;

// Writes an 720x420 SVG plot of the series to path (atomically). log_y plots
// y on a log10 scale (points <= 0 are skipped).
int rm_svg_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                const rm_svg_series *series, int n_series, int log_y);

// Writes a 720x420 grouped bar chart: n_groups groups along x (labels
// groups[g]), one bar per series in each, values[g * n_series + s] (bars
// with a negative or non-finite value are left out), y from 0. Labels too
// wide for their group are slanted and the picture grows taller for them.
int rm_svg_bars(const char *path, const char *title, const char *ylabel, const char *const *groups, int n_groups,
                const char *const *series, int n_series, const double *values);

// Writes a heat map: n_rows x n_cols cells, values[r * n_cols + c] in [lo, hi]
// shaded from white to dark blue (non-finite: grey), the value printed in
// each cell when the cells are large enough, rows and columns labelled.
int rm_svg_heatmap(const char *path, const char *title, const char *const *rows, int n_rows, const char *const *cols,
                   int n_cols, const double *values, double lo, double hi);
#endif

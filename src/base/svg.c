// svg.c — see svg.h.
#include "base/svg.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "base/file.h"
#include "base/json.h"

enum { W = 720, H = 420, ML = 70, MR = 20, MT = 40, MB = 50 };

static const char *const k_colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

// Text with <, >, & escaped.
static void put_text(rm_sb *sb, const char *s) {
    for (; s && *s; s++) {
        if (*s == '<') rm_sb_puts(sb, "&lt;");
        else if (*s == '>') rm_sb_puts(sb, "&gt;");
        else if (*s == '&') rm_sb_puts(sb, "&amp;");
        else rm_sb_putn(sb, s, 1);
    }
}

static int usable(double x, double y, int log_y) { return isfinite(x) && isfinite(y) && (!log_y || y > 0); }

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about n ticks over span.
static double nice_step(double span, int n) {
    double raw = span / n, p = pow(10.0, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

// The document (w x h), its white background and the title.
static void begin(rm_sb *sb, const char *title, int w, int h) {
    rm_sb_init(sb);
    rm_sb_printf(sb,
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
                 "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                 w, h);
    rm_sb_printf(sb, "<text x=\"%d\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">", W / 2);
    put_text(sb, title);
    rm_sb_puts(sb, "</text>\n");
}

// Legend entry s (a colour swatch and the name) with its left edge at x.
static void legend(rm_sb *sb, int x, int s, const char *color, const char *name) {
    rm_sb_printf(sb,
                 "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"%d\"/><text x=\"%d\" "
                 "y=\"%d\">",
                 x, MT + 16 + 16 * s, x + 20, MT + 16 + 16 * s, color, 4, x + 26, MT + 20 + 16 * s);
    put_text(sb, name);
    rm_sb_puts(sb, "</text>\n");
}

// Closes the document and writes it atomically.
static int finish(rm_sb *sb, const char *path) {
    rm_sb_puts(sb, "</svg>\n");
    int rc = sb->oom ? rm_errorf(RM_ENOMEM, "svg: out of memory") : rm_write_file_atomic(path, sb->buf, sb->len);
    rm_sb_free(sb);
    return rc;
}

static const char *color_of(int s) { return k_colors[s % (int)(sizeof k_colors / sizeof k_colors[0])]; }

int rm_svg_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                const rm_svg_series *series, int n_series, int log_y) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int i = 0; i < series[s].n; i++) {
            double x = series[s].x[i], y = series[s].y[i];
            if (!usable(x, y, log_y)) continue;
            if (log_y) y = log10(y);
            x0 = fmin(x0, x);
            x1 = fmax(x1, x);
            y0 = fmin(y0, y);
            y1 = fmax(y1, y);
        }
    if (!(x0 <= x1)) {
        x0 = 0;
        x1 = 1;
        y0 = 0;
        y1 = 1;
    }
    if (x1 - x0 < 1e-12) x1 = x0 + 1;
    if (y1 - y0 < 1e-12) {
        y0 -= 0.5;
        y1 += 0.5;
    }
    double pw = W - ML - MR, ph = H - MT - MB;
#define PX(x) (ML + ((x)-x0) / (x1 - x0) * pw)
#define PY(y) (MT + ph - ((y)-y0) / (y1 - y0) * ph)
    rm_sb sb;
    begin(&sb, title, W, H);
    // ticks and grid
    double xs = nice_step(x1 - x0, 8), ys = nice_step(y1 - y0, 6);
    for (double x = ceil(x0 / xs) * xs; x <= x1 + 1e-9 * xs; x += xs)
        rm_sb_printf(&sb,
                     "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%d\" "
                     "text-anchor=\"middle\">%g</text>\n",
                     PX(x), MT, PX(x), H - MB, PX(x), H - MB + 16, x);
    for (double y = ceil(y0 / ys) * ys; y <= y1 + 1e-9 * ys; y += ys)
        rm_sb_printf(&sb,
                     "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%d\" y=\"%.1f\" "
                     "text-anchor=\"end\">%.4g</text>\n",
                     ML, PY(y), W - MR, PY(y), ML - 6, PY(y) + 4, log_y ? pow(10.0, y) : y);
    rm_sb_printf(&sb, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"black\"/>\n", ML,
                 MT, pw, ph);
    rm_sb_printf(&sb, "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">", ML + pw / 2, H - 12);
    put_text(&sb, xlabel);
    rm_sb_printf(&sb, "</text>\n<text x=\"16\" y=\"%.0f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.0f)\">",
                 MT + ph / 2, MT + ph / 2);
    put_text(&sb, ylabel);
    rm_sb_puts(&sb, log_y ? " (log)</text>\n" : "</text>\n");
    // series and legend
    for (int s = 0; s < n_series; s++) {
        const char *color = color_of(s);
        rm_sb_printf(&sb, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", color);
        for (int i = 0; i < series[s].n; i++) {
            double x = series[s].x[i], y = series[s].y[i];
            if (usable(x, y, log_y)) rm_sb_printf(&sb, "%.1f,%.1f ", PX(x), PY(log_y ? log10(y) : y));
        }
        rm_sb_puts(&sb, "\"/>\n");
        legend(&sb, W - MR - 150, s, color, series[s].name); // top right
    }
#undef PX
#undef PY
    return finish(&sb, path);
}

int rm_svg_bars(const char *path, const char *title, const char *ylabel, const char *const *groups, int n_groups,
                const char *const *series, int n_series, const double *values) {
    double y1 = 0;
    for (int i = 0; i < n_groups * n_series; i++)
        if (isfinite(values[i]) && values[i] > y1) y1 = values[i];
    if (y1 <= 0) y1 = 1;
    double ys = nice_step(y1, 6);
    y1 = ceil(y1 / ys) * ys;
    const double pw = W - ML - MR, ph = H - MT - MB, gw = pw / (n_groups > 0 ? n_groups : 1);
    const double bw = gw * 0.7 / (n_series > 0 ? n_series : 1);
    // labels wider than their group (about 7 px a character) are slanted, the picture made taller for them
    size_t longest = 0;
    for (int g = 0; g < n_groups; g++) longest = strlen(groups[g]) > longest ? strlen(groups[g]) : longest;
    const int slant = 7.0 * (double)longest > gw, extra = slant ? (int)(7.0 * (double)longest * 0.6) : 0;
#define PY(y) (MT + ph - (y) / y1 * ph)
    rm_sb sb;
    begin(&sb, title, W, H + extra);
    for (double y = 0; y <= y1 + 1e-9 * ys; y += ys)
        rm_sb_printf(&sb,
                     "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%d\" y=\"%.1f\" "
                     "text-anchor=\"end\">%.4g</text>\n",
                     ML, PY(y), W - MR, PY(y), ML - 6, PY(y) + 4, y);
    for (int g = 0; g < n_groups; g++) {
        double gx = ML + g * gw + gw * 0.15;
        for (int s = 0; s < n_series; s++) {
            double v = values[g * n_series + s];
            if (!isfinite(v) || v < 0) continue;
            rm_sb_printf(&sb,
                         "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/><text x=\"%.1f\" "
                         "y=\"%.1f\" text-anchor=\"middle\" font-size=\"10\">%.3g</text>\n",
                         gx + s * bw, PY(v), bw * 0.92, PY(0) - PY(v), color_of(s), gx + s * bw + bw * 0.46, PY(v) - 3,
                         v);
        }
        double lx = ML + g * gw + gw / 2;
        if (slant)
            rm_sb_printf(&sb, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"end\" transform=\"rotate(-35 %.1f %d)\">", lx,
                         H - MB + 14, lx, H - MB + 14);
        else rm_sb_printf(&sb, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", lx, H - MB + 16);
        put_text(&sb, groups[g]);
        rm_sb_puts(&sb, "</text>\n");
    }
    rm_sb_printf(&sb, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"black\"/>\n", ML,
                 MT, pw, ph);
    rm_sb_printf(&sb, "<text x=\"16\" y=\"%.0f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.0f)\">",
                 MT + ph / 2, MT + ph / 2);
    put_text(&sb, ylabel);
    rm_sb_puts(&sb, "</text>\n");
    for (int s = 0; s < n_series; s++) legend(&sb, ML + 10, s, color_of(s), series[s]); // top left
#undef PY
    return finish(&sb, path);
}

int rm_svg_heatmap(const char *path, const char *title, const char *const *rows, int n_rows, const char *const *cols,
                   int n_cols, const double *values, double lo, double hi) {
    size_t lr = 0, lc = 0;
    for (int r = 0; r < n_rows; r++) lr = strlen(rows[r]) > lr ? strlen(rows[r]) : lr;
    for (int c = 0; c < n_cols; c++) lc = strlen(cols[c]) > lc ? strlen(cols[c]) : lc;
    const int cell = n_rows > 24 || n_cols > 24 ? 14 : 28, left = 10 + 7 * (int)lr, top = 40 + (int)(6.0 * (double)lc);
    const int w = left + cell * n_cols + 20, h = top + cell * n_rows + 20;
    rm_sb sb;
    begin(&sb, title, w > W ? w : W, h);
    for (int c = 0; c < n_cols; c++) { // column labels, turned upwards
        double x = left + cell * c + cell * 0.5 + 4;
        rm_sb_printf(&sb, "<text x=\"%.1f\" y=\"%d\" transform=\"rotate(-90 %.1f %d)\" font-size=\"%d\">", x, top - 4,
                     x, top - 4, cell > 20 ? 11 : 9);
        put_text(&sb, cols[c]);
        rm_sb_puts(&sb, "</text>\n");
    }
    for (int r = 0; r < n_rows; r++) {
        rm_sb_printf(&sb, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\" font-size=\"%d\">", left - 4,
                     top + cell * r + cell / 2 + 4, cell > 20 ? 11 : 9);
        put_text(&sb, rows[r]);
        rm_sb_puts(&sb, "</text>\n");
        for (int c = 0; c < n_cols; c++) {
            double v = values[(size_t)r * n_cols + c], f = hi > lo ? (v - lo) / (hi - lo) : 0;
            f = f < 0 ? 0 : f > 1 ? 1 : f;
            int R = (int)(255 - 222 * f), G = (int)(255 - 190 * f), B = (int)(255 - 75 * f);
            if (isfinite(v))
                rm_sb_printf(&sb, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,%d)\"/>",
                             left + cell * c, top + cell * r, cell, cell, R, G, B);
            else
                rm_sb_printf(&sb, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#bbb\"/>", left + cell * c,
                             top + cell * r, cell, cell);
            if (cell > 20 && isfinite(v))
                rm_sb_printf(
                    &sb, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"9\" fill=\"%s\">%.0f</text>",
                    left + cell * c + cell / 2, top + cell * r + cell / 2 + 3, f > 0.55 ? "white" : "black", v);
            rm_sb_puts(&sb, "\n");
        }
    }
    return finish(&sb, path);
}

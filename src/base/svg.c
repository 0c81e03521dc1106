// svg.c — see svg.h.
#include "base/svg.h"

#include <math.h>
#include <stdio.h>

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

int rm_svg_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                const rm_svg_series *series, int n_series, int log_y) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int i = 0; i < series[s].n; i++) {
            double x = series[s].x[i], y = series[s].y[i];
            if (!usable(x, y, log_y)) continue;
            if (log_y) y = log10(y);
            x0 = fmin(x0, x); x1 = fmax(x1, x); y0 = fmin(y0, y); y1 = fmax(y1, y);
        }
    if (!(x0 <= x1)) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
    if (x1 - x0 < 1e-12) x1 = x0 + 1;
    if (y1 - y0 < 1e-12) { y0 -= 0.5; y1 += 0.5; }
    double pw = W - ML - MR, ph = H - MT - MB;
#define PX(x) (ML + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (MT + ph - ((y) - y0) / (y1 - y0) * ph)
    rm_sb sb;
    rm_sb_init(&sb);
    rm_sb_printf(&sb, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
                      "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
    rm_sb_printf(&sb, "<text x=\"%d\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">", W / 2);
    put_text(&sb, title);
    rm_sb_puts(&sb, "</text>\n");
    // ticks and grid
    double xs = nice_step(x1 - x0, 8), ys = nice_step(y1 - y0, 6);
    for (double x = ceil(x0 / xs) * xs; x <= x1 + 1e-9 * xs; x += xs)
        rm_sb_printf(&sb, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%d\" "
                          "text-anchor=\"middle\">%g</text>\n", PX(x), MT, PX(x), H - MB, PX(x), H - MB + 16, x);
    for (double y = ceil(y0 / ys) * ys; y <= y1 + 1e-9 * ys; y += ys)
        rm_sb_printf(&sb, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%d\" y=\"%.1f\" "
                          "text-anchor=\"end\">%.4g</text>\n", ML, PY(y), W - MR, PY(y), ML - 6, PY(y) + 4,
                     log_y ? pow(10.0, y) : y);
    rm_sb_printf(&sb, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"black\"/>\n", ML, MT, pw, ph);
    rm_sb_printf(&sb, "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">", ML + pw / 2, H - 12);
    put_text(&sb, xlabel);
    rm_sb_printf(&sb, "</text>\n<text x=\"16\" y=\"%.0f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.0f)\">",
                 MT + ph / 2, MT + ph / 2);
    put_text(&sb, ylabel);
    rm_sb_puts(&sb, log_y ? " (log)</text>\n" : "</text>\n");
    // series and legend
    for (int s = 0; s < n_series; s++) {
        const char *color = k_colors[s % (int)(sizeof k_colors / sizeof k_colors[0])];
        rm_sb_printf(&sb, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", color);
        for (int i = 0; i < series[s].n; i++) {
            double x = series[s].x[i], y = series[s].y[i];
            if (usable(x, y, log_y)) rm_sb_printf(&sb, "%.1f,%.1f ", PX(x), PY(log_y ? log10(y) : y));
        }
        rm_sb_puts(&sb, "\"/>\n");
        rm_sb_printf(&sb, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/><text x=\"%d\" "
                          "y=\"%d\">", W - MR - 150, MT + 16 + 16 * s, W - MR - 130, MT + 16 + 16 * s, color,
                     W - MR - 124, MT + 20 + 16 * s);
        put_text(&sb, series[s].name);
        rm_sb_puts(&sb, "</text>\n");
    }
    rm_sb_puts(&sb, "</svg>\n");
#undef PX
#undef PY
    int rc = sb.oom ? rm_errorf(RM_ENOMEM, "svg: out of memory") : rm_write_file_atomic(path, sb.buf, sb.len);
    rm_sb_free(&sb);
    return rc;
}

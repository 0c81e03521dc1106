// test_base.c — base helpers: error messages, resident file loading, medians, charts, CMA-ES.
#include "testing.h"
#include "base/sha256.h"
#include "base/cmaes.h"
#include "base/err.h"
#include "base/file.h"
#include "base/stats.h"
#include "base/svg.h"

#include <math.h>
#include <stdlib.h>

#include <string.h>

TEST(base_error_prefix_and_truncation) {
    CHECK(rm_errorf(RM_EFORMAT, "%s: bad magic", "m.gguf") == RM_EFORMAT);
    CHECK(rm_error_prefix(RM_EFORMAT, "loading %s", "model") == RM_EFORMAT);
    CHECK(!strcmp(rm_last_error(), "loading model: m.gguf: bad magic"));
    // an overlong prefix and message are cut, never overflow, and stay NUL-terminated
    char big[3000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    rm_errorf(RM_EIO, "%s", big);
    rm_error_prefix(RM_EIO, "%s", big);
    size_t n = strlen(rm_last_error());
    CHECK(n > 500 && n < 1024);
    CHECK(strstr(rm_last_error(), ": a") != NULL);
}

TEST(base_resident_file_matches_mapping) {
    char path[512];
    snprintf(path, sizeof path, "%s/resident.bin", rm_test_tmpdir());
    char data[5000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (char)(i * 7 + 3);
    REQUIRE(rm_write_file_atomic(path, data, sizeof data) == RM_OK);
    rm_mmap a, b;
    CHECK_OK(rm_mmap_open(&a, path));
    CHECK_OK(rm_mmap_open_resident(&b, path));
    CHECK(a.size == sizeof data && b.size == sizeof data && b.mapped >= b.size);
    if (a.data && b.data) CHECK(memcmp(a.data, data, sizeof data) == 0 && memcmp(b.data, data, sizeof data) == 0);
    rm_mmap_close(&a);
    rm_mmap_close(&b);
    CHECK(b.data == NULL && b.size == 0 && b.mapped == 0);
    // an empty file and a missing one
    snprintf(path, sizeof path, "%s/empty.bin", rm_test_tmpdir());
    REQUIRE(rm_write_file_atomic(path, "", 0) == RM_OK);
    CHECK_OK(rm_mmap_open_resident(&b, path));
    CHECK(b.data == NULL && b.size == 0);
    CHECK(rm_mmap_open_resident(&b, "/nonexistent/x.gguf") == RM_EIO);
    CHECK(strstr(rm_last_error(), "/nonexistent/x.gguf") != NULL);
    CHECK(rm_mmap_open_resident(&b, rm_test_tmpdir()) == RM_EIO); // a directory
}

TEST(base_median) {
    double odd[5] = {5, 1, 4, 2, 3}, even[4] = {10, 2, 8, 4}, one[1] = {7};
    CHECK_NEAR(rm_median(odd, 5), 3, 0);
    CHECK_NEAR(rm_median(even, 4), 6, 0);
    CHECK_NEAR(rm_median(one, 1), 7, 0);
    CHECK_NEAR(rm_median(one, 0), 0, 0);
}

// Bar chart: one <rect> per finite value, heights proportional to the values
// (the axis is rounded up to a tick: 40 -> 40), labels escaped.
TEST(base_svg_bars) {
    char path[512];
    snprintf(path, sizeof path, "%s/bars.svg", rm_test_tmpdir());
    const char *groups[2] = {"a<b", "c"}, *series[2] = {"x", "y & z"};
    double v[4] = {10, 20, NAN, 40};
    REQUIRE(rm_svg_bars(path, "t", "tok/s", groups, 2, series, 2, v) == RM_OK);
    char *svg = NULL;
    size_t len = 0;
    REQUIRE(rm_read_file(path, &svg, &len) == RM_OK);
    CHECK(strstr(svg, "a&lt;b") && strstr(svg, "y &amp; z") && !strstr(svg, "a<b"));
    double h[4];
    int nb = 0;
    for (const char *p = svg; (p = strstr(p, "<rect x=")) != NULL; p++) {
        const char *hp = strstr(p, "height=\"");
        const char *fill = strstr(p, "fill=\"#");
        if (!hp || !fill || fill > strchr(p, '>')) continue; // the frame has fill="none"
        if (nb < 4) h[nb] = atof(hp + 8);
        nb++;
    }
    CHECK(nb == 3);
    if (nb == 3) {
        CHECK_NEAR(h[1] / h[0], 2.0, 1e-2);
        CHECK_NEAR(h[2] / h[0], 4.0, 1e-2);
        CHECK_NEAR(h[2], 420 - 40 - 50, 0.11); // the largest value reaches the top of the plot area
    }
    free(svg);
}

// Slanted labels when they are wider than their group: the picture grows taller.
TEST(base_svg_bars_long_labels) {
    char path[512];
    snprintf(path, sizeof path, "%s/bars-long.svg", rm_test_tmpdir());
    const char *groups[13], *series[1] = {"x"};
    double v[13];
    for (int g = 0; g < 13; g++) groups[g] = "a rather long method label", v[g] = g;
    REQUIRE(rm_svg_bars(path, "t", "y", groups, 13, series, 1, v) == RM_OK);
    char *svg = NULL;
    size_t len = 0;
    REQUIRE(rm_read_file(path, &svg, &len) == RM_OK);
    CHECK(strstr(svg, "rotate(-35") && !strstr(svg, "height=\"420\" font-family"));
    free(svg);
}

// An ill-conditioned quadratic, minimum at c, and the points it was asked about.
typedef struct quad {
    int calls, points, outside;
    double c[6];
} quad;

static int quad_fn(void *user, int n, int dim, const double *x, double *f) {
    quad *q = user;
    q->calls++;
    q->points += n;
    for (int k = 0; k < n; k++) {
        double s = 0;
        for (int i = 0; i < dim; i++) {
            double d = x[k * dim + i] - q->c[i];
            s += pow(10.0, i) * d * d; // axis scales 1 .. 1e5
            q->outside += fabs(x[k * dim + i]) > 1.5;
        }
        f[k] = s;
    }
    return 0;
}

// CMA-ES finds the minimum of a badly scaled quadratic (its covariance has to
// learn the scales), spends exactly its budget, keeps every point in the box,
// never returns worse than the start, and gives the same bits for a seed.
TEST(base_cmaes_quadratic) {
    quad q = {0, 0, 0, {0.3, -0.7, 1.1, 0.2, -0.4, 0.9}};
    double x0[6] = {0}, best[6], best2[6];
    rm_cmaes_params p = rm_cmaes_default_params();
    p.budget = 3000, p.sigma = 0.5, p.lo = -1.5, p.hi = 1.5, p.seed = 7;
    rm_cmaes_result r, r2;
    CHECK_OK(rm_cmaes_minimize(6, x0, &p, quad_fn, &q, best, &r));
    CHECK(q.points == 3000 && r.evaluations == 3000 && q.outside == 0);
    CHECKF(r.best_f < 1e-8 && r.best_f <= r.f0, "best %g from %g", r.best_f, r.f0);
    for (int i = 0; i < 6; i++) CHECK_NEAR(best[i], q.c[i], 1e-3);
    quad q2 = q;
    CHECK_OK(rm_cmaes_minimize(6, x0, &p, quad_fn, &q2, best2, &r2));
    CHECK(r2.best_f == r.best_f && !memcmp(best, best2, sizeof best));
    // a budget of one: the start itself; a tiny budget: still never worse than it
    p.budget = 1;
    CHECK_OK(rm_cmaes_minimize(6, x0, &p, quad_fn, &q, best, &r));
    CHECK(r.evaluations == 1 && r.best_f == r.f0 && best[0] == 0);
    p.budget = 0;
    CHECK(rm_cmaes_minimize(6, x0, &p, quad_fn, &q, best, &r) == RM_EINVAL);
}

// SHA-256 against coreutils' sha256sum (an independent implementation) for
// lengths around every padding edge, a long input fed in odd pieces, and
// FIPS 180's "abc".
TEST(base_sha256) {
    char path[600], cmd[800], want[80], got[65];
    snprintf(path, sizeof path, "%s/sha-input", rm_test_tmpdir());
    const size_t lens[] = {0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 100003};
    static unsigned char data[100003];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)(i * 2654435761u >> 13);
    memcpy(data, "abc", 3);
    for (size_t t = 0; t < sizeof lens / sizeof lens[0]; t++) {
        FILE *f = fopen(path, "wb");
        REQUIRE(f);
        CHECK(fwrite(data, 1, lens[t], f) == lens[t]);
        fclose(f);
        snprintf(cmd, sizeof cmd, "sha256sum %s", path);
        FILE *p = popen(cmd, "r");
        if (!p || !fgets(want, sizeof want, p)) {
            if (p) pclose(p);
            SKIP("sha256sum (coreutils) is not there");
        }
        pclose(p);
        rm_sha256 s;
        rm_sha256_init(&s);
        for (size_t at = 0; at < lens[t];) { // pieces of 1, 7, 64, 200, ... bytes
            size_t n = (at % 5 == 0 ? 1 : at % 3 == 0 ? 7 : at % 2 == 0 ? 64 : 200);
            if (n > lens[t] - at) n = lens[t] - at;
            rm_sha256_update(&s, data + at, n);
            at += n;
        }
        uint8_t d[32];
        rm_sha256_final(&s, d);
        rm_sha256_hex(d, got);
        CHECKF(!strncmp(got, want, 64), "length %zu: %s vs sha256sum %.64s", lens[t], got, want);
    }
    rm_sha256 s;
    rm_sha256_init(&s);
    rm_sha256_update(&s, "abc", 3);
    uint8_t d[32];
    rm_sha256_final(&s, d);
    rm_sha256_hex(d, got);
    CHECK(!strcmp(got, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
}

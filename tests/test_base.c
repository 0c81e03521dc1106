// test_base.c — base helpers: error messages, resident file loading, medians, charts.
#include "testing.h"
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

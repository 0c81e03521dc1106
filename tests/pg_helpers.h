// pg_helpers.h — a PostgreSQL server for the tests of pools kept in
// PostgreSQL (tests/pg_helpers.c): a cluster of its own in a temporary
// folder on a free loopback port, started on first use and stopped when the
// tests end. As root it runs as the user postgres (PostgreSQL refuses root).
#ifndef RM_TEST_PG_HELPERS_H
#define RM_TEST_PG_HELPERS_H
#include <stddef.h>

// 1 when the server runs (started now if needed); 0 when it cannot: the
// binaries are absent or it did not start (rm_test_pg_why says which).
int rm_test_pg_available(void);
const char *rm_test_pg_why(void);
// The URL of the database called name (made empty on its first use in this
// run) into url; extra (may be NULL) is appended as URL parameters.
int rm_test_pg_url(const char *name, const char *extra, char *url, size_t cap);
// pg_ctl stop (fast) and start again, for outage tests.
int rm_test_pg_stop(void);
int rm_test_pg_start(void);
#endif

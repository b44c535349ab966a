/*
 * Unit tests of the load generator's pure parts (load/hist.h, load/pace.h,
 * load/args.h): the histogram's buckets and quantiles, the open loop's
 * schedule, and the command line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "load/args.h"
#include "load/hist.h"
#include "load/pace.h"

/* ---- Histogram ---- */

static ld_hist *new_hist(void)
{
    ld_hist *h = malloc(sizeof *h);
    assert_non_null(h);
    ld_hist_reset(h);
    return h;
}

static void buckets_tile_the_values_without_gaps(void **state)
{
    (void)state;
    /* Every bucket starts where the previous one ended, up to the last one. */
    for (unsigned i = 1; i < LD_HIST_BUCKETS; i++)
        assert_int_equal(ld_hist_bucket_low(i), ld_hist_bucket_low(i - 1) + ld_hist_bucket_width(i - 1));
    assert_int_equal(ld_hist_index(UINT64_MAX), LD_HIST_BUCKETS - 1);
}

static void a_value_falls_in_its_bucket(void **state)
{
    (void)state;
    uint64_t v = 1;
    for (int k = 0; k < 2000; k++) {
        unsigned i = ld_hist_index(v);
        assert_true(ld_hist_bucket_low(i) <= v);
        assert_true(v - ld_hist_bucket_low(i) < ld_hist_bucket_width(i));
        /* The precision promised: a bucket is at most 1/64 of its values wide. */
        assert_true(ld_hist_bucket_width(i) == 1 || ld_hist_bucket_width(i) * 64 <= ld_hist_bucket_low(i));
        v = v * 1.02 + 1;
        if (v > UINT64_MAX / 2)
            break;
    }
    for (uint64_t x = 0; x < 128; x++)
        assert_int_equal(ld_hist_index(x), x);
}

static void quantiles_of_a_uniform_run(void **state)
{
    (void)state;
    ld_hist *h = new_hist();
    for (uint64_t v = 1; v <= 100000; v++)
        ld_hist_record(h, v * 1000);          /* 1 us .. 100 ms in ns */
    assert_int_equal(h->count, 100000);
    assert_int_equal(h->min, 1000);
    assert_int_equal(h->max, 100000000);
    struct { double q; double want; } cases[] = {
        {0.5, 50e6}, {0.9, 90e6}, {0.99, 99e6}, {0.999, 99.9e6}, {1.0, 100e6}, {0.0, 1000},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        double got = (double)ld_hist_quantile(h, cases[k].q);
        /* Within the bucket's half width: 1/128 of the value. */
        assert_true(got >= cases[k].want * (1 - 1.0 / 100) && got <= cases[k].want * (1 + 1.0 / 100));
    }
    assert_true(ld_hist_mean(h) > 50.0e6 - 1 && ld_hist_mean(h) < 50.0e6 + 1001);
    free(h);
}

static void quantiles_see_the_tail(void **state)
{
    (void)state;
    ld_hist *h = new_hist();
    for (int k = 0; k < 990; k++)
        ld_hist_record(h, 50000);
    for (int k = 0; k < 10; k++)
        ld_hist_record(h, 10000000);
    /* Rank 990 is the last fast one; rank 991 (q = 0.991) the first slow one. */
    assert_true(ld_hist_quantile(h, 0.99) < 51000);
    assert_true(ld_hist_quantile(h, 0.991) > 9900000);
    assert_int_equal(ld_hist_quantile(h, 1.0), 10000000);
    free(h);
}

static void empty_and_merged_histograms(void **state)
{
    (void)state;
    ld_hist *a = new_hist(), *b = new_hist();
    assert_int_equal(ld_hist_quantile(a, 0.5), 0);
    assert_true(ld_hist_mean(a) == 0.0);
    ld_hist_record(a, 10);
    ld_hist_record(b, 1000);
    ld_hist_record(b, 3000);
    ld_hist_merge(a, b);
    assert_int_equal(a->count, 3);
    assert_int_equal(a->min, 10);
    assert_int_equal(a->max, 3000);
    assert_int_equal(ld_hist_quantile(a, 0.5), ld_hist_bucket_low(ld_hist_index(1000)) +
                                                   (ld_hist_bucket_width(ld_hist_index(1000)) - 1) / 2);
    free(a);
    free(b);
}

/* ---- Pacing ---- */

static void calls_are_due_at_fixed_intervals_without_drift(void **state)
{
    (void)state;
    ld_pace p;
    ld_pace_init(&p, 1000, 3.0);        /* 3 calls/s: 333 333 333.33 ns apart */
    assert_int_equal(ld_pace_due(&p, 0), 1000);
    assert_int_equal(ld_pace_due(&p, 1), 1000 + 333333333);
    assert_int_equal(ld_pace_due(&p, 3), 1000 + 1000000000);
    assert_int_equal(ld_pace_due(&p, 3000000), 1000 + 1000000000000000ull);
}

static void take_gives_each_due_call_once_and_in_order(void **state)
{
    (void)state;
    ld_pace p;
    ld_pace_init(&p, 0, 1000.0);        /* one per ms */
    uint64_t due, end = 10000000;       /* 10 ms */
    assert_int_equal(ld_pace_backlog(&p, 2500000, end), 3);
    for (uint64_t k = 0; k < 3; k++) {
        assert_int_equal(ld_pace_take(&p, 2500000, end, &due), 1);
        assert_int_equal(due, k * 1000000);
    }
    assert_int_equal(ld_pace_take(&p, 2500000, end, &due), 0);
    assert_int_equal(ld_pace_next_due(&p), 3000000);
    assert_int_equal(ld_pace_backlog(&p, 2500000, end), 0);
    /* Far behind (the generator stalled): every missed call is still there, with its own due time. */
    assert_int_equal(ld_pace_backlog(&p, 7000000, end), 5);
    assert_int_equal(ld_pace_backlog(&p, 7000001, end), 5);
    /* Nothing due at or after the end. */
    assert_int_equal(ld_pace_backlog(&p, 50000000, end), 7);
    int n = 0;
    while (ld_pace_take(&p, 50000000, end, &due))
        n++;
    assert_int_equal(n, 7);
    assert_int_equal(due, 9000000);
}

static void backlog_matches_take_at_odd_rates(void **state)
{
    (void)state;
    double rates[] = {1.0, 7.0, 333.3, 12345.6, 99999.9};
    for (size_t r = 0; r < sizeof rates / sizeof rates[0]; r++) {
        ld_pace p;
        ld_pace_init(&p, 5, rates[r]);
        uint64_t now = 123456789, end = 200000000, due;
        uint64_t want = ld_pace_backlog(&p, now, end), got = 0;
        while (ld_pace_take(&p, now, end, &due))
            got++;
        assert_int_equal(got, want);
    }
}

/* ---- Arguments ---- */

/* Parses line split at spaces. The config borrows the strings: they live in a static copy. */
static int parse(ld_config *cfg, char *err, const char *line)
{
    static char copy[512];
    static char *argv[64];
    int argc = 0;
    assert_true(strlen(line) < sizeof copy);
    snprintf(copy, sizeof copy, "%s", line);
    argv[argc++] = "cnode-load";
    for (char *t = strtok(copy, " "); t != NULL; t = strtok(NULL, " ")) {
        assert_true(argc < 63);
        argv[argc++] = t;
    }
    argv[argc] = NULL;
    return ld_args_parse(argc, argv, cfg, err, 256);
}

static void defaults_are_a_closed_loop_of_one(void **state)
{
    (void)state;
    ld_config c;
    char err[256];
    assert_int_equal(parse(&c, err, "--target n@127.0.0.1"), 0);
    assert_string_equal(c.target, "n@127.0.0.1");
    assert_null(c.cookie);
    assert_int_equal(c.request, LD_INCREMENT);
    assert_int_equal(c.nodes, 1);
    assert_int_equal(c.inflight, 1);
    assert_true(c.rate == 0);
    assert_int_equal(c.ids, 1000);
    assert_string_equal(c.host, "127.0.0.1");
    assert_int_equal(c.coalesce_us, 0);
    assert_int_equal(c.batch_us, 100);
}

static void every_flag_is_read(void **state)
{
    (void)state;
    ld_config c;
    char err[256];
    assert_int_equal(parse(&c, err, "--target n@h --cookie abc --request check_rate --nodes 64 --inflight 8 "
                                    "--rate 25000.5 --duration 2.5 --warmup 0 --ids 77 --timeout-ms 100 "
                                    "--drain-ms 0 --server-pid 4242 --name ld --host 10.0.0.1 "
                                    "--busy-poll-us 50 --coalesce-us 150 --batch-us 0 --label x"), 0);
    assert_string_equal(c.cookie, "abc");
    assert_int_equal(c.request, LD_CHECK_RATE);
    assert_int_equal(c.nodes, 64);
    assert_int_equal(c.inflight, 8);
    assert_true(c.rate == 25000.5);
    assert_true(c.duration_s == 2.5);
    assert_true(c.warmup_s == 0);
    assert_int_equal(c.ids, 77);
    assert_int_equal(c.timeout_ms, 100);
    assert_int_equal(c.drain_ms, 0);
    assert_int_equal(c.server_pid, 4242);
    assert_string_equal(c.name, "ld");
    assert_string_equal(c.host, "10.0.0.1");
    assert_int_equal(c.busy_poll_us, 50);
    assert_int_equal(c.coalesce_us, 150);
    assert_int_equal(c.batch_us, 0);
    assert_string_equal(c.label, "x");
}

static void an_open_loop_allows_many_in_flight(void **state)
{
    (void)state;
    ld_config c;
    char err[256];
    assert_int_equal(parse(&c, err, "--target n@h --rate 1000"), 0);
    assert_int_equal(c.inflight, 1024);
    assert_int_equal(parse(&c, err, "--target n@h --rate 1000 --request cast --inflight 3"), 0);
    assert_int_equal(c.inflight, 3);
}

static void bad_lines_are_refused_with_a_reason(void **state)
{
    (void)state;
    ld_config c;
    char err[256];
    const char *bad[] = {
        "",                                     /* no target */
        "--target nohost",                      /* not NAME@HOST */
        "--target n@h --nodes 0",
        "--target n@h --nodes -1",
        "--target n@h --nodes 1x",
        "--target n@h --inflight",              /* no value */
        "--target n@h --request decrement",
        "--target n@h --rate -5",
        "--target n@h --rate fast",
        "--target n@h --duration 0",
        "--target n@h --server-pid 0",
        "--target n@h --busy-poll-us 5000",
        "--target n@h --frobnicate 1",
        "--target n@h --request cast",          /* casts need a rate */
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        err[0] = '\0';
        assert_int_equal(parse(&c, err, bad[k]), -1);
        assert_true(strlen(err) > 0);
    }
    assert_int_equal(parse(&c, err, "--target n@h --help"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(buckets_tile_the_values_without_gaps),
        cmocka_unit_test(a_value_falls_in_its_bucket),
        cmocka_unit_test(quantiles_of_a_uniform_run),
        cmocka_unit_test(quantiles_see_the_tail),
        cmocka_unit_test(empty_and_merged_histograms),
        cmocka_unit_test(calls_are_due_at_fixed_intervals_without_drift),
        cmocka_unit_test(take_gives_each_due_call_once_and_in_order),
        cmocka_unit_test(backlog_matches_take_at_odd_rates),
        cmocka_unit_test(defaults_are_a_closed_loop_of_one),
        cmocka_unit_test(every_flag_is_read),
        cmocka_unit_test(an_open_loop_allows_many_in_flight),
        cmocka_unit_test(bad_lines_are_refused_with_a_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

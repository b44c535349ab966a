/*
 * Unit tests of the load generator's pure parts (load/hist.h, load/pace.h,
 * load/args.h, load/wire.h): the histogram's buckets and quantiles, the open
 * loop's schedule, the command line, and the frames: the templates must give
 * exactly the bytes ei gives for gen:call's frames, and replies must be found.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <ei.h>

#include "load/args.h"
#include "load/hist.h"
#include "load/pace.h"
#include "load/wire.h"
#include "cnode/protocol.h"

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

/* ---- Frames ---- */

#define NODE "gen_7@127.0.0.1"
#define CREATION 0x5eed0004u

static void make_pid(erlang_pid *pid, unsigned slot)
{
    memset(pid, 0, sizeof *pid);
    strcpy(pid->node, NODE);
    pid->num = LD_PID_BASE + slot;
    pid->creation = CREATION;
}

static void make_ref(erlang_ref *ref, const char *node, unsigned slot, uint64_t seq)
{
    memset(ref, 0, sizeof *ref);
    strcpy(ref->node, node);
    ref->len = 3;
    ref->creation = CREATION;
    ref->n[0] = slot;
    ref->n[1] = (unsigned)(seq & 0xffffffffu);
    ref->n[2] = (unsigned)(seq >> 32);
}

/* A pass-through frame around what encode wrote at buf + 5; its total length. */
static int frame_of(char *buf, int i)
{
    buf[0] = (char)((i - 4) >> 24);
    buf[1] = (char)((i - 4) >> 16);
    buf[2] = (char)((i - 4) >> 8);
    buf[3] = (char)(i - 4);
    buf[4] = 112;
    return i;
}

/* What the runtime sent for MONITOR_P/DEMONITOR_P {Op, Pid, Server, Ref}, with ei. */
static int ei_monitor(char *buf, long op, unsigned slot, uint64_t seq, const char *server)
{
    erlang_pid pid;
    erlang_ref ref;
    make_pid(&pid, slot);
    make_ref(&ref, NODE, slot, seq);
    int i = 5;
    assert_int_equal(ei_encode_version(buf, &i) | ei_encode_tuple_header(buf, &i, 4) | ei_encode_long(buf, &i, op) |
                         ei_encode_pid(buf, &i, &pid) | ei_encode_atom_as(buf, &i, server, ERLANG_UTF8, ERLANG_UTF8) |
                         ei_encode_ref(buf, &i, &ref),
                     0);
    return frame_of(buf, i);
}

/* REG_SEND {6, Pid, '', Server} + {'$gen_call', {Pid, [alias | Ref]}, Request}, with ei. */
static int ei_call(char *buf, unsigned slot, uint64_t seq, const char *server, ld_request r, unsigned id)
{
    erlang_pid pid;
    erlang_ref ref;
    make_pid(&pid, slot);
    make_ref(&ref, NODE, slot, seq);
    int i = 5;
    int rc = ei_encode_version(buf, &i) | ei_encode_tuple_header(buf, &i, 4) | ei_encode_long(buf, &i, 6) |
             ei_encode_pid(buf, &i, &pid) | ei_encode_atom(buf, &i, "") |
             ei_encode_atom_as(buf, &i, server, ERLANG_UTF8, ERLANG_UTF8) | ei_encode_version(buf, &i) |
             ei_encode_tuple_header(buf, &i, 3) | ei_encode_atom(buf, &i, "$gen_call") |
             ei_encode_tuple_header(buf, &i, 2) | ei_encode_pid(buf, &i, &pid) | ei_encode_list_header(buf, &i, 1) |
             ei_encode_atom(buf, &i, "alias") | ei_encode_ref(buf, &i, &ref);
    if (r == LD_CHECK_RATE) {
        char text[32];
        int n = snprintf(text, sizeof text, "client-%u", id);
        rc |= ei_encode_tuple_header(buf, &i, 2) | ei_encode_atom(buf, &i, "check_rate") |
              ei_encode_binary(buf, &i, text, n);
    } else {
        rc |= ei_encode_atom(buf, &i, "increment");
    }
    assert_int_equal(rc, 0);
    return frame_of(buf, i);
}

static void templates_give_the_bytes_ei_gives(void **state)
{
    (void)state;
    static const struct { ld_request r; const char *server; } cases[] = {
        {LD_INCREMENT, "counter"}, {LD_CHECK_RATE, "rate_limiter"}};
    static const unsigned slots[] = {0, 1, 255, 4095, LD_MAX_SLOTS - 1};
    static const uint64_t seqs[] = {1, 255, 0xffffffffull, 0x123456789abcull};
    static const unsigned ids[] = {0, 9, 10, 99999, 4000000000u};
    char got[2048], want[2048], req[LD_MAX_REQUEST];
    for (size_t c = 0; c < 2; c++) {
        ld_tmpl t;
        ld_tmpl_init(&t, NODE, CREATION, cases[c].server);
        for (size_t k = 0; k < sizeof slots / sizeof slots[0]; k++) {
            unsigned slot = slots[k], id = ids[k];
            uint64_t seq = seqs[k % 4];
            size_t n = ld_tmpl_call(&t, got, slot, seq, req, ld_encode_request(cases[c].r, id, req));
            int m = ei_monitor(want, DOP_MONITOR_P, slot, seq, cases[c].server);
            m += ei_call(want + m, slot, seq, cases[c].server, cases[c].r, id);
            assert_int_equal(n, (size_t)m);
            assert_memory_equal(got, want, n);
            n = ld_tmpl_demonitor(&t, got, slot, seq);
            m = ei_monitor(want, DOP_DEMONITOR_P, slot, seq, cases[c].server);
            assert_int_equal(n, (size_t)m);
            assert_memory_equal(got, want, n);
        }
        ld_tmpl_free(&t);
    }
}

static void a_cast_is_a_reg_send_of_gen_cast(void **state)
{
    (void)state;
    ld_tmpl t;
    ld_tmpl_init(&t, NODE, CREATION, "counter");
    erlang_pid pid;
    make_pid(&pid, 0);
    char want[512];
    int i = 5;
    assert_int_equal(ei_encode_version(want, &i) | ei_encode_tuple_header(want, &i, 4) |
                         ei_encode_long(want, &i, 6) | ei_encode_pid(want, &i, &pid) | ei_encode_atom(want, &i, "") |
                         ei_encode_atom(want, &i, "counter") | ei_encode_version(want, &i) |
                         ei_encode_tuple_header(want, &i, 2) | ei_encode_atom(want, &i, "$gen_cast") |
                         ei_encode_atom(want, &i, "increment"),
                     0);
    frame_of(want, i);
    assert_int_equal(t.cast_len, (size_t)i);
    assert_memory_equal(t.cast, want, t.cast_len);
    ld_tmpl_free(&t);
}

/*
 * A reply frame's body (no length): the control tuple (op 33, or 37 with
 * flags), then {[alias | Ref], Reply} where Reply is {Tag, 5}.
 */
static int reply_body(char *buf, long op, unsigned slot, uint64_t seq, const char *tag)
{
    erlang_pid server;
    memset(&server, 0, sizeof server);
    strcpy(server.node, "cnode@127.0.0.1");
    server.num = 77;
    server.creation = 9;
    erlang_ref ref;
    make_ref(&ref, NODE, slot, seq);
    int i = 1;
    buf[0] = 112;
    int rc = ei_encode_version(buf, &i) | ei_encode_tuple_header(buf, &i, op == 33 ? 3 : 4) |
             ei_encode_long(buf, &i, op);
    if (op != 33)
        rc |= ei_encode_long(buf, &i, CN_ALTACT_ALIAS);
    rc |= ei_encode_pid(buf, &i, &server) | ei_encode_ref(buf, &i, &ref) | ei_encode_version(buf, &i) |
          ei_encode_tuple_header(buf, &i, 2) | ei_encode_list_header(buf, &i, 1) | ei_encode_atom(buf, &i, "alias") |
          ei_encode_ref(buf, &i, &ref) | ei_encode_tuple_header(buf, &i, 2) | ei_encode_atom(buf, &i, tag) |
          ei_encode_long(buf, &i, 5);
    assert_int_equal(rc, 0);
    return i;
}

static void replies_are_found_by_slot_and_sequence(void **state)
{
    (void)state;
    char body[1024];
    ld_frame_info info;
    static const long ops[] = {DOP_ALIAS_SEND, DOP_ALTACT_SIG_SEND};
    for (size_t k = 0; k < 2; k++) {
        int n = reply_body(body, ops[k], 4095, 0x100000002ull, "ok");
        assert_int_equal(ld_frame_read(body, (size_t)n, &info), LD_FRAME_REPLY);
        assert_int_equal(info.slot, 4095);
        assert_int_equal(info.seq, 0x100000002ull);
        assert_false(info.rejected);
        n = reply_body(body, ops[k], 3, 7, "error");
        assert_int_equal(ld_frame_read(body, (size_t)n, &info), LD_FRAME_REPLY);
        assert_int_equal(info.slot, 3);
        assert_true(info.rejected);
    }
    assert_int_equal(ld_frame_read(body, 0, &info), LD_FRAME_OTHER);   /* a tick */
}

static void a_down_fails_its_call(void **state)
{
    (void)state;
    erlang_pid pid;
    erlang_ref ref;
    make_pid(&pid, 2);
    make_ref(&ref, NODE, 2, 40);
    static const long ops[] = {DOP_MONITOR_P_EXIT, DOP_PAYLOAD_MONITOR_P_EXIT};
    for (size_t k = 0; k < 2; k++) {
        char body[512];
        int i = 1;
        body[0] = 112;
        int rc = ei_encode_version(body, &i) | ei_encode_tuple_header(body, &i, k == 0 ? 5 : 4) |
                 ei_encode_long(body, &i, ops[k]) | ei_encode_atom(body, &i, "counter") |
                 ei_encode_pid(body, &i, &pid) | ei_encode_ref(body, &i, &ref);
        rc |= k == 0 ? ei_encode_atom(body, &i, "noproc")
                     : ei_encode_version(body, &i) | ei_encode_atom(body, &i, "noproc");
        assert_int_equal(rc, 0);
        ld_frame_info info;
        assert_int_equal(ld_frame_read(body, (size_t)i, &info), LD_FRAME_DOWN);
        assert_int_equal(info.slot, 2);
        assert_int_equal(info.seq, 40);
    }
}

/* Cut anywhere, reading a reply stays in its bounds (ASan says so) and never finds a DOWN in it. */
static void a_cut_reply_is_not_a_reply(void **state)
{
    (void)state;
    char body[1024];
    int n = reply_body(body, DOP_ALIAS_SEND, 1, 1, "ok");
    for (int cut = 0; cut < n; cut++) {
        char *copy = malloc((size_t)cut + 1);
        memcpy(copy, body, (size_t)cut);
        ld_frame_info info;
        ld_frame_kind kind = ld_frame_read(copy, (size_t)cut, &info);
        assert_true(kind != LD_FRAME_DOWN);
        free(copy);
    }
}

static void the_request_bytes_are_eis(void **state)
{
    (void)state;
    char got[LD_MAX_REQUEST], want[128];
    static const unsigned ids[] = {0, 7, 10, 123456, 4294967295u};
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
        char text[32];
        int n = snprintf(text, sizeof text, "client-%u", ids[k]), i = 0;
        assert_int_equal(ei_encode_tuple_header(want, &i, 2) | ei_encode_atom(want, &i, "check_rate") |
                             ei_encode_binary(want, &i, text, n),
                         0);
        assert_int_equal(ld_encode_request(LD_CHECK_RATE, ids[k], got), (size_t)i);
        assert_memory_equal(got, want, (size_t)i);
    }
    int i = 0;
    assert_int_equal(ei_encode_atom(want, &i, "increment"), 0);
    assert_int_equal(ld_encode_request(LD_INCREMENT, 5, got), (size_t)i);
    assert_memory_equal(got, want, (size_t)i);
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
        cmocka_unit_test(templates_give_the_bytes_ei_gives),
        cmocka_unit_test(a_cast_is_a_reg_send_of_gen_cast),
        cmocka_unit_test(replies_are_found_by_slot_and_sequence),
        cmocka_unit_test(a_down_fails_its_call),
        cmocka_unit_test(a_cut_reply_is_not_a_reply),
        cmocka_unit_test(the_request_bytes_are_eis),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests of genserver/rate_limiter.h: the gen_server around the table, called
 * over the fake peer as GenServer.call and :sys would call it. The table's own
 * rules are tested in test_rl_table.c; here: the request protocol, the limits as
 * a caller sees them, the configuration checks, state that survives a restart,
 * and the periodic cleanup.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>
#include <cmocka.h>

#include "cnode/error.h"
#include "cnode/protocol.h"
#include "genserver/rate_limiter.h"
#include "test/fake_peer.h"

#define NAME "rate_limiter"

typedef struct fx {
    fake_peer fp;
    rate_limiter_config cfg;    /* borrowed by the server for its life */
    gs_server *gs;
    unsigned next_ref;
    char dir[64];               /* a data dir made by the test, or "" */
    int told;                   /* the server has learned the peer's stdlib version */
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    if (f == NULL || fp_setup(&f->fp, "k", "k", FP_FLAGS_ALIAS) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    if (cn_proc_whereis(f->fp.node, NAME))
        gs_stop(f->gs, "shutdown");
    fp_teardown(&f->fp);
    if (f->dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
    }
    free(f);
    return 0;
}

static void start(fx *f, uint32_t max_requests, int64_t window_ms, const char *dir, size_t slice)
{
    f->cfg = (rate_limiter_config){.max_requests = max_requests, .window_ms = window_ms, .data_dir = dir, .sweep_slice = slice};
    f->told = 0;
    assert_int_equal(rate_limiter_start(f->fp.node, &f->cfg, NAME, NULL, &f->gs), 0);
    assert_non_null(cn_proc_whereis(f->fp.node, NAME));
}

static void make_dir(fx *f)
{
    snprintf(f->dir, sizeof f->dir, "/tmp/test_rate_limiter_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
}

/* Requests, encoded without a version byte. */
static void req_binary_id(ei_x_buff *x, const char *id)
{
    ei_x_new(x);
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "check_rate");
    ei_x_encode_binary(x, id, (long)strlen(id));
}

static void req_long_id(ei_x_buff *x, long id)
{
    ei_x_new(x);
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "check_rate");
    ei_x_encode_long(x, id);
}

static void call_term(fx *f, ei_x_buff *req)
{
    fp_request(&f->fp, "$gen_call", 1, ++f->next_ref, NAME, req->buff, (size_t)req->index);
    ei_x_free(req);
}

static void expect_reply(fx *f, const char *want)
{
    char *got = fp_next_reply_text(&f->fp);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

/* GenServer.call(rate_limiter, {:check_rate, "id"}) answers `want`. */
static void check_rate(fx *f, const char *id, const char *want)
{
    ei_x_buff x;
    req_binary_id(&x, id);
    call_term(f, &x);
    expect_reply(f, want);
}

/* Reads a :sys.get_state reply: the summary map. */
static unsigned long read_state(fx *f)
{
    fp_frame_view v;
    int i, n;
    assert_int_equal(fp_next_reply(&f->fp, &v, &i), 0);
    assert_int_equal(ei_decode_map_header(v.buf, &i, &n), 0);
    unsigned long clients = 0, max = 0;
    long long window = 0;
    int seen = 0;
    for (int k = 0; k < n; k++) {
        char key[MAXATOMLEN_UTF8];
        assert_int_equal(ei_decode_atom(v.buf, &i, key), 0);
        if (strcmp(key, "clients") == 0) {
            assert_int_equal(ei_decode_ulong(v.buf, &i, &clients), 0);
            seen |= 1;
        } else if (strcmp(key, "max_requests") == 0) {
            assert_int_equal(ei_decode_ulong(v.buf, &i, &max), 0);
            seen |= 2;
        } else if (strcmp(key, "window_ms") == 0) {
            assert_int_equal(ei_decode_longlong(v.buf, &i, &window), 0);
            seen |= 4;
        } else {
            assert_int_equal(ei_skip_term(v.buf, &i), 0);
        }
    }
    fp_view_free(&v);
    assert_int_equal(seen, 7);
    assert_int_equal(max, f->cfg.max_requests);
    assert_int_equal(window, f->cfg.window_ms);
    return clients;
}

/* :sys.get_state(rate_limiter): how many clients it tracks. */
static unsigned long clients(fx *f)
{
    ei_x_buff x;
    ei_x_new(&x);
    ei_x_encode_atom(&x, "get_state");
    fp_request(&f->fp, "system", 2, ++f->next_ref, NAME, x.buff, (size_t)x.index);
    ei_x_free(&x);
    /* A new server asks the peer once which sys it runs: OTP 25's takes the plain state. */
    if (!f->told) {
        fp_answer_stdlib(&f->fp, "4.2");
        f->told = 1;
    }
    return read_state(f);
}

static void limit_per_client(void **state)
{
    fx *f = *state;
    start(f, 100, 60000, NULL, 0);
    char want[32];
    for (int left = 99; left >= 0; left--) {
        snprintf(want, sizeof want, "{ok,%d}", left);
        check_rate(f, "client-1", want);
    }
    check_rate(f, "client-1", "{error,rate_limited}");
    check_rate(f, "client-1", "{error,rate_limited}");
    /* Other clients have their own windows. */
    check_rate(f, "client-2", "{ok,99}");
    ei_x_buff x;
    req_long_id(&x, 1);
    call_term(f, &x);
    expect_reply(f, "{ok,99}");
    check_rate(f, "client-1", "{error,rate_limited}");
    assert_int_equal(clients(f), 3);
    assert_null(fp_next_reply_text(&f->fp));
}

static void bad_requests_are_unknown_calls(void **state)
{
    fx *f = *state;
    start(f, 100, 60000, NULL, 0);
    ei_x_buff x;

    ei_x_new(&x);
    ei_x_encode_tuple_header(&x, 1);
    ei_x_encode_atom(&x, "check_rate");
    call_term(f, &x);
    expect_reply(f, "{error,{unknown_call,{check_rate}}}");

    ei_x_new(&x);
    ei_x_encode_atom(&x, "check_rate");
    call_term(f, &x);
    expect_reply(f, "{error,{unknown_call,check_rate}}");

    ei_x_new(&x);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "check_rate");
    ei_x_encode_atom(&x, "a");
    ei_x_encode_atom(&x, "b");
    call_term(f, &x);
    expect_reply(f, "{error,{unknown_call,{check_rate,a,b}}}");

    ei_x_new(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "check_rates");
    ei_x_encode_atom(&x, "a");
    call_term(f, &x);
    expect_reply(f, "{error,{unknown_call,{check_rates,a}}}");

    /* None of them counted, and the server still serves. */
    assert_int_equal(clients(f), 0);
    ei_x_new(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "check_rate");
    ei_x_encode_atom(&x, "a");
    call_term(f, &x);
    expect_reply(f, "{ok,99}");
}

static void start_refuses_a_bad_config(void **state)
{
    fx *f = *state;
    gs_server *gs = NULL;
    rate_limiter_config no_requests = {.max_requests = 0, .window_ms = 60000};
    rate_limiter_config no_window = {.max_requests = 100, .window_ms = 0};
    rate_limiter_config negative_window = {.max_requests = 100, .window_ms = -5};
    assert_int_equal(rate_limiter_start(f->fp.node, &no_requests, NAME, NULL, &gs), -EINVAL);
    assert_int_equal(rate_limiter_start(f->fp.node, &no_window, NAME, NULL, &gs), -EINVAL);
    assert_int_equal(rate_limiter_start(f->fp.node, &negative_window, NAME, NULL, &gs), -EINVAL);
    assert_null(gs);
    assert_null(cn_proc_whereis(f->fp.node, NAME));
    cn_node_stats st;
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.processes, 0);
    /* The name was not taken by the refusals. */
    start(f, 1, 1, NULL, 0);
    check_rate(f, "a", "{ok,0}");
}

static void a_restart_keeps_the_windows(void **state)
{
    fx *f = *state;
    make_dir(f);
    start(f, 3, 60000, f->dir, 0);
    check_rate(f, "a", "{ok,2}");
    check_rate(f, "a", "{ok,1}");
    check_rate(f, "a", "{ok,0}");
    check_rate(f, "a", "{error,rate_limited}");
    check_rate(f, "b", "{ok,2}");

    gs_stop(f->gs, "shutdown");
    fp_run(&f->fp);
    assert_null(cn_proc_whereis(f->fp.node, NAME));

    start(f, 3, 60000, f->dir, 0);
    fp_run(&f->fp); /* handle_continue loads the saved windows */
    assert_int_equal(clients(f), 2);
    check_rate(f, "a", "{error,rate_limited}");
    check_rate(f, "b", "{ok,1}");
    check_rate(f, "c", "{ok,2}");
}

static void without_a_data_dir_a_restart_is_fresh(void **state)
{
    fx *f = *state;
    start(f, 3, 60000, NULL, 0);
    for (int i = 0; i < 3; i++)
        check_rate(f, "a", i == 0 ? "{ok,2}" : i == 1 ? "{ok,1}" : "{ok,0}");
    check_rate(f, "a", "{error,rate_limited}");
    gs_stop(f->gs, "shutdown");
    fp_run(&f->fp);
    start(f, 3, 60000, NULL, 0);
    fp_run(&f->fp);
    assert_int_equal(clients(f), 0);
    check_rate(f, "a", "{ok,2}");
}

/*
 * Requests for many clients, then a few windows of the loop: the cleanup must
 * have forgotten every one of them. Outcomes only; the loop is bounded.
 */
static void cleanup_forgets_idle_clients(fx *f, size_t slice)
{
    enum { CLIENTS = 200, WINDOW_MS = 200 };
    start(f, 5, WINDOW_MS, NULL, slice);
    uv_update_time(&f->fp.loop);
    uint64_t t0 = uv_now(&f->fp.loop);
    /* Every request in one read, so they share one loop time. */
    cn_buf batch;
    cn_buf_init(&batch);
    erlang_pid from;
    fp_pid(&from, 3);
    for (long id = 0; id < CLIENTS; id++) {
        erlang_ref ref;
        fp_ref(&ref, ++f->next_ref, 0, 0);
        ei_x_buff req, ctl, msg;
        req_long_id(&req, id);
        fp_ctl_reg_send(&ctl, &from, NAME);
        fp_msg_request(&msg, "$gen_call", &from, &ref, req.buff, (size_t)req.index);
        fp_frame(&batch, &ctl, &msg);
        ei_x_free(&req);
        ei_x_free(&ctl);
        ei_x_free(&msg);
    }
    cn_conn_feed(f->fp.conn, batch.data, batch.len);
    cn_buf_free(&batch);
    fp_run(&f->fp);
    for (int k = 0; k < CLIENTS; k++)
        expect_reply(f, "{ok,4}");
    /*
     * Every client is held until a window has passed; on a loaded machine one
     * may have passed already, and then the cleanup may rightly have run.
     */
    uv_update_time(&f->fp.loop);
    if (uv_now(&f->fp.loop) - t0 < WINDOW_MS)
        assert_int_equal(clients(f), CLIENTS);

    uint64_t until = uv_now(&f->fp.loop) + 4 * WINDOW_MS;
    for (int i = 0; i < 10000 && uv_now(&f->fp.loop) < until; i++)
        uv_run(&f->fp.loop, UV_RUN_ONCE);
    assert_int_equal(clients(f), 0);
    /* The server still serves, and a forgotten client starts a fresh window. */
    ei_x_buff x;
    req_long_id(&x, 0);
    call_term(f, &x);
    expect_reply(f, "{ok,4}");
    assert_int_equal(clients(f), 1);
}

static void periodic_cleanup_runs(void **state)
{
    cleanup_forgets_idle_clients(*state, 0);
}

static void periodic_cleanup_runs_in_slices(void **state)
{
    cleanup_forgets_idle_clients(*state, 7);
}

/* Reads a whole small file into buf; its length. */
static size_t slurp(const char *path, char *buf, size_t max)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    size_t n = fread(buf, 1, max, fp);
    fclose(fp);
    return n;
}

static void spit(const char *path, const char *buf, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    fclose(fp);
}

/* This process's CPU time in seconds: less noisy than the wall clock on a shared machine. */
static double cpu_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* One journal record as rate_limiter.c writes it: 'C', wall ms, the id's term. */
static void put_record(FILE *fp, int64_t wall, const char *id)
{
    unsigned char r[64];
    size_t idlen = strlen(id), n = 9 + 5 + idlen;
    r[8] = 'C';
    cn_set_u32(r + 9, (uint32_t)((uint64_t)wall >> 32));
    cn_set_u32(r + 13, (uint32_t)wall);
    r[17] = 'm';
    cn_set_u32(r + 18, (uint32_t)idlen);
    memcpy(r + 22, id, idlen);
    cn_set_u32(r, (uint32_t)n);
    uLong c = crc32(crc32(0L, Z_NULL, 0), r, 4);
    cn_set_u32(r + 4, (uint32_t)crc32(c, r + 8, (uInt)n));
    assert_int_equal(fwrite(r, 1, 8 + n, fp), 8 + n);
}

/*
 * The time to replay 1,000,000 accepted check_rates (100,000 clients, 10
 * each; about 34 MB, the records a node writes), printed, not asserted: the
 * journal a crash-mode start left is copied aside, the server stopped, the
 * files put back with the records appended (as if the node had been killed),
 * and the server started again.
 */
static void replaying_a_million_records(void **state)
{
    enum { CLIENTS = 100000, PER_CLIENT = 10 };
    fx *f = *state;
    make_dir(f);
    f->cfg = (rate_limiter_config){.max_requests = 100, .window_ms = 600000, .data_dir = f->dir,
                                   .durability = GS_DURABLE_CRASH};
    assert_int_equal(rate_limiter_start(f->fp.node, &f->cfg, NAME, NULL, &f->gs), 0);
    fp_run(&f->fp);
    char state_path[128], journal_path[128], snap[4096], head[4096];
    snprintf(state_path, sizeof state_path, "%s/%s.state", f->dir, NAME);
    snprintf(journal_path, sizeof journal_path, "%s/%s.journal.0000000000000001", f->dir, NAME);
    size_t snap_len = slurp(state_path, snap, sizeof snap), head_len = slurp(journal_path, head, sizeof head);
    gs_stop(f->gs, "shutdown");
    fp_run(&f->fp);
    spit(state_path, snap, snap_len);
    FILE *fp = fopen(journal_path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(head, 1, head_len, fp), head_len);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t wall = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 - 60000;
    for (int k = 0; k < PER_CLIENT; k++) {
        for (int c = 0; c < CLIENTS; c++) {
            char id[32];
            snprintf(id, sizeof id, "client-%d", c);
            put_record(fp, wall + k, id);
        }
    }
    long size = ftell(fp);
    fclose(fp);

    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double cpu0 = cpu_seconds();
    start(f, 100, 600000, f->dir, 0);
    fp_run(&f->fp);
    double s = seconds_since(&t0), cpu = cpu_seconds() - cpu0;
    assert_int_equal(clients(f), CLIENTS);
    check_rate(f, "client-7", "{ok,89}");
    printf("replayed 1,000,000 rate-limiter records (%d clients, %.1f MB) in %.3f s (%.3f s of CPU)\n", CLIENTS,
           size / 1e6, s, cpu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(limit_per_client, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_requests_are_unknown_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(start_refuses_a_bad_config, setup, teardown),
        cmocka_unit_test_setup_teardown(a_restart_keeps_the_windows, setup, teardown),
        cmocka_unit_test_setup_teardown(without_a_data_dir_a_restart_is_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(periodic_cleanup_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(periodic_cleanup_runs_in_slices, setup, teardown),
        cmocka_unit_test_setup_teardown(replaying_a_million_records, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

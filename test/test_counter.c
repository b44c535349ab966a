/*
 * The Counter server (genserver/counter.h) over the in-memory transport: its
 * contract, values past 64 bits travelling as bignums exactly as an Elixir
 * integer's would, and the value kept across a restart through its state file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <errno.h>
#include <cmocka.h>

#include "cnode/protocol.h"
#include "genserver/counter.h"
#include "test/fake_peer.h"

typedef struct fx {
    fake_peer fp;
    counter_config cfg;
    gs_server *gs;
    char dir[64];
    unsigned refs;
} fx;

static void start_counter(fx *f)
{
    assert_int_equal(counter_start(f->fp.node, &f->cfg, "counter", NULL, &f->gs), 0);
    fp_run(&f->fp);
}

static fx *start(long long initial, int with_dir)
{
    fx *f = test_calloc(1, sizeof *f);
    assert_int_equal(fp_setup(&f->fp, "k", "k", FP_FLAGS_ALIAS), 0);
    f->cfg.initial = initial;
    if (with_dir) {
        strcpy(f->dir, "/tmp/test_counter.XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        f->cfg.data_dir = f->dir;
    }
    start_counter(f);
    return f;
}

static void stop_counter(fx *f)
{
    gs_stop(f->gs, "shutdown");
    fp_run(&f->fp);
    assert_null(cn_proc_whereis(f->fp.node, "counter"));
}

static void stop(fx *f)
{
    if (cn_proc_whereis(f->fp.node, "counter"))
        stop_counter(f);
    fp_teardown(&f->fp);
    if (f->dir[0]) {
        char path[128];
        snprintf(path, sizeof path, "%s/counter.state", f->dir);
        unlink(path);
        assert_int_equal(rmdir(f->dir), 0);
    }
    test_free(f);
}

/* GenServer.call(counter, Atom) (label "$gen_call"), or a :sys request (label "system"). */
static void request(fx *f, const char *label, const char *atom)
{
    char req[MAXATOMLEN + 8];
    int n = 0;
    ei_encode_atom(req, &n, atom);
    fp_request(&f->fp, label, 7, ++f->refs, "counter", req, (size_t)n);
}

static void call(fx *f, const char *atom) { request(f, "$gen_call", atom); }

/* The next reply must be exactly these bytes of external term format. */
static void expect_reply_bytes(fx *f, const unsigned char *want, size_t n)
{
    fp_frame_view v;
    int i;
    assert_int_equal(fp_next_reply(&f->fp, &v, &i), 0);
    int end = i;
    assert_int_equal(ei_skip_term(v.buf, &end), 0);
    assert_int_equal((size_t)(end - i), n);
    assert_memory_equal(v.buf + i, want, n);
    fp_view_free(&v);
}

/* The next reply must be the integer `want`, in whichever form ei gives it. */
static void expect_reply_int(fx *f, long long want)
{
    fp_frame_view v;
    int i;
    assert_int_equal(fp_next_reply(&f->fp, &v, &i), 0);
    long long got;
    if (ei_decode_longlong(v.buf, &i, &got) != 0)
        fail_msg("the reply is not a 64-bit integer");
    assert_true(got == want);
    fp_view_free(&v);
}

static void expect_reply_text(fx *f, const char *want)
{
    char *text = fp_next_reply_text(&f->fp);
    assert_non_null(text);
    assert_string_equal(text, want);
    free(text);
}

/* 2^63 and -(2^63 + 1): SMALL_BIG_EXT, 8 little-endian digits, as term_to_binary makes them. */
static const unsigned char two_63[] = {110, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0x80};
static const unsigned char minus_two_63_minus_1[] = {110, 8, 1, 1, 0, 0, 0, 0, 0, 0, 0x80};

static void the_contract_from_the_initial_value(void **state)
{
    (void)state;
    fx *f = start(41, 0);
    call(f, "get_value");
    expect_reply_int(f, 41);
    call(f, "increment");
    expect_reply_int(f, 42);
    call(f, "decrement");
    call(f, "decrement");
    expect_reply_int(f, 41);
    expect_reply_int(f, 40);
    fp_cast(&f->fp, 7, "counter", "increment");
    call(f, "get_value");
    expect_reply_int(f, 41);
    stop(f);
}

static void an_unknown_call_is_an_error_and_changes_nothing(void **state)
{
    (void)state;
    fx *f = start(5, 0);
    call(f, "reset");
    expect_reply_text(f, "{error,{unknown_call,reset}}");
    call(f, "get_value");
    expect_reply_int(f, 5);
    stop(f);
}

static void past_int64_max_the_value_is_a_bignum(void **state)
{
    (void)state;
    fx *f = start(LLONG_MAX, 0);
    call(f, "increment");
    expect_reply_bytes(f, two_63, sizeof two_63);
    request(f, "system", "get_state");
    /* The server asks the caller's node which sys it runs; OTP 25's takes the plain state. */
    fp_answer_stdlib(&f->fp, "4.2");
    expect_reply_bytes(f, two_63, sizeof two_63);
    call(f, "decrement");
    expect_reply_int(f, LLONG_MAX);
    stop(f);
}

static void below_int64_min_too(void **state)
{
    (void)state;
    fx *f = start(LLONG_MIN, 0);
    call(f, "decrement");
    call(f, "decrement");
    expect_reply_text(f, "-9223372036854775809");
    expect_reply_bytes(f, (const unsigned char[]){110, 8, 1, 2, 0, 0, 0, 0, 0, 0, 0x80}, 11);
    call(f, "increment");
    expect_reply_bytes(f, minus_two_63_minus_1, sizeof minus_two_63_minus_1);
    stop(f);
}

static void a_restart_gets_the_saved_value_back_in_either_width(void **state)
{
    (void)state;
    fx *f = start(LLONG_MAX, 1);
    call(f, "increment");
    expect_reply_bytes(f, two_63, sizeof two_63);
    stop_counter(f);
    /* The saved value wins over the configured one. */
    f->cfg.initial = 0;
    start_counter(f);
    call(f, "get_value");
    expect_reply_bytes(f, two_63, sizeof two_63);
    call(f, "decrement");
    expect_reply_int(f, LLONG_MAX);
    stop_counter(f);
    start_counter(f);
    call(f, "get_value");
    expect_reply_int(f, LLONG_MAX);
    stop(f);
}

static int fail_writes(const char *op)
{
    return strcmp(op, "write") == 0 ? -ENOSPC : 0;
}

/* Removes the data dir with its journals, so stop() has nothing left to remove. */
static void remove_dir(fx *f)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    f->dir[0] = '\0';
}

/*
 * The disk says no: the reply held for the failed write is refused, the calls
 * after it are refused before they change anything, and casts and reads still
 * work; once a snapshot succeeds increments are acknowledged again.
 */
static void a_journal_that_cannot_write_answers_not_durable(void **state)
{
    (void)state;
    fx *f = test_calloc(1, sizeof *f);
    assert_int_equal(fp_setup(&f->fp, "k", "k", FP_FLAGS_ALIAS), 0);
    strcpy(f->dir, "/tmp/test_counter.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->cfg.data_dir = f->dir;
    f->cfg.durability = GS_DURABLE_CRASH;
    start_counter(f);
    call(f, "increment");
    expect_reply_int(f, 1);
    gs_journal_set_fault(fail_writes);
    call(f, "increment");
    expect_reply_text(f, "{error,not_durable}");
    call(f, "increment");
    call(f, "decrement");
    expect_reply_text(f, "{error,not_durable}");
    expect_reply_text(f, "{error,not_durable}");
    /* The refused write's increment stays in memory; the later calls changed nothing. */
    call(f, "get_value");
    expect_reply_int(f, 2);
    gs_journal_set_fault(NULL);
    /* The retry (a snapshot, every second) makes the counter accept again. */
    for (int i = 0; i < 300; i++) {
        call(f, "increment");
        char *text = fp_next_reply_text(&f->fp);
        int refused = strcmp(text, "{error,not_durable}") == 0;
        free(text);
        if (!refused)
            break;
        usleep(10000);
    }
    call(f, "get_value");
    expect_reply_int(f, 3);
    stop_counter(f);
    /* The value is on disk: the final snapshot. */
    start_counter(f);
    call(f, "get_value");
    expect_reply_int(f, 3);
    stop_counter(f);
    remove_dir(f);
    stop(f);
}

/* ---- Power mode: where the turn's fdatasync runs ---- */

/* A power-mode node with counters c1 (initial 100) and c2 (200) journaling into one directory. */
typedef struct power_fx {
    fx f;
    counter_config cfg2;
    gs_server *c2;
} power_fx;

static power_fx *start_power(void)
{
    power_fx *p = test_calloc(1, sizeof *p);
    fx *f = &p->f;
    /* What a failed test left set goes. */
    gs_journal_set_fault(NULL);
    gs_journal_set_slow_sync(GS_JOURNAL_SLOW_SYNC_NS);
    assert_int_equal(fp_setup(&f->fp, "k", "k", FP_FLAGS_ALIAS), 0);
    strcpy(f->dir, "/tmp/test_counter.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->cfg = (counter_config){.initial = 100, .data_dir = f->dir, .durability = GS_DURABLE_POWER};
    p->cfg2 = f->cfg;
    p->cfg2.initial = 200;
    assert_int_equal(counter_start(f->fp.node, &f->cfg, "c1", NULL, &f->gs), 0);
    assert_int_equal(counter_start(f->fp.node, &p->cfg2, "c2", NULL, &p->c2), 0);
    fp_run(&f->fp);
    return p;
}

static void stop_power(power_fx *p)
{
    fx *f = &p->f;
    gs_journal_set_fault(NULL);
    gs_journal_set_slow_sync(GS_JOURNAL_SLOW_SYNC_NS);
    gs_stop(f->gs, "shutdown");
    gs_stop(p->c2, "shutdown");
    fp_run(&f->fp);
    fp_teardown(&f->fp);
    remove_dir(f);
    test_free(p);
}

/*
 * GenServer.call(name, atom) fed to the node without running its loop: the
 * node handles it, and commits the journals, in the next loop turn.
 */
static void feed_call(fx *f, const char *name, const char *atom)
{
    erlang_pid pid;
    erlang_ref ref;
    fp_pid(&pid, 7);
    fp_ref(&ref, ++f->refs, 0, 0);
    char req[MAXATOMLEN + 8];
    int n = 0;
    ei_encode_atom(req, &n, atom);
    ei_x_buff ctl, msg;
    fp_ctl_reg_send(&ctl, &pid, name);
    fp_msg_request(&msg, "$gen_call", &pid, &ref, req, (size_t)n);
    cn_buf b;
    cn_buf_init(&b);
    fp_frame(&b, &ctl, &msg);
    cn_conn_feed(f->fp.conn, b.data, b.len);
    cn_buf_free(&b);
    ei_x_free(&ctl);
    ei_x_free(&msg);
}

/* One loop turn: the requests fed are handled and the turn's output (with what it released) written. */
static void one_turn(fx *f)
{
    uv_run(&f->fp.loop, UV_RUN_NOWAIT);
}

/* The next reply, printed; the loop runs until it comes (a sync on the pool ends), bounded. */
static char *await_reply_text(fx *f)
{
    char *text = fp_next_reply_text(&f->fp);
    for (int i = 0; i < 1000 && text == NULL; i++) {
        uv_run(&f->fp.loop, UV_RUN_ONCE);
        text = fp_next_reply_text(&f->fp);
    }
    assert_non_null(text);
    return text;
}

static void await_reply_int(fx *f, long long want)
{
    char *text = await_reply_text(f), buf[24];
    snprintf(buf, sizeof buf, "%lld", want);
    assert_string_equal(text, buf);
    free(text);
}

/* Nothing has been sent yet: the reply waits for a sync on the pool. */
static void expect_no_reply(fx *f)
{
    char *text = fp_next_reply_text(&f->fp);
    if (text != NULL)
        fail_msg("unexpected reply %s", text);
}

/* One busy journal syncs in the loop: the reply leaves with the turn that made its change durable. */
static void one_busy_journal_syncs_in_the_loop_and_replies_in_the_same_turn(void **state)
{
    (void)state;
    power_fx *p = start_power();
    fx *f = &p->f;
    for (int i = 1; i <= 3; i++) {
        feed_call(f, "c1", "increment");
        feed_call(f, "c1", "increment");
        one_turn(f);
        expect_reply_int(f, 100 + 2 * i - 1);
        expect_reply_int(f, 100 + 2 * i);
    }
    stop_power(p);
}

/*
 * Two busy journals: one syncs on the pool, the other in the loop, at the same
 * time, and they take turns in the loop (c2, the last to join, first); the
 * loop's reply leaves with the turn, the pool's when its sync ends, and every
 * reply is right.
 */
static void two_busy_journals_sync_one_on_the_pool_one_in_the_loop(void **state)
{
    (void)state;
    power_fx *p = start_power();
    fx *f = &p->f;
    for (int t = 1; t <= 4; t++) {
        feed_call(f, "c1", "increment");
        feed_call(f, "c2", "decrement");
        one_turn(f);
        expect_reply_int(f, t % 2 ? 200 - t : 100 + t);
        expect_no_reply(f);
        await_reply_int(f, t % 2 ? 100 + t : 200 - t);
    }
    /* A read made behind a change waits with it, for the pool's sync. */
    feed_call(f, "c1", "increment");
    feed_call(f, "c1", "get_value");
    feed_call(f, "c2", "increment");
    one_turn(f);
    expect_reply_int(f, 197);
    expect_no_reply(f);
    await_reply_int(f, 105);
    await_reply_int(f, 105);
    stop_power(p);
}

/* A slow sync in the loop (the threshold set to 0) sends the syncs to the pool; a quick one there ends it. */
static void a_slow_disk_moves_the_syncs_to_the_pool_and_back(void **state)
{
    (void)state;
    power_fx *p = start_power();
    fx *f = &p->f;
    gs_journal_set_slow_sync(0);
    feed_call(f, "c1", "increment");
    one_turn(f);
    expect_reply_int(f, 101);
    feed_call(f, "c1", "increment");
    one_turn(f);
    expect_no_reply(f);
    await_reply_int(f, 102);
    gs_journal_set_slow_sync(UINT64_MAX);
    feed_call(f, "c1", "increment");
    one_turn(f);
    expect_no_reply(f);
    await_reply_int(f, 103);
    feed_call(f, "c1", "increment");
    one_turn(f);
    expect_reply_int(f, 104);
    stop_power(p);
}

static int fail_syncs(const char *op)
{
    return strcmp(op, "fdatasync") == 0 ? -EIO : 0;
}

/* An fdatasync that fails in the loop: the turn's reply is refused in that turn, and the next call too. */
static void a_failed_inline_fdatasync_answers_not_durable(void **state)
{
    (void)state;
    power_fx *p = start_power();
    fx *f = &p->f;
    feed_call(f, "c1", "increment");
    one_turn(f);
    expect_reply_int(f, 101);
    gs_journal_set_fault(fail_syncs);
    feed_call(f, "c1", "increment");
    feed_call(f, "c1", "get_value");
    one_turn(f);
    expect_reply_text(f, "{error,not_durable}");
    expect_reply_text(f, "{error,not_durable}");
    feed_call(f, "c1", "increment");
    one_turn(f);
    expect_reply_text(f, "{error,not_durable}");
    /* The other journal's disk is fine. */
    gs_journal_set_fault(NULL);
    feed_call(f, "c2", "increment");
    one_turn(f);
    expect_reply_int(f, 201);
    stop_power(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_contract_from_the_initial_value),
        cmocka_unit_test(an_unknown_call_is_an_error_and_changes_nothing),
        cmocka_unit_test(past_int64_max_the_value_is_a_bignum),
        cmocka_unit_test(below_int64_min_too),
        cmocka_unit_test(a_restart_gets_the_saved_value_back_in_either_width),
        cmocka_unit_test(a_journal_that_cannot_write_answers_not_durable),
        cmocka_unit_test(one_busy_journal_syncs_in_the_loop_and_replies_in_the_same_turn),
        cmocka_unit_test(two_busy_journals_sync_one_on_the_pool_one_in_the_loop),
        cmocka_unit_test(a_slow_disk_moves_the_syncs_to_the_pool_and_back),
        cmocka_unit_test(a_failed_inline_fdatasync_answers_not_durable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

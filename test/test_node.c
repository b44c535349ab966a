/*
 * The node's loop turns (cnode/node.h): busy polling after light turns and the
 * coalescing pause after heavy ones, observed through cn_node_get_stats over
 * the in-memory transport. No test here measures time: each asserts what the
 * loop chose to do, counted by the node itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cnode/node.h"
#include "cnode/proc.h"
#include "cnode/protocol.h"
#include "test/fake_peer.h"

typedef struct fx {
    fake_peer fp;
    cn_proc *sink;
    int got;
} fx;

static void sink_message(cn_proc *p, const char *buf, size_t len)
{
    (void)buf;
    (void)len;
    fx *f = cn_proc_data(p);
    f->got++;
}

static const cn_proc_ops sink_ops = {.message = sink_message};

static fx *start(unsigned busy_poll_us, unsigned coalesce_us)
{
    fx *f = test_calloc(1, sizeof *f);
    cn_node_config cfg = {.cookie = "k", .busy_poll_us = busy_poll_us, .coalesce_us = coalesce_us};
    assert_int_equal(fp_setup_with(&f->fp, &cfg, "k", CN_DFLAGS), 0);
    f->sink = cn_proc_spawn(f->fp.node, &sink_ops, f);
    assert_non_null(f->sink);
    assert_int_equal(cn_proc_register(f->sink, "sink"), 0);
    return f;
}

static void stop(fx *f)
{
    fp_teardown(&f->fp);
    test_free(f);
}

/* n messages to "sink" in one read, then the loop turns of fp_run. */
static void send_batch(fx *f, int n)
{
    cn_buf b;
    cn_buf_init(&b);
    erlang_pid from;
    fp_pid(&from, 1);
    for (int i = 0; i < n; i++) {
        ei_x_buff ctl, msg;
        fp_ctl_reg_send(&ctl, &from, "sink");
        ei_x_new_with_version(&msg);
        ei_x_encode_long(&msg, i);
        fp_frame(&b, &ctl, &msg);
        ei_x_free(&ctl);
        ei_x_free(&msg);
    }
    cn_conn_feed(f->fp.conn, b.data, b.len);
    cn_buf_free(&b);
    fp_run(&f->fp);
}

static cn_node_stats stats(fx *f)
{
    cn_node_stats st;
    cn_node_get_stats(f->fp.node, &st);
    return st;
}

static void a_light_turn_keeps_the_loop_polling(void **state)
{
    (void)state;
    fx *f = start(1000, 150);
    assert_int_equal(stats(f).polls, 0);
    send_batch(f, 1);
    assert_int_equal(f->got, 1);
    cn_node_stats st = stats(f);
    assert_true(st.polls > 0);
    assert_int_equal(st.pauses, 0);
    stop(f);
}

static void no_busy_polling_when_it_is_off(void **state)
{
    (void)state;
    fx *f = start(0, 150);
    send_batch(f, 1);
    send_batch(f, 3);
    assert_int_equal(f->got, 4);
    assert_int_equal(stats(f).polls, 0);
    assert_int_equal(stats(f).pauses, 0);
    stop(f);
}

static void a_heavy_turn_pauses_instead_of_polling(void **state)
{
    (void)state;
    fx *f = start(1000, 1);
    send_batch(f, 8);
    assert_int_equal(f->got, 8);
    cn_node_stats st = stats(f);
    assert_int_equal(st.pauses, 1);
    assert_int_equal(st.polls, 0);
    /* Seven is still a light turn. */
    send_batch(f, 7);
    st = stats(f);
    assert_int_equal(st.pauses, 1);
    assert_true(st.polls > 0);
    stop(f);
}

static void coalescing_off_means_every_turn_polls(void **state)
{
    (void)state;
    fx *f = start(1000, 0);
    send_batch(f, 20);
    assert_int_equal(f->got, 20);
    assert_int_equal(stats(f).pauses, 0);
    assert_true(stats(f).polls > 0);
    stop(f);
}

static void a_quiet_node_stops_polling_after_the_window(void **state)
{
    (void)state;
    fx *f = start(1, 150);
    send_batch(f, 1);
    /* Sleep well past the 1 us window: the next turn must give up polling. */
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
    fp_run(&f->fp);
    uint64_t polls = stats(f).polls;
    fp_run(&f->fp);
    fp_run(&f->fp);
    assert_int_equal(stats(f).polls, polls);
    /* And a new request opens a new window. */
    send_batch(f, 1);
    assert_int_equal(f->got, 2);
    stop(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_light_turn_keeps_the_loop_polling),
        cmocka_unit_test(no_busy_polling_when_it_is_off),
        cmocka_unit_test(a_heavy_turn_pauses_instead_of_polling),
        cmocka_unit_test(coalescing_off_means_every_turn_polls),
        cmocka_unit_test(a_quiet_node_stops_polling_after_the_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

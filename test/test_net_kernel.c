/*
 * Unit tests of genserver/net_kernel.h over the fake peer: {is_auth, Node}, as
 * net_adm:ping/1 sends it, gets yes; anything else is an unknown call.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cnode/protocol.h"
#include "genserver/net_kernel.h"
#include "test/fake_peer.h"

typedef struct fx {
    fake_peer fp;
    gs_server *gs;
    unsigned next_ref;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    if (f == NULL || fp_setup(&f->fp, "k", "k", FP_FLAGS_ALIAS) != 0)
        return -1;
    if (net_kernel_start(f->fp.node, NULL, &f->gs) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    if (cn_proc_whereis(f->fp.node, "net_kernel"))
        gs_stop(f->gs, "shutdown");
    fp_teardown(&f->fp);
    free(f);
    return 0;
}

/* GenServer.call(net_kernel, Req), Req encoded in x (no version byte; freed here). */
static void call(fx *f, ei_x_buff *x)
{
    fp_request(&f->fp, "$gen_call", 1, ++f->next_ref, "net_kernel", x->buff, (size_t)x->index);
    ei_x_free(x);
}

static void expect_reply(fx *f, const char *want)
{
    char *got = fp_next_reply_text(&f->fp);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void is_auth(ei_x_buff *x, const char *node)
{
    ei_x_new(x);
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "is_auth");
    ei_x_encode_atom(x, node);
}

static void is_auth_gets_yes(void **state)
{
    fx *f = *state;
    assert_ptr_equal(cn_proc_whereis(f->fp.node, "net_kernel"), gs_proc(f->gs));
    ei_x_buff x;
    is_auth(&x, FP_PEER);
    call(f, &x);
    expect_reply(f, "yes");
    /* Whatever node the caller names. */
    is_auth(&x, "other@host");
    call(f, &x);
    expect_reply(f, "yes");
}

/* As net_adm:ping/1 does it: MONITOR_P on the name, the call, DEMONITOR_P. */
static void ping_sequence_gets_yes_and_leaves_no_monitor(void **state)
{
    fx *f = *state;
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 1);
    fp_ref(&ref, 500, 0, 0);
    ei_x_buff ctl, msg, req;
    fp_send_monitor(&f->fp, DOP_MONITOR_P, &from, "net_kernel", NULL, &ref);
    is_auth(&req, FP_PEER);
    fp_ctl_reg_send(&ctl, &from, "net_kernel");
    fp_msg_request(&msg, "$gen_call", &from, &ref, req.buff, (size_t)req.index);
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    ei_x_free(&req);
    expect_reply(f, "yes");
    cn_node_stats st;
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.monitors, 1);
    fp_send_monitor(&f->fp, DOP_DEMONITOR_P, &from, "net_kernel", NULL, &ref);
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.monitors, 0);
}

static void anything_else_is_an_unknown_call(void **state)
{
    fx *f = *state;
    ei_x_buff x;

    ei_x_new(&x);
    ei_x_encode_atom(&x, "is_auth");
    call(f, &x);
    expect_reply(f, "{error,{unknown_call,is_auth}}");

    ei_x_new(&x);
    ei_x_encode_tuple_header(&x, 1);
    ei_x_encode_atom(&x, "is_auth");
    call(f, &x);
    expect_reply(f, "{error,{unknown_call,{is_auth}}}");

    ei_x_new(&x);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "is_auth");
    ei_x_encode_atom(&x, "a");
    ei_x_encode_atom(&x, "b");
    call(f, &x);
    expect_reply(f, "{error,{unknown_call,{is_auth,a,b}}}");

    ei_x_new(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "connect");
    ei_x_encode_atom(&x, FP_PEER);
    call(f, &x);
    expect_reply(f, "{error,{unknown_call,{connect,'peer@127.0.0.1'}}}");

    ei_x_new(&x);
    ei_x_encode_long(&x, 42);
    call(f, &x);
    expect_reply(f, "{error,{unknown_call,42}}");

    /* Still there, still answering. */
    is_auth(&x, FP_PEER);
    call(f, &x);
    expect_reply(f, "yes");
    assert_null(fp_next_reply_text(&f->fp));
}

static void casts_and_messages_are_ignored(void **state)
{
    fx *f = *state;
    erlang_pid from;
    fp_pid(&from, 4);
    ei_x_buff ctl, msg;
    fp_ctl_reg_send(&ctl, &from, "net_kernel");
    fp_msg_cast(&msg, "whatever");
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&msg);
    ei_x_new_with_version(&msg);
    ei_x_encode_tuple_header(&msg, 2);
    ei_x_encode_atom(&msg, "is_auth");
    ei_x_encode_atom(&msg, FP_PEER);
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    /* No reply to either, and the server lives on. */
    assert_null(fp_next_reply_text(&f->fp));
    ei_x_buff x;
    is_auth(&x, FP_PEER);
    call(f, &x);
    expect_reply(f, "yes");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(is_auth_gets_yes, setup, teardown),
        cmocka_unit_test_setup_teardown(ping_sequence_gets_yes_and_leaves_no_monitor, setup, teardown),
        cmocka_unit_test_setup_teardown(anything_else_is_an_unknown_call, setup, teardown),
        cmocka_unit_test_setup_teardown(casts_and_messages_are_ignored, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

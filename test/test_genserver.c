/*
 * Unit tests of genserver/genserver.h over the fake peer: the $gen_call and
 * system protocols, deferral while suspended or continuing, stop results,
 * timers and timeouts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cnode/protocol.h"
#include "genserver/genserver.h"
#include "test/fake_peer.h"

typedef struct tstate {
    long value;
    int terminated;
    int infos;
    int use_continue;
    int64_t timer;
} tstate;

static gs_ret t_init(gs_server *s, const gs_term *arg, gs_result *res)
{
    (void)arg;
    tstate *t = gs_data(s);
    if (t->use_continue)
        ei_x_encode_atom(res->cont, "load");
    return GS_OK;
}

static gs_ret t_continue(gs_server *s, const gs_term *cont, gs_result *res)
{
    (void)res;
    tstate *t = gs_data(s);
    assert_true(gs_term_is_atom(cont, "load"));
    t->value = 1000;
    return GS_NOREPLY;
}

static gs_ret t_call(gs_server *s, const gs_term *req, const gs_from *from, gs_result *res)
{
    (void)from;
    tstate *t = gs_data(s);
    if (gs_term_is_atom(req, "get")) {
        ei_x_encode_long(res->reply, t->value);
        return GS_REPLY;
    }
    if (gs_term_is_atom(req, "bump")) {
        ei_x_encode_long(res->reply, ++t->value);
        return GS_REPLY;
    }
    if (gs_term_is_atom(req, "stop_with_reply")) {
        ei_x_encode_atom(res->reply, "bye");
        ei_x_encode_atom(res->reason, "done");
        return GS_STOP;
    }
    if (gs_term_is_atom(req, "tick_soon")) {
        char msg[16];
        size_t n = cn_term_atom(msg, "tick");
        t->timer = gs_send_after(s, 0, msg, n);
        ei_x_encode_atom(res->reply, "ok");
        return GS_REPLY;
    }
    if (gs_term_is_atom(req, "tick_cancelled")) {
        char msg[16];
        size_t n = cn_term_atom(msg, "tick");
        int64_t id = gs_send_after(s, 0, msg, n);
        ei_x_encode_long(res->reply, gs_cancel_timer(s, id));
        return GS_REPLY;
    }
    if (gs_term_is_atom(req, "with_timeout")) {
        ei_x_encode_atom(res->reply, "ok");
        res->timeout_ms = 0;
        return GS_REPLY;
    }
    return GS_UNKNOWN;
}

static gs_ret t_info(gs_server *s, const gs_term *msg, gs_result *res)
{
    (void)res;
    tstate *t = gs_data(s);
    if (gs_term_is_atom(msg, "tick") || gs_term_is_atom(msg, "timeout")) {
        t->infos++;
        return GS_NOREPLY;
    }
    return GS_UNKNOWN;
}

static void t_terminate(gs_server *s, const gs_term *reason)
{
    (void)reason;
    tstate *t = gs_data(s);
    t->terminated++;
}

static int t_get_state(gs_server *s, ei_x_buff *out)
{
    tstate *t = gs_data(s);
    return ei_x_encode_long(out, t->value);
}

static const gs_callbacks tcb = {
    .module = "Elixir.Test",
    .init = t_init,
    .handle_call = t_call,
    .handle_info = t_info,
    .handle_continue = t_continue,
    .terminate = t_terminate,
    .get_state = t_get_state,
};

typedef struct fx {
    fake_peer fp;
    tstate st;
    gs_server *gs;
    unsigned next_ref;
} fx;

static int start(void **state, int use_continue)
{
    fx *f = calloc(1, sizeof *f);
    if (fp_setup(&f->fp, "k", "k", CN_DFLAGS) != 0)
        return -1;
    f->st.use_continue = use_continue;
    gs_options opt = {.name = "t"};
    if (gs_start(f->fp.node, &tcb, &f->st, &opt, &f->gs) != 0)
        return -1;
    *state = f;
    return 0;
}

static int setup(void **state) { return start(state, 0); }
static int setup_continue(void **state) { return start(state, 1); }

static int teardown(void **state)
{
    fx *f = *state;
    if (cn_proc_whereis(f->fp.node, "t"))
        gs_stop(f->gs, "shutdown");
    fp_teardown(&f->fp);
    free(f);
    return 0;
}

/* Sends {Label, {From, [alias | Ref]}, Request} to t, the request encoded by enc. */
static void send_labelled(fx *f, const char *label, void (*enc)(ei_x_buff *, const void *), const void *arg)
{
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 1);
    fp_ref(&ref, ++f->next_ref, 0, 0);
    ei_x_buff ctl, msg;
    fp_ctl_reg_send(&ctl, &from, "t");
    ei_x_new_with_version(&msg);
    ei_x_encode_tuple_header(&msg, 3);
    ei_x_encode_atom(&msg, label);
    ei_x_encode_tuple_header(&msg, 2);
    ei_x_encode_pid(&msg, &from);
    ei_x_encode_list_header(&msg, 1);
    ei_x_encode_atom(&msg, "alias");
    ei_x_encode_ref(&msg, &ref);
    enc(&msg, arg);
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
}

static void enc_atom(ei_x_buff *x, const void *a) { ei_x_encode_atom(x, a); }
static void enc_terminate(ei_x_buff *x, const void *a)
{
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "terminate");
    ei_x_encode_atom(x, a);
}

static void call(fx *f, const char *req) { send_labelled(f, "$gen_call", enc_atom, req); }
static void sys(fx *f, const char *req) { send_labelled(f, "system", enc_atom, req); }

/* The next reply's payload (what follows the tag) printed as text; NULL if none. */
static char *next_reply(fx *f)
{
    fp_frame_view v;
    if (fp_next(&f->fp, &v) != 0)
        return NULL;
    assert_int_equal(v.op, DOP_ALIAS_SEND);
    int i = v.msg, ver, arity;
    ei_decode_version(v.buf, &i, &ver);
    ei_decode_tuple_header(v.buf, &i, &arity);
    ei_skip_term(v.buf, &i);
    char *text = NULL;
    ei_s_print_term(&text, v.buf, &i);
    fp_view_free(&v);
    /* Compare without the printer's spaces. */
    char *w = text;
    for (char *r = text; r && *r; r++)
        if (*r != ' ')
            *w++ = *r;
    if (w)
        *w = '\0';
    return text;
}

static void expect_reply(fx *f, const char *want)
{
    char *got = next_reply(f);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void sys_get_state_and_status(void **state)
{
    fx *f = *state;
    call(f, "bump");
    expect_reply(f, "1");
    sys(f, "get_state");
    expect_reply(f, "1");
    sys(f, "get_status");
    char *status = next_reply(f);
    assert_non_null(status);
    assert_non_null(strstr(status, "{status,<" FP_NODE "."));
    assert_non_null(strstr(status, "{module,gen_server}"));
    assert_non_null(strstr(status, "running"));
    assert_non_null(strstr(status, "{header,\"Statusforgenericservert\"}"));
    assert_non_null(strstr(status, "{\"State\",1}"));
    free(status);
    sys(f, "frobnicate");
    expect_reply(f, "{error,{unknown_system_msg,frobnicate}}");
}

static void suspend_defers_calls_until_resume(void **state)
{
    fx *f = *state;
    sys(f, "suspend");
    expect_reply(f, "ok");
    call(f, "bump");
    call(f, "bump");
    assert_null(next_reply(f));
    sys(f, "get_status");
    char *status = next_reply(f);
    assert_non_null(strstr(status, "suspended"));
    free(status);
    sys(f, "resume");
    expect_reply(f, "ok");
    expect_reply(f, "1");
    expect_reply(f, "2");
}

static void continue_runs_before_any_call(void **state)
{
    fx *f = *state;
    /* The continue is pending: these calls wait, then see its result, in order. */
    call(f, "get");
    call(f, "bump");
    fp_run(&f->fp);
    expect_reply(f, "1000");
    expect_reply(f, "1001");
}

static void sys_terminate_runs_terminate_and_sends_down(void **state)
{
    fx *f = *state;
    erlang_pid watcher;
    erlang_ref ref;
    fp_pid(&watcher, 7);
    fp_ref(&ref, 77, 0, 0);
    ei_x_buff ctl;
    fp_ctl_monitor(&ctl, DOP_MONITOR_P, &watcher, "t", NULL, &ref);
    fp_send(&f->fp, &ctl, NULL);
    ei_x_free(&ctl);
    send_labelled(f, "system", enc_terminate, "shutdown");
    expect_reply(f, "ok");
    assert_int_equal(f->st.terminated, 1);
    assert_null(cn_proc_whereis(f->fp.node, "t"));
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), 0);
    assert_int_equal(v.op, DOP_PAYLOAD_MONITOR_P_EXIT);
    int i = v.msg, ver;
    char reason[64];
    ei_decode_version(v.buf, &i, &ver);
    assert_int_equal(ei_decode_atom(v.buf, &i, reason), 0);
    assert_string_equal(reason, "shutdown");
    fp_view_free(&v);
}

static void stop_with_reply_replies_then_stops(void **state)
{
    fx *f = *state;
    call(f, "stop_with_reply");
    expect_reply(f, "bye");
    assert_int_equal(f->st.terminated, 1);
    assert_null(cn_proc_whereis(f->fp.node, "t"));
}

static void timers_fire_and_cancel(void **state)
{
    fx *f = *state;
    call(f, "tick_soon");
    expect_reply(f, "ok");
    assert_true(f->st.timer > 0);
    fp_run(&f->fp);
    assert_int_equal(f->st.infos, 1);
    call(f, "tick_cancelled");
    expect_reply(f, "0");
    fp_run(&f->fp);
    assert_int_equal(f->st.infos, 1);
}

static void timeout_result_delivers_timeout(void **state)
{
    fx *f = *state;
    call(f, "with_timeout");
    expect_reply(f, "ok");
    fp_run(&f->fp);
    assert_int_equal(f->st.infos, 1);
}

static void unknown_cast_and_info_change_nothing(void **state)
{
    fx *f = *state;
    erlang_pid from;
    fp_pid(&from, 3);
    ei_x_buff ctl, msg;
    fp_ctl_reg_send(&ctl, &from, "t");
    fp_msg_cast(&msg, "whatever");
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&msg);
    ei_x_new_with_version(&msg);
    ei_x_encode_tuple_header(&msg, 2);
    ei_x_encode_atom(&msg, "random");
    ei_x_encode_long(&msg, 5);
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    call(f, "get");
    expect_reply(f, "0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(sys_get_state_and_status, setup, teardown),
        cmocka_unit_test_setup_teardown(suspend_defers_calls_until_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(continue_runs_before_any_call, setup_continue, teardown),
        cmocka_unit_test_setup_teardown(sys_terminate_runs_terminate_and_sends_down, setup, teardown),
        cmocka_unit_test_setup_teardown(stop_with_reply_replies_then_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(timers_fire_and_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(timeout_result_delivers_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_cast_and_info_change_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

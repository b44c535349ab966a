/*
 * Unit tests of genserver/genserver.h over the fake peer: the $gen_call and
 * system protocols, deferral while suspended or continuing, stop results,
 * timers and timeouts. A second peer, "third", connects to the same node for
 * the tests of system messages forged for a node that did not send them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cnode/log.h"
#include "cnode/protocol.h"
#include "cnode/transport.h"
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

/* :sys.replace_state: integers only, as the counter. */
static int t_put_state(gs_server *s, const gs_term *state)
{
    tstate *t = gs_data(s);
    int i = state->index;
    long v;
    if (ei_decode_long(state->buf, &i, &v) < 0)
        return -1;
    t->value = v;
    return 0;
}

static const gs_callbacks tcb = {
    .module = "Elixir.Test",
    .init = t_init,
    .handle_call = t_call,
    .handle_info = t_info,
    .handle_continue = t_continue,
    .terminate = t_terminate,
    .get_state = t_get_state,
    .put_state = t_put_state,
};

#define THIRD "third@127.0.0.1"

/* A second connected node, on its own in-memory transport; what the node wrote to it is in out. */
typedef struct third_peer {
    cn_conn *conn;
    cn_buf out;
    int closed;
} third_peer;

typedef struct fx {
    fake_peer fp;
    tstate st;
    gs_server *gs;
    unsigned next_ref;
    third_peer third;
} fx;

static int start(void **state, int use_continue)
{
    fx *f = calloc(1, sizeof *f);
    if (fp_setup(&f->fp, "k", "k", FP_FLAGS_ALIAS) != 0)
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
    cn_buf_free(&f->third.out);
    free(f);
    return 0;
}

/* ---- The third node ---- */

static int third_write(cn_conn *c, const char *data, size_t len)
{
    third_peer *t = cn_conn_transport_data(c);
    cn_buf_append(&t->out, data, len);
    cn_conn_written(c, 0);
    return 0;
}

static void third_close(cn_conn *c)
{
    third_peer *t = cn_conn_transport_data(c);
    t->closed = 1;
    t->conn = NULL;
    cn_conn_closed(c);
}

static const cn_transport third_transport = {third_write, third_close, 0};

static uint32_t third_random(void *ctx)
{
    (void)ctx;
    return 0x0badcafeu;
}

/* Connects THIRD to the node with the real handshake, as fp_setup connects the peer. */
static void third_connect(fx *f)
{
    third_peer *t = &f->third;
    cn_buf_init(&t->out);
    t->conn = cn_conn_new(f->fp.node, &third_transport, 0);
    cn_conn_set_transport_data(t->conn, t);
    cn_conn_start_handshake(t->conn, NULL);
    cn_hs hs;
    cn_hs_config hc = {.role = CN_HS_CONNECT, .our_name = THIRD, .cookie = "k", .our_flags = FP_FLAGS_ALIAS,
                       .our_creation = 888, .random32 = third_random, .expect_peer = FP_NODE};
    assert_int_equal(cn_hs_init(&hs, &hc), 0);
    cn_buf tx;
    cn_buf_init(&tx);
    assert_int_equal(cn_hs_start(&hs, &tx), 0);
    for (int round = 0; round < 10 && !cn_hs_done(&hs); round++) {
        cn_conn_feed(t->conn, tx.data, tx.len);
        cn_buf_reset(&tx);
        fp_run(&f->fp);
        int rc = cn_hs_feed(&hs, t->out.data, t->out.len, &tx);
        assert_true(rc >= 0);
        cn_buf_consume(&t->out, (size_t)rc);
        assert_false(t->closed);
    }
    cn_conn_feed(t->conn, tx.data, tx.len);
    fp_run(&f->fp);
    cn_buf_free(&tx);
    assert_true(cn_hs_done(&hs));
    assert_string_equal(cn_conn_peer(t->conn), THIRD);
    cn_buf_reset(&t->out);
}

/* Has the node written the third node anything but ticks since it connected? */
static int third_got_a_frame(fx *f)
{
    const char *p = f->third.out.data;
    for (size_t i = 0; i + 4 <= f->third.out.len; i += 4 + cn_get_u32(p + i))
        if (cn_get_u32(p + i) != 0)
            return 1;
    return 0;
}

/*
 * Sends {Label, {From, [alias | Ref]}, Request} to t from the peer's pid number 1 of
 * the given creation (the peer node's incarnation), the request encoded by enc.
 */
static void send_from(fx *f, unsigned creation, const char *label, void (*enc)(ei_x_buff *, const void *),
                      const void *arg)
{
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 1);
    from.creation = creation;
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

/* The same from the peer's usual incarnation. */
static void send_labelled(fx *f, const char *label, void (*enc)(ei_x_buff *, const void *), const void *arg)
{
    erlang_pid usual;
    fp_pid(&usual, 1);
    send_from(f, usual.creation, label, enc, arg);
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
    /* The first get_state from a node asks it which sys it runs: OTP 25's stdlib here. */
    fp_answer_stdlib(&f->fp, "4.2");
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

/*
 * A registered name of 255 four-byte characters (MAXATOMLEN_UTF8) is whole in
 * :sys.get_status's header, as a list of its code points.
 */
static void a_long_utf8_name_is_whole_in_the_status(void **state)
{
    fx *f = *state;
    char name[4 * 255 + 1];
    for (int k = 0; k < 255; k++)
        memcpy(name + 4 * k, "\xf0\x9d\x84\x9e", 4);    /* U+1D11E, 119070 */
    name[4 * 255] = '\0';
    tstate st = {0};
    gs_server *gs;
    gs_options opt = {.name = name};
    assert_int_equal(gs_start(f->fp.node, &tcb, &st, &opt, &gs), 0);
    char req[16];
    int ri = 0;
    ei_encode_atom(req, &ri, "get_status");
    fp_request(&f->fp, "system", 1, 77, name, req, (size_t)ri);
    char *text = fp_next_reply_text(&f->fp);
    assert_non_null(text);
    int seen = 0;
    for (const char *p = text; (p = strstr(p, "119070")) != NULL; p += 6)
        seen++;
    assert_int_equal(seen, 255);
    /* "Status for generic server " before it: S, t, a, ... */
    assert_non_null(strstr(text, "{header,[83,116,97,116,117,115,32,"));
    free(text);
    gs_stop(gs, "shutdown");
    fp_run(&f->fp);
}

static void enc_replace(ei_x_buff *x, const void *fun)
{
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "replace_state");
    /* An atom stands in for the fun: the server only hands it to the caller's rex. */
    ei_x_encode_atom(x, fun);
}

/* rex's answer to erlang:apply(Fun, [State]): the term printed by enc into a buffer. */
static void answer_fun(fx *f, void (*enc)(ei_x_buff *))
{
    ei_x_buff x;
    ei_x_new(&x);
    enc(&x);
    assert_int_equal(fp_answer_rex(&f->fp, "erlang", "apply", x.buff, (size_t)x.index), 0);
    ei_x_free(&x);
}

static void enc_42(ei_x_buff *x) { ei_x_encode_long(x, 42); }
static void enc_not_an_integer(ei_x_buff *x) { ei_x_encode_atom(x, "not_an_integer"); }

/* {badrpc, {'EXIT', {badarith, [{erlang, '+', 2, []}]}}}: the fun raised an error. */
static void enc_fun_error(ei_x_buff *x)
{
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "badrpc");
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "EXIT");
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "badarith");
    ei_x_encode_list_header(x, 1);
    ei_x_encode_tuple_header(x, 4);
    ei_x_encode_atom(x, "erlang");
    ei_x_encode_atom(x, "+");
    ei_x_encode_long(x, 2);
    ei_x_encode_empty_list(x);
    ei_x_encode_empty_list(x);
}

/* {badrpc, {'EXIT', boom}}: the fun exited. */
static void enc_fun_exit(ei_x_buff *x)
{
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "badrpc");
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "EXIT");
    ei_x_encode_atom(x, "boom");
}

/* stdlib 5.1 (OTP 26.1) and later: {ok, State}, learned once per node incarnation. */
static void sys_state_is_ok_tuple_for_stdlib_5_1_and_later(void **state)
{
    fx *f = *state;
    sys(f, "get_state");
    fp_answer_stdlib(&f->fp, "5.1");
    expect_reply(f, "{ok,0}");
    call(f, "bump");
    expect_reply(f, "1");
    /* Known now: the reply comes at once, no second question. */
    sys(f, "get_state");
    expect_reply(f, "{ok,1}");
    /* The peer node restarted (another creation), now with OTP 25: asked again. */
    send_from(f, 778, "system", enc_atom, "get_state");
    fp_answer_stdlib(&f->fp, "4.2");
    expect_reply(f, "1");
}

/* A node that tells no version (stdlib not loaded): the shape of every current OTP. */
static void no_stdlib_version_means_the_current_shape(void **state)
{
    fx *f = *state;
    sys(f, "get_state");
    char answer[16];
    int n = 0;
    ei_encode_atom(answer, &n, "undefined");
    assert_int_equal(fp_answer_rex(&f->fp, "application", "get_key", answer, (size_t)n), 0);
    expect_reply(f, "{ok,0}");
}

static void replace_state_runs_the_fun_on_the_callers_node(void **state)
{
    fx *f = *state;
    send_labelled(f, "system", enc_replace, "fun");
    fp_answer_stdlib(&f->fp, "6.2");
    answer_fun(f, enc_42);
    expect_reply(f, "{ok,42}");
    call(f, "get");
    expect_reply(f, "42");
    /* The same for an OTP 25 caller (another incarnation of the peer): the plain state. */
    send_from(f, 778, "system", enc_replace, "fun");
    fp_answer_stdlib(&f->fp, "4.2");
    answer_fun(f, enc_42);
    expect_reply(f, "42");
}

/* Failures keep OTP's shape, {error, {callback_failed, {gen_server, system_replace_state}, {Class, Reason}}}. */
static void replace_state_failures_have_otps_shape(void **state)
{
    fx *f = *state;
    send_labelled(f, "system", enc_replace, "fun");
    fp_answer_stdlib(&f->fp, "5.1");
    answer_fun(f, enc_fun_error);
    expect_reply(f, "{error,{callback_failed,{gen_server,system_replace_state},{error,badarith}}}");
    send_labelled(f, "system", enc_replace, "fun");
    answer_fun(f, enc_fun_exit);
    expect_reply(f, "{error,{callback_failed,{gen_server,system_replace_state},{exit,boom}}}");
    send_labelled(f, "system", enc_replace, "fun");
    answer_fun(f, enc_not_an_integer);
    expect_reply(f, "{error,{callback_failed,{gen_server,system_replace_state},{error,state_refused}}}");
    call(f, "get");
    expect_reply(f, "0");
}

/* While the server waits for the answer it holds everything back, resume too, and then handles it in order. */
static void a_resume_held_during_the_question_follows_the_answer(void **state)
{
    fx *f = *state;
    sys(f, "suspend");
    expect_reply(f, "ok");
    call(f, "bump");
    sys(f, "get_state");
    sys(f, "resume");
    fp_answer_stdlib(&f->fp, "4.2");
    expect_reply(f, "0");
    expect_reply(f, "ok");
    expect_reply(f, "1");
    assert_null(next_reply(f));
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
    fp_send_monitor(&f->fp, DOP_MONITOR_P, &watcher, "t", NULL, &ref);
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

/* ---- :sys for a node that did not ask ---- */

/* {system, {From, [alias | Ref]}, Request}, From being pid number `num` of `node`, over the peer. */
static void sys_from(fx *f, const char *node, unsigned num, void (*enc)(ei_x_buff *, const void *),
                     const void *arg)
{
    erlang_pid sender, from;
    erlang_ref ref;
    fp_pid(&sender, 1);
    fp_pid(&from, num);
    snprintf(from.node, sizeof from.node, "%s", node);
    fp_ref(&ref, ++f->next_ref, 0, 0);
    ei_x_buff ctl, msg;
    fp_ctl_reg_send(&ctl, &sender, "t");
    ei_x_new_with_version(&msg);
    ei_x_encode_tuple_header(&msg, 3);
    ei_x_encode_atom(&msg, "system");
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

/*
 * The call the server sent to the peer's rex: asserts a REG_SEND to rex and
 * its $gen_call shape, and returns the call's tag (our reference).
 */
static void expect_rex_call(fx *f, erlang_ref *tag)
{
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), 0);
    assert_int_equal(v.op, DOP_REG_SEND);
    int i = v.ctl;
    erlang_pid from;
    char name[MAXATOMLEN_UTF8];
    assert_int_equal(ei_decode_pid(v.buf, &i, &from), 0);
    assert_int_equal(ei_skip_term(v.buf, &i), 0);
    assert_int_equal(ei_decode_atom(v.buf, &i, name), 0);
    assert_string_equal(name, "rex");
    i = v.msg;
    int ver, arity;
    assert_int_equal(ei_decode_version(v.buf, &i, &ver), 0);
    assert_int_equal(ei_decode_tuple_header(v.buf, &i, &arity), 0);
    assert_int_equal(arity, 3);
    assert_int_equal(ei_skip_term(v.buf, &i), 0);
    assert_int_equal(ei_decode_tuple_header(v.buf, &i, &arity), 0);
    assert_int_equal(ei_skip_term(v.buf, &i), 0);
    assert_int_equal(ei_decode_ref(v.buf, &i, tag), 0);
    fp_view_free(&v);
}

/* msg (versioned) sent to the server's pid over conn c (the peer's or the third's). */
static void send_to_server(fx *f, cn_conn *c, const ei_x_buff *msg)
{
    erlang_pid to;
    gs_self(f->gs, &to);
    ei_x_buff ctl;
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, 3);
    ei_x_encode_long(&ctl, DOP_SEND);
    ei_x_encode_atom(&ctl, "");
    ei_x_encode_pid(&ctl, &to);
    cn_buf b;
    cn_buf_init(&b);
    fp_frame(&b, &ctl, msg);
    cn_conn_feed(c, b.data, b.len);
    cn_buf_free(&b);
    ei_x_free(&ctl);
    fp_run(&f->fp);
}

/* {Tag, Value} to the server over conn c, as rex answers. */
static void answer_rex(fx *f, cn_conn *c, const erlang_ref *tag, long value)
{
    ei_x_buff msg;
    ei_x_new_with_version(&msg);
    ei_x_encode_tuple_header(&msg, 2);
    ei_x_encode_ref(&msg, tag);
    ei_x_encode_long(&msg, value);
    send_to_server(f, c, &msg);
    ei_x_free(&msg);
}

/*
 * Issue 9, 3: the peer forges :sys requests whose From is a process of the
 * third node. None is acted on: nothing goes to the third node (no rex call,
 * no reply), nothing back to the peer, and the server is as it was.
 */
static void sys_for_a_third_node_is_dropped(void **state)
{
    fx *f = *state;
    third_connect(f);
    cn_log_level saved = cn_log_threshold;
    cn_log_threshold = CN_LOG_ERROR;
    sys_from(f, THIRD, 5, enc_replace, "fun");
    sys_from(f, THIRD, 5, enc_atom, "get_state");
    sys_from(f, THIRD, 5, enc_atom, "suspend");
    sys_from(f, THIRD, 5, enc_terminate, "shutdown");
    cn_log_threshold = saved;
    assert_false(third_got_a_frame(f));
    assert_false(f->third.closed);
    assert_null(next_reply(f));
    /* Not suspended, not terminated, not waiting for a fun: a call is answered at once. */
    call(f, "bump");
    expect_reply(f, "1");
    assert_int_equal(f->st.terminated, 0);
    /* The peer's own request for its own process is still served (its stdlib asked first). */
    sys(f, "get_state");
    fp_answer_stdlib(&f->fp, "4.2");
    expect_reply(f, "1");
}

/* A local process forging a From on the peer's node makes no call to the peer's rex either. */
static void a_local_sender_cannot_speak_for_the_peer(void **state)
{
    fx *f = *state;
    cn_proc *local = cn_proc_spawn(f->fp.node, &(const cn_proc_ops){0}, NULL);
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 9);
    fp_ref(&ref, 99, 0, 0);
    ei_x_buff msg;
    ei_x_new_with_version(&msg);
    ei_x_encode_tuple_header(&msg, 3);
    ei_x_encode_atom(&msg, "system");
    ei_x_encode_tuple_header(&msg, 2);
    ei_x_encode_pid(&msg, &from);
    ei_x_encode_ref(&msg, &ref);
    enc_replace(&msg, "fun");
    cn_log_level saved = cn_log_threshold;
    cn_log_threshold = CN_LOG_ERROR;
    assert_int_equal(cn_send_name(local, "t", NULL, msg.buff, (size_t)msg.index), 0);
    ei_x_free(&msg);
    fp_run(&f->fp);
    cn_log_threshold = saved;
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), -1);
    cn_proc_exit(local, NULL, 0);
    call(f, "get");
    expect_reply(f, "0");
}

/*
 * While a replace_state waits for the peer's rex, the third node sends the
 * answer with the right tag (our references are easy to guess), and the peer
 * the server's own timeout message: neither ends the wait, and the real
 * answer from the peer does.
 */
static void a_rex_answer_from_another_node_is_not_taken(void **state)
{
    fx *f = *state;
    third_connect(f);
    sys_from(f, FP_PEER, 1, enc_replace, "fun");
    fp_answer_stdlib(&f->fp, "4.2");
    erlang_ref tag;
    expect_rex_call(f, &tag);
    cn_log_level saved = cn_log_threshold;
    cn_log_threshold = CN_LOG_ERROR; /* the forged answer ends as an unknown message */
    answer_rex(f, f->third.conn, &tag, 666);
    ei_x_buff timeout;
    ei_x_new_with_version(&timeout);
    ei_x_encode_atom(&timeout, "$gs_sys_timeout");
    send_to_server(f, f->fp.conn, &timeout);
    ei_x_free(&timeout);
    assert_null(next_reply(f));
    answer_rex(f, f->fp.conn, &tag, 42);
    expect_reply(f, "42");
    cn_log_threshold = saved;
    call(f, "get");
    expect_reply(f, "42");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(sys_get_state_and_status, setup, teardown),
        cmocka_unit_test_setup_teardown(a_long_utf8_name_is_whole_in_the_status, setup, teardown),
        cmocka_unit_test_setup_teardown(sys_state_is_ok_tuple_for_stdlib_5_1_and_later, setup, teardown),
        cmocka_unit_test_setup_teardown(no_stdlib_version_means_the_current_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(replace_state_runs_the_fun_on_the_callers_node, setup, teardown),
        cmocka_unit_test_setup_teardown(replace_state_failures_have_otps_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(a_resume_held_during_the_question_follows_the_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(suspend_defers_calls_until_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(continue_runs_before_any_call, setup_continue, teardown),
        cmocka_unit_test_setup_teardown(sys_terminate_runs_terminate_and_sends_down, setup, teardown),
        cmocka_unit_test_setup_teardown(stop_with_reply_replies_then_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(timers_fire_and_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(timeout_result_delivers_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_cast_and_info_change_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(sys_for_a_third_node_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(a_local_sender_cannot_speak_for_the_peer, setup, teardown),
        cmocka_unit_test_setup_teardown(a_rex_answer_from_another_node_is_not_taken, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

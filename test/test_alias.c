/*
 * Unit tests of cnode/alias.c: a local process calls a server on the fake peer
 * as gen:call does (MONITOR_P by name, the reply to the alias, DEMONITOR_P),
 * and a DOWN from the peer reaches it as erlang:monitor delivers one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cnode/error.h"
#include "cnode/proc.h"
#include "cnode/protocol.h"
#include "test/fake_peer.h"

/* What the caller process received: the count and the last message. */
typedef struct inbox {
    int count;
    char last[512];
    size_t last_len;
} inbox;

static void on_message(cn_proc *p, const char *buf, size_t len)
{
    inbox *in = cn_proc_data(p);
    in->count++;
    assert_true(len <= sizeof in->last);
    memcpy(in->last, buf, len);
    in->last_len = len;
}

static const cn_proc_ops caller_ops = {.message = on_message};

typedef struct fixture {
    fake_peer fp;
    inbox in;
    cn_proc *caller;
} fixture;

static int setup_flags(void **state, uint64_t flags)
{
    static fixture f;
    memset(&f, 0, sizeof f);
    if (fp_setup(&f.fp, "secret", "secret", flags) != 0)
        return -1;
    f.caller = cn_proc_spawn(f.fp.node, &caller_ops, &f.in);
    *state = &f;
    return 0;
}

static int setup(void **state) { return setup_flags(state, FP_FLAGS_ALIAS); }
static int setup_altact(void **state) { return setup_flags(state, CN_DFLAGS); }

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->caller != NULL)
        cn_proc_exit(f->caller, NULL, 0);
    fp_teardown(&f->fp);
    return 0;
}

/* The peer's server replies {[alias | Ref], Value} to the alias, as ALIAS_SEND or ALTACT_SIG_SEND. */
static void reply_to_alias(fixture *f, const erlang_ref *ref, long value, int altact)
{
    erlang_pid from;
    fp_pid(&from, 7);
    ei_x_buff ctl, msg;
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, altact ? 4 : 3);
    ei_x_encode_long(&ctl, altact ? DOP_ALTACT_SIG_SEND : DOP_ALIAS_SEND);
    if (altact)
        ei_x_encode_long(&ctl, CN_ALTACT_ALIAS);
    ei_x_encode_pid(&ctl, &from);
    ei_x_encode_ref(&ctl, ref);
    ei_x_new_with_version(&msg);
    ei_x_encode_tuple_header(&msg, 2);
    ei_x_encode_list_header(&msg, 1);
    ei_x_encode_atom(&msg, "alias");
    ei_x_encode_ref(&msg, ref);
    ei_x_encode_long(&msg, value);
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    fp_run(&f->fp);
}

/* The next frame is op (MONITOR_P or DEMONITOR_P) {Op, CallerPid, name, Ref} with ref. */
static void expect_monitor_op(fixture *f, long op, const char *name, const erlang_ref *ref)
{
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), 0);
    assert_int_equal(v.op, op);
    int i = v.ctl;
    erlang_pid pid, self;
    erlang_ref r;
    char atom[MAXATOMLEN_UTF8];
    assert_int_equal(ei_decode_pid(v.buf, &i, &pid), 0);
    cn_proc_pid(f->caller, &self);
    assert_int_equal(pid.num, self.num);
    assert_string_equal(pid.node, FP_NODE);
    assert_int_equal(ei_decode_atom(v.buf, &i, atom), 0);
    assert_string_equal(atom, name);
    assert_int_equal(ei_decode_ref(v.buf, &i, &r), 0);
    assert_int_equal(r.len, ref->len);
    assert_memory_equal(r.n, ref->n, sizeof r.n[0] * (size_t)r.len);
    assert_int_equal(v.msg, -1);
    fp_view_free(&v);
}

static void a_call_monitors_by_name_and_the_reply_reaches_the_alias(void **state)
{
    fixture *f = *state;
    erlang_ref ref;
    assert_int_equal(cn_proc_monitor_name(f->caller, "counter", FP_PEER, &ref), 0);
    fp_run(&f->fp);
    expect_monitor_op(f, DOP_MONITOR_P, "counter", &ref);
    reply_to_alias(f, &ref, 42, 0);
    assert_int_equal(f->in.count, 1);
    int i = 0, ver, arity;
    long v;
    assert_int_equal(ei_decode_version(f->in.last, &i, &ver), 0);
    assert_int_equal(ei_decode_tuple_header(f->in.last, &i, &arity), 0);
    assert_int_equal(arity, 2);
    assert_int_equal(ei_skip_term(f->in.last, &i), 0);
    assert_int_equal(ei_decode_long(f->in.last, &i, &v), 0);
    assert_int_equal(v, 42);
}

static void demonitor_sends_demonitor_p_and_ends_the_alias(void **state)
{
    fixture *f = *state;
    erlang_ref ref;
    assert_int_equal(cn_proc_monitor_name(f->caller, "counter", FP_PEER, &ref), 0);
    assert_int_equal(cn_proc_demonitor_name(f->caller, "counter", FP_PEER, &ref), 0);
    fp_run(&f->fp);
    expect_monitor_op(f, DOP_MONITOR_P, "counter", &ref);
    expect_monitor_op(f, DOP_DEMONITOR_P, "counter", &ref);
    /* A late reply, after the caller gave up: dropped, as the BEAM drops it. */
    reply_to_alias(f, &ref, 1, 0);
    assert_int_equal(f->in.count, 0);
    assert_true(cn_proc_alive(f->caller));
}

static void altact_replies_reach_the_alias(void **state)
{
    fixture *f = *state;
    erlang_ref ref;
    assert_int_equal(cn_proc_monitor_name(f->caller, "rate_limiter", FP_PEER, &ref), 0);
    fp_run(&f->fp);
    expect_monitor_op(f, DOP_MONITOR_P, "rate_limiter", &ref);
    reply_to_alias(f, &ref, 7, 1);
    assert_int_equal(f->in.count, 1);
}

/*
 * The peer reports the server gone, with the reason in the control tuple or,
 * from a peer with EXIT_PAYLOAD, after it: the watcher gets
 * {'DOWN', Ref, process, {counter, Peer}, noproc}, and the alias ends.
 */
static void down_reaches_the_watcher(fixture *f, int payload)
{
    erlang_ref ref;
    assert_int_equal(cn_proc_monitor_name(f->caller, "counter", FP_PEER, &ref), 0);
    fp_run(&f->fp);
    expect_monitor_op(f, DOP_MONITOR_P, "counter", &ref);
    erlang_pid self;
    cn_proc_pid(f->caller, &self);
    ei_x_buff ctl, reason;
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, payload ? 4 : 5);
    ei_x_encode_long(&ctl, payload ? DOP_PAYLOAD_MONITOR_P_EXIT : DOP_MONITOR_P_EXIT);
    ei_x_encode_atom(&ctl, "counter");
    ei_x_encode_pid(&ctl, &self);
    ei_x_encode_ref(&ctl, &ref);
    ei_x_new_with_version(&reason);
    ei_x_encode_atom(payload ? &reason : &ctl, "noproc");
    fp_send(&f->fp, &ctl, payload ? &reason : NULL);
    ei_x_free(&ctl);
    ei_x_free(&reason);
    fp_run(&f->fp);
    assert_int_equal(f->in.count, 1);
    char text[512];
    char *s = text;
    int i = 0, ver;
    assert_int_equal(ei_decode_version(f->in.last, &i, &ver), 0);
    assert_true(ei_s_print_term(&s, f->in.last, &i) > 0);
    assert_non_null(strstr(s, "{'DOWN', #Ref<"));
    assert_non_null(strstr(s, ">, process, {counter, 'peer@127.0.0.1'}, noproc}"));
    if (s != text)
        free(s);
    reply_to_alias(f, &ref, 1, 0);
    assert_int_equal(f->in.count, 1);
}

static void down_reaches_the_watcher_and_ends_the_alias(void **state) { down_reaches_the_watcher(*state, 0); }
static void payload_down_reaches_the_watcher(void **state) { down_reaches_the_watcher(*state, 1); }

static void an_alias_of_an_exited_process_is_dropped(void **state)
{
    fixture *f = *state;
    erlang_ref ref;
    assert_int_equal(cn_proc_monitor_name(f->caller, "counter", FP_PEER, &ref), 0);
    cn_proc_exit(f->caller, NULL, 0);
    f->caller = NULL;       /* freed at the end of the turn */
    fp_run(&f->fp);
    reply_to_alias(f, &ref, 1, 0);
    assert_int_equal(f->in.count, 0);
}

static void monitoring_a_node_not_connected_is_enoconn(void **state)
{
    fixture *f = *state;
    erlang_ref ref;
    assert_int_equal(cn_proc_monitor_name(f->caller, "counter", "nobody@127.0.0.1", &ref), CN_ENOCONN);
    fp_run(&f->fp);
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), -1);
}

/* The connection to the peer goes: a frame that breaks the protocol closes it. */
static void lose_the_connection(fixture *f)
{
    const char bad[] = {0, 0, 0, 1, 'x'};
    cn_conn_feed(f->fp.conn, bad, sizeof bad);
    fp_run(&f->fp);
    assert_true(f->fp.closed);
}

/* The last message is {'DOWN', ref, process, {name, Peer}, noconnection}. */
static void expect_noconnection_down(fixture *f, const erlang_ref *ref, const char *name)
{
    int i = 0, ver, arity;
    char atom[MAXATOMLEN_UTF8];
    erlang_ref r;
    assert_int_equal(ei_decode_version(f->in.last, &i, &ver), 0);
    assert_int_equal(ei_decode_tuple_header(f->in.last, &i, &arity), 0);
    assert_int_equal(arity, 5);
    assert_int_equal(ei_decode_atom(f->in.last, &i, atom), 0);
    assert_string_equal(atom, "DOWN");
    assert_int_equal(ei_decode_ref(f->in.last, &i, &r), 0);
    assert_int_equal(r.len, ref->len);
    assert_memory_equal(r.n, ref->n, sizeof r.n[0] * (size_t)r.len);
    assert_int_equal(r.creation, ref->creation);
    assert_string_equal(r.node, ref->node);
    assert_int_equal(ei_decode_atom(f->in.last, &i, atom), 0);
    assert_string_equal(atom, "process");
    assert_int_equal(ei_decode_tuple_header(f->in.last, &i, &arity), 0);
    assert_int_equal(arity, 2);
    assert_int_equal(ei_decode_atom(f->in.last, &i, atom), 0);
    assert_string_equal(atom, name);
    assert_int_equal(ei_decode_atom(f->in.last, &i, atom), 0);
    assert_string_equal(atom, FP_PEER);
    assert_int_equal(ei_decode_atom(f->in.last, &i, atom), 0);
    assert_string_equal(atom, "noconnection");
    assert_int_equal((size_t)i, f->in.last_len);
}

/*
 * A call in flight when the connection goes: the caller gets the DOWN with
 * noconnection at once, as erlang:monitor delivers it, for each monitor (a
 * name longer than the entry keeps inline too); the aliases are gone.
 */
static void a_lost_connection_downs_each_monitor_with_noconnection(void **state)
{
    fixture *f = *state;
    static const char long_name[] = "a_server_registered_under_a_name_longer_than_fifty_characters";
    erlang_ref r1, r2;
    assert_int_equal(cn_proc_monitor_name(f->caller, "counter", FP_PEER, &r1), 0);
    assert_int_equal(cn_proc_monitor_name(f->caller, long_name, FP_PEER, &r2), 0);
    fp_run(&f->fp);
    assert_int_equal(f->in.count, 0);
    lose_the_connection(f);
    assert_int_equal(f->in.count, 2);
    /* The table is walked in whatever order: the last DOWN is for one of the two. */
    int i = 0, ver, arity;
    char atom[MAXATOMLEN_UTF8];
    erlang_ref r;
    assert_int_equal(ei_decode_version(f->in.last, &i, &ver), 0);
    assert_int_equal(ei_decode_tuple_header(f->in.last, &i, &arity), 0);
    assert_int_equal(ei_decode_atom(f->in.last, &i, atom), 0);
    assert_int_equal(ei_decode_ref(f->in.last, &i, &r), 0);
    int second = r.n[0] == r2.n[0] && r.n[1] == r2.n[1] && r.n[2] == r2.n[2];
    expect_noconnection_down(f, second ? &r2 : &r1, second ? long_name : "counter");
    assert_int_equal(cn_proc_demonitor_name(f->caller, "counter", FP_PEER, &r1), CN_ENOCONN);
    assert_int_equal(f->in.count, 2);
}

/* A call that ended (demonitored after its reply) gets nothing when the connection goes later. */
static void a_demonitored_call_gets_no_down_when_the_connection_goes(void **state)
{
    fixture *f = *state;
    erlang_ref ref;
    assert_int_equal(cn_proc_monitor_name(f->caller, "counter", FP_PEER, &ref), 0);
    fp_run(&f->fp);
    reply_to_alias(f, &ref, 5, 0);
    assert_int_equal(f->in.count, 1);
    assert_int_equal(cn_proc_demonitor_name(f->caller, "counter", FP_PEER, &ref), 0);
    fp_run(&f->fp);
    lose_the_connection(f);
    assert_int_equal(f->in.count, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_call_monitors_by_name_and_the_reply_reaches_the_alias, setup, teardown),
        cmocka_unit_test_setup_teardown(demonitor_sends_demonitor_p_and_ends_the_alias, setup, teardown),
        cmocka_unit_test_setup_teardown(altact_replies_reach_the_alias, setup_altact, teardown),
        cmocka_unit_test_setup_teardown(down_reaches_the_watcher_and_ends_the_alias, setup, teardown),
        cmocka_unit_test_setup_teardown(payload_down_reaches_the_watcher, setup, teardown),
        cmocka_unit_test_setup_teardown(an_alias_of_an_exited_process_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(monitoring_a_node_not_connected_is_enoconn, setup, teardown),
        cmocka_unit_test_setup_teardown(a_lost_connection_downs_each_monitor_with_noconnection, setup, teardown),
        cmocka_unit_test_setup_teardown(a_demonitored_call_gets_no_down_when_the_connection_goes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * OTP 28's ALTACT_SIG over the fake peer, both sides.
 *
 * Sending: a peer that advertises DFLAG_ALTACT_SIG gets the replies to its
 * calls as ALTACT_SIG_SEND {37, Flags, FromPid, Alias}, Flags the ALIAS bit
 * alone; one with only ALIAS gets ALIAS_SEND; one with neither, a send to its pid.
 *
 * Receiving: ALTACT_SIG_SEND in every form erts_dsig_send_msg() and
 * erts_dsig_send_exit2() in erts/emulator/beam/dist.c build (to an alias, a name
 * or a pid; with or without a seq_trace token; priority; exit signals), judged as
 * erts_net_message() judges them: a message to an alias this node never created
 * is dropped, as is one to a name nobody has; a malformed one closes the
 * connection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cnode/proc.h"
#include "cnode/protocol.h"
#include "genserver/counter.h"
#include "test/fake_peer.h"

/* A process that keeps the last message it got and counts them; it traps exits. */
typedef struct box {
    int got;
    char last[256];
    size_t last_len;
} box;

typedef struct fixture {
    fake_peer fp;
    counter_config cfg;
    gs_server *counter;
    box box;
    cn_proc *boxp;
    erlang_pid box_pid;
} fixture;

static void box_message(cn_proc *p, const char *buf, size_t len)
{
    box *b = cn_proc_data(p);
    b->got++;
    b->last_len = len < sizeof b->last ? len : sizeof b->last;
    memcpy(b->last, buf, b->last_len);
}

static const cn_proc_ops box_ops = {box_message, NULL};

static fixture *fx_new(uint64_t peer_flags)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(fp_setup(&f->fp, "k", "k", peer_flags), 0);
    assert_int_equal(counter_start(f->fp.node, &f->cfg, "counter", NULL, &f->counter), 0);
    f->boxp = cn_proc_spawn(f->fp.node, &box_ops, &f->box);
    assert_int_equal(cn_proc_register(f->boxp, "box"), 0);
    cn_proc_trap_exit(f->boxp, 1);
    cn_proc_pid(f->boxp, &f->box_pid);
    return f;
}

static void fx_free(fixture *f)
{
    if (cn_proc_whereis(f->fp.node, "counter"))
        gs_stop(f->counter, "shutdown");
    fp_teardown(&f->fp);
    free(f);
}

static int setup(void **state)
{
    *state = fx_new(CN_DFLAGS);
    return 0;
}

static int teardown(void **state)
{
    fx_free(*state);
    return 0;
}

/* GenServer.call(counter, req) with the tag [alias | Ref] (alias) or a plain Ref. */
static void call(fixture *f, unsigned refn, int alias, const char *req)
{
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 100 + refn);
    fp_ref(&ref, refn, 2, 3);
    ei_x_buff ctl, msg;
    fp_ctl_reg_send(&ctl, &from, "counter");
    fp_msg_call(&msg, &from, &ref, alias, req);
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
}

static cn_node_stats stats(fixture *f)
{
    cn_node_stats st;
    cn_node_get_stats(f->fp.node, &st);
    return st;
}

/* ---- Sending ---- */

/* The whole reply frame, field by field: {37, 4, CounterPid, Alias} then {[alias | Ref], 1}. */
static void reply_to_altact_peer_is_altact_sig_send(void **state)
{
    fixture *f = *state;
    call(f, 1, 1, "increment");
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), 0);
    assert_int_equal(v.op, DOP_ALTACT_SIG_SEND);
    int i = 1, ver, arity;
    ei_decode_version(v.buf, &i, &ver);
    assert_int_equal(ei_decode_tuple_header(v.buf, &i, &arity), 0);
    assert_int_equal(arity, 4);
    i = v.ctl;
    long flags;
    assert_int_equal(ei_decode_long(v.buf, &i, &flags), 0);
    assert_int_equal(flags, CN_ALTACT_ALIAS);
    erlang_pid from, counter;
    assert_int_equal(ei_decode_pid(v.buf, &i, &from), 0);
    cn_proc_pid(cn_proc_whereis(f->fp.node, "counter"), &counter);
    assert_int_equal(from.num, counter.num);
    assert_string_equal(from.node, FP_NODE);
    erlang_ref alias;
    assert_int_equal(ei_decode_ref(v.buf, &i, &alias), 0);
    assert_string_equal(alias.node, FP_PEER);
    assert_int_equal(alias.n[0], 1);
    assert_int_equal(alias.n[1], 2);
    assert_int_equal(alias.n[2], 3);
    /* The control tuple ends where the message begins, and the message ends the frame. */
    assert_int_equal(i, v.msg);
    char *text = NULL;
    i = v.msg + 1;
    assert_true(ei_s_print_term(&text, v.buf, &i) > 0);
    assert_int_equal((size_t)i, v.len);
    assert_non_null(strstr(text, "[alias"));
    assert_non_null(strstr(text, ", 1}"));
    free(text);
    fp_view_free(&v);
    assert_int_equal(stats(f).altact_sends, 1);
    assert_int_equal(stats(f).alias_sends, 0);
}

static long next_op(fixture *f)
{
    fp_frame_view v;
    if (fp_next(&f->fp, &v) != 0)
        return -1;
    long op = v.op;
    fp_view_free(&v);
    return op;
}

/* An OTP 24-27 peer (ALIAS only) gets ALIAS_SEND, as before. */
static void reply_to_alias_only_peer_is_alias_send(void **state)
{
    (void)state;
    fixture *f = fx_new(FP_FLAGS_ALIAS);
    call(f, 1, 1, "increment");
    assert_int_equal(next_op(f), DOP_ALIAS_SEND);
    assert_int_equal(stats(f).alias_sends, 1);
    assert_int_equal(stats(f).altact_sends, 0);
    fx_free(f);
}

/* OTP 30 drops ALIAS: a peer with ALTACT_SIG alone still gets its replies at the alias. */
static void reply_to_altact_only_peer_is_altact_sig_send(void **state)
{
    (void)state;
    fixture *f = fx_new(CN_DFLAGS & ~DFLAG_ALIAS);
    call(f, 1, 1, "increment");
    assert_int_equal(next_op(f), DOP_ALTACT_SIG_SEND);
    fx_free(f);
}

/* Neither flag: the reply goes to the caller's pid. A tag without alias too. */
static void reply_without_alias_goes_to_pid(void **state)
{
    fixture *f = *state;
    call(f, 1, 0, "increment");
    assert_int_equal(next_op(f), DOP_SEND_SENDER);
    fixture *g = fx_new(CN_DFLAGS & ~(DFLAG_ALIAS | DFLAG_ALTACT_SIG));
    call(g, 1, 1, "increment");
    assert_int_equal(next_op(g), DOP_SEND_SENDER);
    fx_free(g);
}

/* ---- Receiving ---- */

/* To of an ALTACT_SIG_SEND: a ref, a name or a pid. */
typedef struct to {
    const erlang_ref *alias;
    const char *name;
    const erlang_pid *pid;
} to;

static void enc_to(ei_x_buff *x, const to *t)
{
    if (t->alias)
        ei_x_encode_ref(x, t->alias);
    else if (t->name)
        ei_x_encode_atom(x, t->name);
    else
        ei_x_encode_pid(x, t->pid);
}

/* A seq_trace token as erts carries it: {Flags, Label, Serial, From, LastCnt}. */
static void enc_token(ei_x_buff *x, const erlang_pid *from)
{
    ei_x_encode_tuple_header(x, 5);
    ei_x_encode_long(x, 1);
    ei_x_encode_long(x, 42);
    ei_x_encode_long(x, 7);
    ei_x_encode_pid(x, from);
    ei_x_encode_long(x, 6);
}

/*
 * Sends {37, Flags, From, To} (a 5-tuple with the token when Flags has TOKEN),
 * then the payload atom (a message or an exit reason).
 */
static void send_altact(fixture *f, long flags, const to *t, const char *payload)
{
    erlang_pid from;
    fp_pid(&from, 60);
    ei_x_buff ctl, msg;
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, (flags & CN_ALTACT_TOKEN) ? 5 : 4);
    ei_x_encode_long(&ctl, DOP_ALTACT_SIG_SEND);
    ei_x_encode_long(&ctl, flags);
    ei_x_encode_pid(&ctl, &from);
    enc_to(&ctl, t);
    if (flags & CN_ALTACT_TOKEN)
        enc_token(&ctl, &from);
    ei_x_new_with_version(&msg);
    ei_x_encode_atom(&msg, payload);
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
}

/* The box's last message printed, spaces removed. */
static char *box_text(fixture *f)
{
    int i = 1;
    char *text = NULL;
    assert_true(ei_s_print_term(&text, f->box.last, &i) > 0);
    char *w = text;
    for (const char *r = text; *r; r++)
        if (*r != ' ')
            *w++ = *r;
    *w = '\0';
    return text;
}

static void assert_box_got(fixture *f, int n, const char *text)
{
    assert_int_equal(f->box.got, n);
    char *t = box_text(f);
    assert_string_equal(t, text);
    free(t);
}

/* Nothing delivered, nothing answered, the connection still up. */
static void assert_dropped(fixture *f, uint64_t messages_before)
{
    assert_int_equal(f->box.got, 0);
    assert_int_equal(stats(f).messages_in, messages_before);
    assert_int_equal(f->fp.closed, 0);
    assert_int_equal(next_op(f), -1);
}

/*
 * To an alias this node never created, in each form erts sends one: plain,
 * with a token, priority, and an exit signal to an alias (exit/2 on a ref).
 * The BEAM drops all of these for an alias that is not active; so do we.
 */
static void altact_to_unknown_alias_is_dropped(void **state)
{
    fixture *f = *state;
    erlang_ref ref;
    fp_ref(&ref, 77, 0, 0);
    strcpy(ref.node, FP_NODE);          /* an alias would be a reference of this node */
    to t = {.alias = &ref};
    uint64_t before = stats(f).messages_in;
    const long forms[] = {
        CN_ALTACT_ALIAS,
        CN_ALTACT_ALIAS | CN_ALTACT_TOKEN,
        CN_ALTACT_ALIAS | CN_ALTACT_PRIO,
        CN_ALTACT_ALIAS | CN_ALTACT_PRIO | CN_ALTACT_TOKEN,
        CN_ALTACT_ALIAS | CN_ALTACT_EXIT,
        CN_ALTACT_ALIAS | CN_ALTACT_EXIT | CN_ALTACT_PRIO,
    };
    for (size_t k = 0; k < sizeof forms / sizeof forms[0]; k++)
        send_altact(f, forms[k], &t, "late");
    assert_dropped(f, before);
    /* The connection works on: a call is answered. */
    call(f, 1, 1, "get_value");
    assert_int_equal(next_op(f), DOP_ALTACT_SIG_SEND);
}

/* To a registered name (priority sends to a name use it): delivered, token or not. */
static void altact_to_name_delivers(void **state)
{
    fixture *f = *state;
    to t = {.name = "box"};
    send_altact(f, CN_ALTACT_NAME, &t, "one");
    assert_box_got(f, 1, "one");
    send_altact(f, CN_ALTACT_NAME | CN_ALTACT_PRIO, &t, "two");
    assert_box_got(f, 2, "two");
    send_altact(f, CN_ALTACT_NAME | CN_ALTACT_TOKEN, &t, "three");
    assert_box_got(f, 3, "three");
    /* And a cast to the counter by name, then a call that sees it. */
    ei_x_buff ctl, msg;
    erlang_pid from;
    fp_pid(&from, 61);
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, 4);
    ei_x_encode_long(&ctl, DOP_ALTACT_SIG_SEND);
    ei_x_encode_long(&ctl, CN_ALTACT_NAME | CN_ALTACT_PRIO);
    ei_x_encode_pid(&ctl, &from);
    ei_x_encode_atom(&ctl, "counter");
    fp_msg_cast(&msg, "increment");
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    call(f, 1, 1, "get_value");
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), 0);
    char *text = NULL;
    int i = v.msg + 1;
    ei_s_print_term(&text, v.buf, &i);
    assert_non_null(strstr(text, ", 1}"));
    free(text);
    fp_view_free(&v);
}

/* A name nobody has: dropped, as erts drops it ("No such process registered"). */
static void altact_to_unregistered_name_is_dropped(void **state)
{
    fixture *f = *state;
    to t = {.name = "nobody"};
    uint64_t before = stats(f).messages_in;
    send_altact(f, CN_ALTACT_NAME, &t, "hello");
    send_altact(f, CN_ALTACT_NAME | CN_ALTACT_EXIT, &t, "kill");
    assert_dropped(f, before);
}

/* To a pid (a priority send to a pid): delivered, token or not. */
static void altact_to_pid_delivers(void **state)
{
    fixture *f = *state;
    to t = {.pid = &f->box_pid};
    send_altact(f, CN_ALTACT_PRIO, &t, "one");
    assert_box_got(f, 1, "one");
    send_altact(f, 0, &t, "two");
    assert_box_got(f, 2, "two");
    send_altact(f, CN_ALTACT_PRIO | CN_ALTACT_TOKEN, &t, "three");
    assert_box_got(f, 3, "three");
}

/* EXIT: exit/3 with priority; the payload is the reason, delivered as exit/2's signal. */
static void altact_exit_is_an_exit_signal(void **state)
{
    fixture *f = *state;
    to t = {.pid = &f->box_pid};
    send_altact(f, CN_ALTACT_EXIT | CN_ALTACT_PRIO, &t, "boom");
    assert_box_got(f, 1, "{'EXIT',<peer@127.0.0.1.60.0>,boom}");
    to n = {.name = "box"};
    send_altact(f, CN_ALTACT_EXIT | CN_ALTACT_NAME, &n, "bang");
    assert_box_got(f, 2, "{'EXIT',<peer@127.0.0.1.60.0>,bang}");
    /* kill cannot be trapped. */
    send_altact(f, CN_ALTACT_EXIT | CN_ALTACT_PRIO, &t, "kill");
    assert_null(cn_proc_whereis(f->fp.node, "box"));
    assert_int_equal(f->fp.closed, 0);
}

/* Appends a raw SMALL_BIG_EXT: n digit bytes (little-endian), sign. */
static void put_big(ei_x_buff *x, int sign, const unsigned char *digits, unsigned char n)
{
    char head[3] = {(char)ERL_SMALL_BIG_EXT, (char)n, (char)sign};
    ei_x_append_buf(x, head, 3);
    ei_x_append_buf(x, (const char *)digits, n);
}

/*
 * erts reads Flags of any size and only its low byte, and takes a tuple longer
 * than the flags ask for (it "might be extended with more elements in the
 * future"): a bignum Flags whose low byte is NAME, and a sixth element, deliver.
 */
static void altact_big_flags_and_longer_tuple_deliver(void **state)
{
    fixture *f = *state;
    erlang_pid from;
    fp_pid(&from, 62);
    const unsigned char digits[9] = {CN_ALTACT_NAME, 0, 0, 0, 0, 0, 0, 0x80, 0x01};
    ei_x_buff ctl, msg;
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, 6);
    ei_x_encode_long(&ctl, DOP_ALTACT_SIG_SEND);
    put_big(&ctl, 0, digits, 9);
    ei_x_encode_pid(&ctl, &from);
    ei_x_encode_atom(&ctl, "box");
    ei_x_encode_atom(&ctl, "future");
    ei_x_encode_atom(&ctl, "fields");
    ei_x_new_with_version(&msg);
    ei_x_encode_atom(&msg, "hi");
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    assert_box_got(f, 1, "hi");
    assert_int_equal(f->fp.closed, 0);
}

/* What erts_net_message() calls an invalid message closes the connection. */
typedef void (*ctl_maker)(ei_x_buff *x, const erlang_pid *from, const erlang_pid *box);

static void head(ei_x_buff *x, int arity)
{
    ei_x_new_with_version(x);
    ei_x_encode_tuple_header(x, arity);
    ei_x_encode_long(x, DOP_ALTACT_SIG_SEND);
}

static void bad_arity3(ei_x_buff *x, const erlang_pid *from, const erlang_pid *box)
{
    (void)box;
    head(x, 3);
    ei_x_encode_long(x, CN_ALTACT_NAME);
    ei_x_encode_pid(x, from);
}

static void bad_negative_flags(ei_x_buff *x, const erlang_pid *from, const erlang_pid *box)
{
    head(x, 4);
    ei_x_encode_long(x, -8);
    ei_x_encode_pid(x, from);
    ei_x_encode_pid(x, box);
}

static void bad_negative_big_flags(ei_x_buff *x, const erlang_pid *from, const erlang_pid *box)
{
    const unsigned char digits[9] = {0, 0, 0, 0, 0, 0, 0, 0, 1};
    head(x, 4);
    put_big(x, 1, digits, 9);
    ei_x_encode_pid(x, from);
    ei_x_encode_pid(x, box);
}

static void bad_atom_flags(ei_x_buff *x, const erlang_pid *from, const erlang_pid *box)
{
    head(x, 4);
    ei_x_encode_atom(x, "alias");
    ei_x_encode_pid(x, from);
    ei_x_encode_pid(x, box);
}

static void bad_from_not_pid(ei_x_buff *x, const erlang_pid *from, const erlang_pid *box)
{
    (void)from;
    head(x, 4);
    ei_x_encode_long(x, 0);
    ei_x_encode_atom(x, "me");
    ei_x_encode_pid(x, box);
}

static void bad_alias_is_pid(ei_x_buff *x, const erlang_pid *from, const erlang_pid *box)
{
    head(x, 4);
    ei_x_encode_long(x, CN_ALTACT_ALIAS);
    ei_x_encode_pid(x, from);
    ei_x_encode_pid(x, box);
}

static void bad_alias_and_name(ei_x_buff *x, const erlang_pid *from, const erlang_pid *box)
{
    (void)box;
    erlang_ref ref;
    fp_ref(&ref, 1, 2, 3);
    head(x, 4);
    ei_x_encode_long(x, CN_ALTACT_ALIAS | CN_ALTACT_NAME);
    ei_x_encode_pid(x, from);
    ei_x_encode_ref(x, &ref);
}

static void bad_name_is_pid(ei_x_buff *x, const erlang_pid *from, const erlang_pid *box)
{
    head(x, 4);
    ei_x_encode_long(x, CN_ALTACT_NAME);
    ei_x_encode_pid(x, from);
    ei_x_encode_pid(x, box);
}

static void bad_pid_is_name(ei_x_buff *x, const erlang_pid *from, const erlang_pid *box)
{
    (void)box;
    head(x, 4);
    ei_x_encode_long(x, 0);
    ei_x_encode_pid(x, from);
    ei_x_encode_atom(x, "box");
}

static void bad_token_missing(ei_x_buff *x, const erlang_pid *from, const erlang_pid *box)
{
    head(x, 4);
    ei_x_encode_long(x, CN_ALTACT_TOKEN);
    ei_x_encode_pid(x, from);
    ei_x_encode_pid(x, box);
}

static void malformed_altact_closes_the_connection(void **state)
{
    (void)state;
    const ctl_maker makers[] = {
        bad_arity3, bad_negative_flags, bad_negative_big_flags, bad_atom_flags, bad_from_not_pid,
        bad_alias_is_pid, bad_alias_and_name, bad_name_is_pid, bad_pid_is_name, bad_token_missing,
    };
    for (size_t k = 0; k < sizeof makers / sizeof makers[0]; k++) {
        fixture *f = fx_new(CN_DFLAGS);
        erlang_pid from;
        fp_pid(&from, 63);
        ei_x_buff ctl, msg;
        makers[k](&ctl, &from, &f->box_pid);
        ei_x_new_with_version(&msg);
        ei_x_encode_atom(&msg, "hi");
        fp_send(&f->fp, &ctl, &msg);
        ei_x_free(&ctl);
        ei_x_free(&msg);
        if (!f->fp.closed)
            fail_msg("malformed ALTACT_SIG_SEND number %zu left the connection open", k);
        assert_int_equal(f->box.got, 0);
        fx_free(f);
    }
}

/* The payload is not optional: a well-formed control tuple alone closes the connection. */
static void altact_without_payload_closes_the_connection(void **state)
{
    fixture *f = *state;
    erlang_pid from;
    fp_pid(&from, 64);
    ei_x_buff ctl;
    head(&ctl, 4);
    ei_x_encode_long(&ctl, CN_ALTACT_NAME);
    ei_x_encode_pid(&ctl, &from);
    ei_x_encode_atom(&ctl, "box");
    fp_send(&f->fp, &ctl, NULL);
    ei_x_free(&ctl);
    assert_int_equal(f->box.got, 0);
    assert_int_not_equal(f->fp.closed, 0);
}

/*
 * Found by fuzz_dist from the ALTACT seeds, and as old as EXIT2: an exit signal to a
 * trapping process from a pid whose node name is not UTF-8 aborted the node (ei
 * could not encode the pid into {'EXIT', Pid, Reason}). Such a frame is malformed.
 */
static void exit_from_a_pid_with_a_bad_node_name_closes_the_connection(void **state)
{
    fixture *f = *state;
    ei_x_buff ctl, msg;
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, 4);
    ei_x_encode_long(&ctl, DOP_ALTACT_SIG_SEND);
    ei_x_encode_long(&ctl, CN_ALTACT_EXIT | CN_ALTACT_PRIO);
    /* NEW_PID_EXT, node 'peer@127.0' + 0xD2 0xCF..., as ATOM_UTF8_EXT. */
    const char pid[] = {88, 118, 0, 14, 'p', 'e', 'e', 'r', '@', '1', '2', '7', '.', '0',
                        (char)0xD2, (char)0xCF, (char)0xD1, (char)0xC7, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 3, 9};
    ei_x_append_buf(&ctl, pid, sizeof pid);
    ei_x_encode_pid(&ctl, &f->box_pid);
    ei_x_new_with_version(&msg);
    ei_x_encode_atom(&msg, "boom");
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    assert_int_equal(f->box.got, 0);
    assert_int_not_equal(f->fp.closed, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(reply_to_altact_peer_is_altact_sig_send, setup, teardown),
        cmocka_unit_test(reply_to_alias_only_peer_is_alias_send),
        cmocka_unit_test(reply_to_altact_only_peer_is_altact_sig_send),
        cmocka_unit_test_setup_teardown(reply_without_alias_goes_to_pid, setup, teardown),
        cmocka_unit_test_setup_teardown(altact_to_unknown_alias_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(altact_to_name_delivers, setup, teardown),
        cmocka_unit_test_setup_teardown(altact_to_unregistered_name_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(altact_to_pid_delivers, setup, teardown),
        cmocka_unit_test_setup_teardown(altact_exit_is_an_exit_signal, setup, teardown),
        cmocka_unit_test_setup_teardown(altact_big_flags_and_longer_tuple_deliver, setup, teardown),
        cmocka_unit_test(malformed_altact_closes_the_connection),
        cmocka_unit_test_setup_teardown(altact_without_payload_closes_the_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(exit_from_a_pid_with_a_bad_node_name_closes_the_connection, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

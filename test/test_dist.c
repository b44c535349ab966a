/*
 * Unit tests of the distribution layer (cnode/transport.h, node.h, proc.h) over
 * an in-memory transport: handshake, framing, calls, monitors, links, and bad input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cnode/buf.h"
#include "cnode/protocol.h"
#include "genserver/counter.h"
#include "test/fake_peer.h"

/*
 * Allocations counted, for a_call_allocates_nothing: this program's malloc,
 * calloc and realloc count and hand over to glibc's. Not under AddressSanitizer,
 * which owns malloc itself.
 */
#if !defined(__SANITIZE_ADDRESS__)
#define COUNT_ALLOCATIONS 1
#include <malloc.h>
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
static unsigned long allocations;
void *malloc(size_t n) { allocations++; return __libc_malloc(n); }
void *calloc(size_t n, size_t m) { allocations++; return __libc_calloc(n, m); }
void *realloc(void *p, size_t n) { allocations++; return __libc_realloc(p, n); }
#endif

typedef struct fixture {
    fake_peer fp;
    counter_config cfg;
    gs_server *counter;
} fixture;

static int setup_flags(void **state, uint64_t flags)
{
    static fixture f;
    memset(&f, 0, sizeof f);
    if (fp_setup(&f.fp, "secret", "secret", flags) != 0)
        return -1;
    if (counter_start(f.fp.node, &f.cfg, "counter", NULL, &f.counter) != 0)
        return -1;
    *state = &f;
    return 0;
}

static int setup(void **state) { return setup_flags(state, FP_FLAGS_ALIAS); }
static int setup_no_alias(void **state) { return setup_flags(state, CN_DFLAGS & ~(DFLAG_ALIAS | DFLAG_ALTACT_SIG)); }

static int teardown(void **state)
{
    fixture *f = *state;
    cn_proc *p = cn_proc_whereis(f->fp.node, "counter");
    if (p)
        gs_stop(f->counter, "shutdown");
    fp_teardown(&f->fp);
    return 0;
}

/* Sends GenServer.call(counter, req) as OTP 25 does: MONITOR_P, then REG_SEND. */
static void call(fixture *f, unsigned refn, int alias, const char *req)
{
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 100 + refn);
    fp_ref(&ref, refn, 2, 3);
    ei_x_buff ctl, msg;
    fp_send_monitor(&f->fp, DOP_MONITOR_P, &from, "counter", NULL, &ref);
    fp_ctl_reg_send(&ctl, &from, "counter");
    fp_msg_call(&msg, &from, &ref, alias, req);
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
}

/* Reads the reply frame and returns the integer in {Tag, N}. */
static long long reply_value(fixture *f, long expect_op)
{
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), 0);
    assert_int_equal(v.op, expect_op);
    assert_true(v.msg > 0);
    int i = v.msg, ver, arity;
    assert_int_equal(ei_decode_version(v.buf, &i, &ver), 0);
    assert_int_equal(ei_decode_tuple_header(v.buf, &i, &arity), 0);
    assert_int_equal(arity, 2);
    assert_int_equal(ei_skip_term(v.buf, &i), 0);
    long long n = 0;
    if (ei_decode_longlong(v.buf, &i, &n) != 0)
        fail_msg("the reply is not an integer");
    fp_view_free(&v);
    return n;
}

static void call_replies_to_alias_with_tag_echoed(void **state)
{
    fixture *f = *state;
    call(f, 1, 1, "increment");
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), 0);
    assert_int_equal(v.op, DOP_ALIAS_SEND);
    /* The alias in the control tuple is our ref; the tag in the message is [alias | Ref] byte for byte. */
    int i = v.ctl;
    erlang_pid from;
    erlang_ref alias;
    assert_int_equal(ei_decode_pid(v.buf, &i, &from), 0);
    assert_int_equal(ei_decode_ref(v.buf, &i, &alias), 0);
    assert_int_equal(alias.n[0], 1);
    ei_x_buff expect;
    erlang_ref ref;
    fp_ref(&ref, 1, 2, 3);
    ei_x_new(&expect);
    ei_x_encode_list_header(&expect, 1);
    ei_x_encode_atom(&expect, "alias");
    ei_x_encode_ref(&expect, &ref);
    i = v.msg + 1 + 2; /* version byte, small tuple header */
    assert_memory_equal(v.buf + i, expect.buff, (size_t)expect.index);
    i += expect.index;
    long long n;
    assert_int_equal(ei_decode_longlong(v.buf, &i, &n), 0);
    assert_int_equal(n, 1);
    ei_x_free(&expect);
    fp_view_free(&v);
}

static void counter_contract(void **state)
{
    fixture *f = *state;
    call(f, 1, 1, "increment");
    assert_int_equal(reply_value(f, DOP_ALIAS_SEND), 1);
    call(f, 2, 1, "increment");
    assert_int_equal(reply_value(f, DOP_ALIAS_SEND), 2);
    call(f, 3, 1, "decrement");
    assert_int_equal(reply_value(f, DOP_ALIAS_SEND), 1);
    /* A cast, then a call that sees it. */
    fp_cast(&f->fp, 9, "counter", "increment");
    call(f, 4, 1, "get_value");
    assert_int_equal(reply_value(f, DOP_ALIAS_SEND), 2);
}

static void reply_goes_to_pid_without_alias(void **state)
{
    fixture *f = *state;
    call(f, 1, 0, "increment");
    assert_int_equal(reply_value(f, DOP_SEND_SENDER), 1);
}

static void unknown_call_gets_error_reply(void **state)
{
    fixture *f = *state;
    call(f, 1, 1, "frobnicate");
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), 0);
    char *text = NULL;
    int i = v.msg;
    int ver;
    ei_decode_version(v.buf, &i, &ver);
    int arity;
    ei_decode_tuple_header(v.buf, &i, &arity);
    ei_skip_term(v.buf, &i);
    assert_true(ei_s_print_term(&text, v.buf, &i) > 0);
    assert_string_equal(text, "{error, {unknown_call, frobnicate}}");
    free(text);
    fp_view_free(&v);
    /* And the counter is unchanged. */
    call(f, 2, 1, "get_value");
    assert_int_equal(reply_value(f, DOP_ALIAS_SEND), 0);
}

static void monitor_of_unknown_name_is_down_noproc(void **state)
{
    fixture *f = *state;
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 5);
    fp_ref(&ref, 7, 7, 7);
    fp_send_monitor(&f->fp, DOP_MONITOR_P, &from, "nosuch", NULL, &ref);
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), 0);
    assert_int_equal(v.op, DOP_PAYLOAD_MONITOR_P_EXIT);
    int i = v.ctl;
    char name[MAXATOMLEN_UTF8];
    assert_int_equal(ei_decode_atom(v.buf, &i, name), 0);
    assert_string_equal(name, "nosuch");
    i = v.msg;
    int ver;
    ei_decode_version(v.buf, &i, &ver);
    char reason[MAXATOMLEN_UTF8];
    assert_int_equal(ei_decode_atom(v.buf, &i, reason), 0);
    assert_string_equal(reason, "noproc");
    fp_view_free(&v);
}

static void monitors_are_added_and_removed(void **state)
{
    fixture *f = *state;
    cn_node_stats st;
    call(f, 1, 1, "increment");
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.monitors, 1);
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 101);
    fp_ref(&ref, 1, 2, 3);
    fp_send_monitor(&f->fp, DOP_DEMONITOR_P, &from, "counter", NULL, &ref);
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.monitors, 0);
}

static void split_and_merged_frames(void **state)
{
    fixture *f = *state;
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 1);
    cn_buf all;
    cn_buf_init(&all);
    for (unsigned k = 1; k <= 3; k++) {
        ei_x_buff ctl, msg;
        fp_ref(&ref, k, 0, 0);
        fp_ctl_reg_send(&ctl, &from, "counter");
        fp_msg_call(&msg, &from, &ref, 1, "increment");
        fp_frame(&all, &ctl, &msg);
        cn_buf_put_u32(&all, 0); /* a tick between frames */
        ei_x_free(&ctl);
        ei_x_free(&msg);
    }
    /* Three frames in one read: three replies in one write. */
    int writes = f->fp.writes;
    cn_conn_feed(f->fp.conn, all.data, all.len);
    fp_run(&f->fp);
    assert_int_equal(f->fp.writes, writes + 1);
    for (long long k = 1; k <= 3; k++)
        assert_int_equal(reply_value(f, DOP_ALIAS_SEND), k);
    /* The same bytes one at a time. */
    for (size_t i = 0; i < all.len; i++)
        cn_conn_feed(f->fp.conn, all.data + i, 1);
    fp_run(&f->fp);
    for (long long k = 4; k <= 6; k++)
        assert_int_equal(reply_value(f, DOP_ALIAS_SEND), k);
    cn_buf_free(&all);
}

#ifdef COUNT_ALLOCATIONS
/* Appends a GenServer.call as OTP 25 sends it: MONITOR_P, REG_SEND, DEMONITOR_P once answered. */
static void call_frames(cn_buf *b, unsigned k)
{
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 100 + k);
    fp_ref(&ref, k, 2, 3);
    ei_x_buff ctl, msg;
    fp_ctl_monitor(&ctl, DOP_MONITOR_P, &from, "counter", NULL, &ref);
    fp_frame(b, &ctl, NULL);
    ei_x_free(&ctl);
    fp_ctl_reg_send(&ctl, &from, "counter");
    fp_msg_call(&msg, &from, &ref, 1, "increment");
    fp_frame(b, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    fp_ctl_monitor(&ctl, DOP_DEMONITOR_P, &from, "counter", NULL, &ref);
    fp_frame(b, &ctl, NULL);
    ei_x_free(&ctl);
}
#endif

/* Once warm, the whole path of a call (read, decode, monitor, handle_call, reply, write) allocates nothing. */
static void a_call_allocates_nothing(void **state)
{
#ifdef COUNT_ALLOCATIONS
    fixture *f = *state;
    cn_buf warm, calls;
    cn_buf_init(&warm);
    cn_buf_init(&calls);
    for (unsigned k = 1; k <= 100; k++)
        call_frames(&warm, k);
    for (unsigned k = 201; k <= 300; k++)
        call_frames(&calls, k);
    /* The fake transport's own buffer must not grow during the count. */
    cn_buf_reserve(&f->fp.out, 1 << 20);
    /* Twice: the write buffer and the one in flight swap, and both reach their size. */
    for (int round = 0; round < 2; round++) {
        cn_conn_feed(f->fp.conn, warm.data, warm.len);
        fp_run(&f->fp);
    }
    cn_buf_reset(&f->fp.out);
    unsigned long before = allocations;
    cn_conn_feed(f->fp.conn, calls.data, calls.len);
    fp_run(&f->fp);
    unsigned long during = allocations - before;
    assert_int_equal(during, 0);
    for (long long k = 201; k <= 300; k++)
        assert_int_equal(reply_value(f, DOP_ALIAS_SEND), k);
    cn_buf_free(&warm);
    cn_buf_free(&calls);
#else
    (void)state;
    skip();
#endif
}

/* xorshift64: a fixed sequence, so a failure replays. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* The frames of a busy peer: calls with monitors, a cast, links, exits, demonitors. */
static void valid_frames(cn_buf *out, const erlang_pid *counter_pid)
{
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 5);
    fp_ref(&ref, 77, 1, 2);
    ei_x_buff ctl, msg;
    fp_ctl_monitor(&ctl, DOP_MONITOR_P, &from, "counter", NULL, &ref);
    fp_frame(out, &ctl, NULL);
    ei_x_free(&ctl);
    fp_ctl_reg_send(&ctl, &from, "counter");
    fp_msg_call(&msg, &from, &ref, 1, "increment");
    fp_frame(out, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    fp_ctl_reg_send(&ctl, &from, "counter");
    fp_msg_cast(&msg, "increment");
    fp_frame(out, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    fp_ctl_monitor(&ctl, DOP_DEMONITOR_P, &from, "counter", NULL, &ref);
    fp_frame(out, &ctl, NULL);
    ei_x_free(&ctl);
    /* LINK {1, From, To}, then EXIT {3, From, To, Reason} with a nested reason. */
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, 3);
    ei_x_encode_long(&ctl, DOP_LINK);
    ei_x_encode_pid(&ctl, &from);
    ei_x_encode_pid(&ctl, counter_pid);
    fp_frame(out, &ctl, NULL);
    ei_x_free(&ctl);
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, 4);
    ei_x_encode_long(&ctl, DOP_EXIT);
    ei_x_encode_pid(&ctl, &from);
    ei_x_encode_pid(&ctl, counter_pid);
    ei_x_encode_tuple_header(&ctl, 2);
    ei_x_encode_atom(&ctl, "shutdown");
    ei_x_encode_map_header(&ctl, 1);
    ei_x_encode_binary(&ctl, "k", 1);
    ei_x_encode_double(&ctl, 1.5);
    fp_frame(out, &ctl, NULL);
    ei_x_free(&ctl);
}

/* One random edit of buf: a byte flipped, replaced, dropped or inserted. */
static void mutate(cn_buf *b, size_t from, uint64_t *seed)
{
    if (b->len <= from)
        return;
    size_t at = from + (size_t)(rng_next(seed) % (b->len - from));
    switch (rng_next(seed) % 4) {
    case 0:
        b->data[at] ^= (char)(1 + rng_next(seed) % 255);
        break;
    case 1:
        b->data[at] = (char)rng_next(seed);
        break;
    case 2:
        memmove(b->data + at, b->data + at + 1, b->len - at - 1);
        b->len--;
        break;
    default:
        assert_int_equal(cn_buf_reserve(b, 1), 0);
        memmove(b->data + at + 1, b->data + at, b->len - at);
        b->data[at] = (char)rng_next(seed);
        b->len++;
        break;
    }
}

/*
 * Bad input of every kind at the frame level: thousands of corrupted copies of a
 * busy peer's frames each end either in replies or in a closed connection, never
 * in a crash, a sanitizer report or a hang. In most rounds the corruption stays
 * inside the frames (their length prefixes are recomputed), and a node whose
 * connection survived must still answer a clean call after them; in the others
 * the stream itself is corrupted (lengths included), and only survival counts,
 * since a length that grew leaves the node waiting for the rest of that frame.
 */
static void corrupted_frames_never_crash_the_node(void **state)
{
    (void)state;
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    int closed = 0, served = 0;
    for (int round = 0; round < 2000; round++) {
        fixture *f;
        assert_int_equal(setup((void **)&f), 0);
        erlang_pid cpid;
        cn_proc_pid(cn_proc_whereis(f->fp.node, "counter"), &cpid);
        cn_buf clean, b;
        cn_buf_init(&clean);
        cn_buf_init(&b);
        valid_frames(&clean, &cpid);
        int in_frames = round % 4 != 0;
        if (in_frames) {
            /* Frame by frame: edit the body, then write its true length. */
            for (size_t off = 0; off + 4 <= clean.len;) {
                uint32_t n = cn_get_u32(clean.data + off);
                cn_buf body;
                cn_buf_init(&body);
                assert_int_equal(cn_buf_append(&body, clean.data + off + 4, n), 0);
                if (rng_next(&seed) % 2 == 0)
                    mutate(&body, 1, &seed); /* the pass-through byte stays */
                cn_buf_put_u32(&b, (uint32_t)body.len);
                cn_buf_append(&b, body.data, body.len);
                cn_buf_free(&body);
                off += 4 + n;
            }
        } else {
            cn_buf_append(&b, clean.data, clean.len);
            int edits = 1 + (int)(rng_next(&seed) % 4);
            for (int e = 0; e < edits; e++)
                mutate(&b, 0, &seed);
        }
        cn_buf_free(&clean);
        /* Fed in random pieces, as reads would deliver them. */
        for (size_t off = 0; off < b.len && !f->fp.closed;) {
            size_t n = 1 + (size_t)(rng_next(&seed) % 64);
            if (n > b.len - off)
                n = b.len - off;
            cn_conn_feed(f->fp.conn, b.data + off, n);
            off += n;
            fp_run(&f->fp);
        }
        cn_buf_free(&b);
        if (f->fp.closed) {
            closed++;
        } else if (in_frames && cn_proc_whereis(f->fp.node, "counter") != NULL) {
            /* Drop what the corrupted frames produced, then one clean call. */
            cn_buf_reset(&f->fp.out);
            call(f, 900, 1, "get_value");
            assert_false(f->fp.closed);
            fp_frame_view v;
            int found = 0;
            while (!found && fp_next(&f->fp, &v) == 0) {
                found = v.op == DOP_ALIAS_SEND;
                fp_view_free(&v);
            }
            if (!found)
                fail_msg("round %d: the node kept the connection but answered no call", round);
            served++;
        }
        teardown((void **)&f);
    }
    /* Both outcomes happened, so the corruption reached the parser and the servers. */
    assert_true(closed > 0);
    assert_true(served > 0);
}

static void malformed_frame_closes_only_its_connection(void **state)
{
    fixture *f = *state;
    /* A frame whose control tuple claims more elements than it has. */
    const char bad[] = {0, 0, 0, 5, (char)CN_PASS_THROUGH, (char)131, 104, 9, 97};
    cn_conn_feed(f->fp.conn, bad, sizeof bad);
    fp_run(&f->fp);
    assert_true(f->fp.closed);
    assert_non_null(cn_proc_whereis(f->fp.node, "counter"));
}

static void garbage_frame_without_pass_through_closes(void **state)
{
    fixture *f = *state;
    const char bad[] = {0, 0, 0, 3, 'x', 'y', 'z'};
    cn_conn_feed(f->fp.conn, bad, sizeof bad);
    fp_run(&f->fp);
    assert_true(f->fp.closed);
}

/*
 * An operation we have no layout for is an invalid message: erts logs
 * "Invalid distribution message" and kills the connection, and so do we. The
 * counter is not touched, and a new connection from the peer is served.
 */
static void unknown_control_message_closes_the_connection(void **state)
{
    (void)state;
    static const long ops[] = {99, 0, 38, 1000};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        void *st;
        assert_int_equal(setup(&st), 0);
        fixture *f = st;
        call(f, 1, 1, "increment");
        assert_int_equal(reply_value(f, DOP_ALIAS_SEND), 1);
        ei_x_buff ctl;
        ei_x_new_with_version(&ctl);
        ei_x_encode_tuple_header(&ctl, 2);
        ei_x_encode_long(&ctl, ops[k]);
        ei_x_encode_atom(&ctl, "whatever");
        fp_send(&f->fp, &ctl, NULL);
        ei_x_free(&ctl);
        assert_true(f->fp.closed);
        teardown(&st);
    }
}

static void exit2_kill_sends_killed_to_links_and_monitors(void **state)
{
    fixture *f = *state;
    erlang_pid cpid, peer, watcher;
    cn_proc_pid(cn_proc_whereis(f->fp.node, "counter"), &cpid);
    fp_pid(&peer, 50);
    fp_pid(&watcher, 51);
    erlang_ref ref;
    fp_ref(&ref, 9, 9, 9);
    ei_x_buff ctl, msg;
    /* The peer links to the counter and another process monitors it by pid. */
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, 3);
    ei_x_encode_long(&ctl, DOP_LINK);
    ei_x_encode_pid(&ctl, &peer);
    ei_x_encode_pid(&ctl, &cpid);
    fp_send(&f->fp, &ctl, NULL);
    ei_x_free(&ctl);
    fp_send_monitor(&f->fp, DOP_MONITOR_P, &watcher, NULL, &cpid, &ref);
    /* exit(CounterPid, kill) */
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, 3);
    ei_x_encode_long(&ctl, DOP_PAYLOAD_EXIT2);
    ei_x_encode_pid(&ctl, &watcher);
    ei_x_encode_pid(&ctl, &cpid);
    ei_x_new_with_version(&msg);
    ei_x_encode_atom(&msg, "kill");
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    assert_null(cn_proc_whereis(f->fp.node, "counter"));
    int got_down = 0, got_exit = 0;
    fp_frame_view v;
    while (fp_next(&f->fp, &v) == 0) {
        int i = v.msg, ver;
        char reason[MAXATOMLEN_UTF8] = "";
        ei_decode_version(v.buf, &i, &ver);
        ei_decode_atom(v.buf, &i, reason);
        if (v.op == DOP_PAYLOAD_MONITOR_P_EXIT) {
            assert_string_equal(reason, "killed");
            got_down++;
        } else if (v.op == DOP_PAYLOAD_EXIT) {
            assert_string_equal(reason, "killed");
            got_exit++;
        }
        fp_view_free(&v);
    }
    assert_int_equal(got_down, 1);
    assert_int_equal(got_exit, 1);
}

/* A reason nested a million levels deep, as the bytes of a term (no version byte). */
static void deep_term(cn_buf *b, size_t depth)
{
    for (size_t i = 0; i < depth; i++) {
        cn_buf_put_u8(b, 104);
        cn_buf_put_u8(b, 1);
    }
    cn_buf_put_u8(b, 119);
    cn_buf_put_u8(b, 4);
    cn_buf_append(b, "boom", 4);
}

static void deeply_nested_exit_reasons_do_not_crash(void **state)
{
    fixture *f = *state;
    erlang_pid cpid, from;
    fp_pid(&from, 70);
    for (int payload = 0; payload <= 1; payload++) {
        cn_proc *p = cn_proc_whereis(f->fp.node, "counter");
        assert_non_null(p);
        cn_proc_pid(p, &cpid);
        /* exit(Counter, Reason) with Reason inline in the control tuple, then as a payload. */
        ei_x_buff ctl;
        ei_x_new_with_version(&ctl);
        ei_x_encode_tuple_header(&ctl, payload ? 3 : 4);
        ei_x_encode_long(&ctl, payload ? DOP_PAYLOAD_EXIT2 : DOP_EXIT2);
        ei_x_encode_pid(&ctl, &from);
        ei_x_encode_pid(&ctl, &cpid);
        cn_buf reason;
        cn_buf_init(&reason);
        if (payload)
            cn_buf_put_u8(&reason, 131);
        deep_term(&reason, 1000000);
        cn_buf frame;
        cn_buf_init(&frame);
        cn_buf_put_u32(&frame, (uint32_t)(1 + (size_t)ctl.index + reason.len));
        cn_buf_put_u8(&frame, CN_PASS_THROUGH);
        cn_buf_append(&frame, ctl.buff, (size_t)ctl.index);
        cn_buf_append(&frame, reason.data, reason.len);
        cn_conn_feed(f->fp.conn, frame.data, frame.len);
        fp_run(&f->fp);
        cn_buf_free(&frame);
        cn_buf_free(&reason);
        ei_x_free(&ctl);
        /* The counter died of it; the node and the connection did not. */
        assert_null(cn_proc_whereis(f->fp.node, "counter"));
        assert_false(f->fp.closed);
        assert_int_equal(counter_start(f->fp.node, &f->cfg, "counter", NULL, &f->counter), 0);
    }
    call(f, 1, 1, "get_value");
    assert_int_equal(reply_value(f, DOP_ALIAS_SEND), 0);
}

static void unlink_id_is_acknowledged(void **state)
{
    fixture *f = *state;
    erlang_pid cpid, peer;
    cn_proc_pid(cn_proc_whereis(f->fp.node, "counter"), &cpid);
    fp_pid(&peer, 60);
    ei_x_buff ctl;
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, 3);
    ei_x_encode_long(&ctl, DOP_LINK);
    ei_x_encode_pid(&ctl, &peer);
    ei_x_encode_pid(&ctl, &cpid);
    fp_send(&f->fp, &ctl, NULL);
    ei_x_free(&ctl);
    cn_node_stats st;
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.links, 1);
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, 4);
    ei_x_encode_long(&ctl, DOP_UNLINK_ID);
    ei_x_encode_ulonglong(&ctl, 4242);
    ei_x_encode_pid(&ctl, &peer);
    ei_x_encode_pid(&ctl, &cpid);
    fp_send(&f->fp, &ctl, NULL);
    ei_x_free(&ctl);
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.links, 0);
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), 0);
    assert_int_equal(v.op, DOP_UNLINK_ID_ACK);
    int i = v.ctl;
    unsigned long long id;
    assert_int_equal(ei_decode_ulonglong(v.buf, &i, &id), 0);
    assert_int_equal(id, 4242);
    fp_view_free(&v);
}

static void lost_connection_drops_monitors(void **state)
{
    fixture *f = *state;
    call(f, 1, 1, "increment");
    cn_node_stats st;
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.monitors, 1);
    const char bad[] = {0, 0, 0, 1, 'x'};
    cn_conn_feed(f->fp.conn, bad, sizeof bad);
    fp_run(&f->fp);
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.monitors, 0);
    assert_int_equal(st.connections, 0);
}

static void wrong_cookie_is_refused(void **state)
{
    (void)state;
    fake_peer fp;
    assert_int_not_equal(fp_setup(&fp, "secret", "wrong", CN_DFLAGS), 0);
    cn_node_stats st;
    cn_node_get_stats(fp.node, &st);
    assert_int_equal(st.connections, 0);
    fp_teardown(&fp);
}

/* ---- Hostile control messages (issue 9) ---- */

/* One frame from raw bytes: 'p', the control term (version byte included), then `rest`. */
static void feed_frame(fixture *f, const char *ctl, size_t ctl_len, const char *rest, size_t rest_len)
{
    cn_buf b;
    cn_buf_init(&b);
    cn_buf_put_u32(&b, (uint32_t)(1 + ctl_len + rest_len));
    cn_buf_put_u8(&b, CN_PASS_THROUGH);
    cn_buf_append(&b, ctl, ctl_len);
    cn_buf_append(&b, rest, rest_len);
    cn_conn_feed(f->fp.conn, b.data, b.len);
    fp_run(&f->fp);
    cn_buf_free(&b);
}

/* The counter's value, by a clean call; the connection must be up. */
static long long counter_value(fixture *f, unsigned refn)
{
    assert_false(f->fp.closed);
    cn_buf_reset(&f->fp.out);
    call(f, refn, 1, "get_value");
    return reply_value(f, DOP_ALIAS_SEND);
}

static void counter_pid(fixture *f, erlang_pid *pid)
{
    cn_proc *p = cn_proc_whereis(f->fp.node, "counter");
    assert_non_null(p);
    cn_proc_pid(p, pid);
}

/*
 * A lost connection's monitors leave a batch per loop turn (a peer's million
 * at once held the loop up to 174 ms). Meanwhile the connection is freed and a
 * monitored process may exit: it tells no one about them (under AddressSanitizer
 * this also shows nothing reads the freed connection), and they all go.
 */
static void a_lost_connections_monitors_leave_in_batches(void **state)
{
    fixture *f = *state;
    const unsigned n = 20000;
    erlang_pid from, cpid;
    fp_pid(&from, 46);
    counter_pid(f, &cpid);
    cn_buf b;
    cn_buf_init(&b);
    for (unsigned k = 0; k < n; k++) {
        erlang_ref ref;
        fp_ref(&ref, k, k >> 16, 46);
        ei_x_buff ctl;
        fp_ctl_monitor(&ctl, DOP_MONITOR_P, &from, NULL, &cpid, &ref);
        fp_frame(&b, &ctl, NULL);
        ei_x_free(&ctl);
    }
    cn_conn_feed(f->fp.conn, b.data, b.len);
    cn_buf_free(&b);
    cn_node_stats st;
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.monitors, n);
    const char bad[] = {0, 0, 0, 1, 'x'};
    cn_conn_feed(f->fp.conn, bad, sizeof bad);
    assert_true(f->fp.closed);
    /* One turn: the connection is freed, a batch of its monitors has gone, not all. */
    uv_run(&f->fp.loop, UV_RUN_NOWAIT);
    cn_node_get_stats(f->fp.node, &st);
    assert_true(st.monitors > 0 && st.monitors < n);
    assert_int_equal(st.connections, 0);
    cn_buf_reset(&f->fp.out);
    gs_stop(f->counter, "shutdown");
    for (int turn = 0; turn < 16; turn++)
        uv_run(&f->fp.loop, UV_RUN_NOWAIT);
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.monitors, 0);
    assert_int_equal(f->fp.out.len, 0);
}

/* A MONITOR_P or DEMONITOR_P of the counter by pid, from pid 47 with reference k. */
static void monitor_frame(cn_buf *b, int op, const erlang_pid *cpid, unsigned k)
{
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 47);
    fp_ref(&ref, k, 7, 47);
    ei_x_buff ctl;
    fp_ctl_monitor(&ctl, op, &from, NULL, cpid, &ref);
    fp_frame(b, &ctl, NULL);
    ei_x_free(&ctl);
}

/*
 * Monitors removed in another order than they came, thousands to the table
 * (cnode/mon_table.c moves the slots after a removed one back, and grows and
 * shrinks its shards): each demonitor removes its own monitor and no other, a
 * demonitor of no monitor changes nothing, and each monitor left gets its DOWN.
 */
static void demonitors_in_any_order_leave_the_rest(void **state)
{
    fixture *f = *state;
    enum { N = 6000 };
    static char seen[N];
    memset(seen, 0, sizeof seen);
    erlang_pid cpid;
    counter_pid(f, &cpid);
    cn_buf b;
    cn_buf_init(&b);
    for (unsigned k = 0; k < N; k++)
        monitor_frame(&b, DOP_MONITOR_P, &cpid, k);
    /* A permutation of 0..N-1 (7919 is prime to N); every third monitor stays. */
    for (unsigned j = 0; j < N; j++) {
        unsigned k = (unsigned)((j * 7919ull) % N);
        if (k % 3 != 0)
            monitor_frame(&b, DOP_DEMONITOR_P, &cpid, k);
    }
    monitor_frame(&b, DOP_DEMONITOR_P, &cpid, N + 1);
    cn_conn_feed(f->fp.conn, b.data, b.len);
    fp_run(&f->fp);
    cn_buf_free(&b);
    cn_node_stats st;
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.monitors, N / 3);
    cn_buf_reset(&f->fp.out);
    gs_stop(f->counter, "shutdown");
    fp_run(&f->fp);
    unsigned downs = 0;
    fp_frame_view v;
    while (fp_next(&f->fp, &v) == 0) {
        if (v.op == DOP_PAYLOAD_MONITOR_P_EXIT || v.op == DOP_MONITOR_P_EXIT) {
            int i = v.ctl;
            erlang_ref ref;
            assert_int_equal(ei_skip_term(v.buf, &i), 0);
            assert_int_equal(ei_skip_term(v.buf, &i), 0);
            assert_int_equal(ei_decode_ref(v.buf, &i, &ref), 0);
            assert_true(ref.n[0] < N && ref.n[0] % 3 == 0 && !seen[ref.n[0]]);
            seen[ref.n[0]] = 1;
            downs++;
        }
        fp_view_free(&v);
    }
    assert_int_equal(downs, N / 3);
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.monitors, 0);
}

/*
 * {13, From, To, Token} and {18, From, To, Token}: one element short. The old
 * decoder took the bytes after the frame for the missing reason; here the byte
 * that follows is the start of the next frame's length, 106, which is NIL_EXT:
 * the counter died of a reason the peer never sent. Now the frame is malformed.
 */
static void exit_tt_with_four_elements_is_malformed(void **state)
{
    (void)state;
    static const long ops[] = {DOP_EXIT_TT, DOP_EXIT2_TT};
    for (size_t k = 0; k < 2; k++) {
        fixture *f;
        assert_int_equal(setup((void **)&f), 0);
        erlang_pid from, cpid;
        fp_pid(&from, 40);
        counter_pid(f, &cpid);
        ei_x_buff ctl;
        ei_x_new_with_version(&ctl);
        ei_x_encode_tuple_header(&ctl, 4);
        ei_x_encode_long(&ctl, ops[k]);
        ei_x_encode_pid(&ctl, &from);
        ei_x_encode_pid(&ctl, &cpid);
        ei_x_encode_atom(&ctl, "token");
        cn_buf b;
        cn_buf_init(&b);
        fp_frame(&b, &ctl, NULL);
        cn_buf_put_u8(&b, 106);
        cn_conn_feed(f->fp.conn, b.data, b.len);
        fp_run(&f->fp);
        assert_true(f->fp.closed);
        assert_non_null(cn_proc_whereis(f->fp.node, "counter"));
        cn_buf_free(&b);
        ei_x_free(&ctl);
        teardown((void **)&f);
    }
}

/* Every operation's arity as erts checks it (with the operation), and whether a payload follows. */
static const struct {
    long op;
    int arity;
    int payload;
} op_shapes[] = {
    {DOP_LINK, 3, 0}, {DOP_SEND, 3, 1}, {DOP_EXIT, 4, 0}, {DOP_UNLINK, 3, 0}, {DOP_REG_SEND, 4, 1},
    {DOP_GROUP_LEADER, 3, 0}, {DOP_EXIT2, 4, 0}, {DOP_SEND_TT, 4, 1}, {DOP_EXIT_TT, 5, 0},
    {DOP_REG_SEND_TT, 5, 1}, {DOP_EXIT2_TT, 5, 0}, {DOP_MONITOR_P, 4, 0}, {DOP_DEMONITOR_P, 4, 0},
    {DOP_MONITOR_P_EXIT, 5, 0}, {DOP_SEND_SENDER, 3, 1}, {DOP_SEND_SENDER_TT, 4, 1},
    {DOP_PAYLOAD_EXIT, 3, 1}, {DOP_PAYLOAD_EXIT_TT, 4, 1}, {DOP_PAYLOAD_EXIT2, 3, 1},
    {DOP_PAYLOAD_EXIT2_TT, 4, 1}, {DOP_PAYLOAD_MONITOR_P_EXIT, 4, 1}, {DOP_SPAWN_REQUEST, 6, 1},
    {DOP_SPAWN_REQUEST_TT, 7, 1}, {DOP_SPAWN_REPLY, 5, 0}, {DOP_SPAWN_REPLY_TT, 6, 0},
    {DOP_ALIAS_SEND, 3, 1}, {DOP_ALIAS_SEND_TT, 4, 1}, {DOP_UNLINK_ID, 4, 0}, {DOP_UNLINK_ID_ACK, 4, 0},
};

/* Sends {op, Pid, Pid, ...} of `arity` elements (and a payload if asked); returns whether the node closed. */
static int closes_on(long op, int arity, int payload)
{
    fixture *f;
    assert_int_equal(setup((void **)&f), 0);
    erlang_pid pid;
    counter_pid(f, &pid);
    ei_x_buff ctl, msg;
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, arity);
    ei_x_encode_long(&ctl, op);
    for (int k = 1; k < arity; k++)
        ei_x_encode_pid(&ctl, &pid);
    ei_x_new_with_version(&msg);
    ei_x_encode_atom(&msg, "normal");
    fp_send(&f->fp, &ctl, payload ? &msg : NULL);
    int closed = f->fp.closed;
    ei_x_free(&ctl);
    ei_x_free(&msg);
    teardown((void **)&f);
    return closed;
}

/* One element more or less than an operation has is a malformed frame, for every operation. */
static void every_operation_has_exactly_its_arity(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof op_shapes / sizeof op_shapes[0]; k++) {
        long op = op_shapes[k].op;
        int a = op_shapes[k].arity, p = op_shapes[k].payload;
        if (!closes_on(op, a - 1, p))
            fail_msg("op %ld with %d elements was accepted", op, a - 1);
        if (!closes_on(op, a + 1, p))
            fail_msg("op %ld with %d elements was accepted", op, a + 1);
        /* The payload is there exactly when the operation has one. */
        if (!closes_on(op, a, !p))
            fail_msg("op %ld %s a payload was accepted", op, p ? "without" : "with");
    }
    /* A wrong element type is malformed too: MONITOR_P with a pid for its reference. */
    assert_true(closes_on(DOP_MONITOR_P, 4, 0));
}

/* Bytes after the last term of a frame make it malformed, as does a second payload. */
static void a_frame_ends_where_its_terms_end(void **state)
{
    fixture *f = *state;
    erlang_pid from;
    fp_pid(&from, 41);
    ei_x_buff ctl, msg;
    fp_ctl_reg_send(&ctl, &from, "counter");
    fp_msg_cast(&msg, "increment");
    /* The positive control: the same frame without trailing bytes is served. */
    feed_frame(f, ctl.buff, (size_t)ctl.index, msg.buff, (size_t)msg.index);
    assert_int_equal(counter_value(f, 1), 1);
    cn_buf rest;
    cn_buf_init(&rest);
    cn_buf_append(&rest, msg.buff, (size_t)msg.index);
    cn_buf_append(&rest, "\1\2\3", 3);
    feed_frame(f, ctl.buff, (size_t)ctl.index, rest.data, rest.len);
    assert_true(f->fp.closed);
    cn_buf_free(&rest);
    ei_x_free(&ctl);
    ei_x_free(&msg);
}

static void a_second_payload_or_a_trailing_term_is_malformed(void **state)
{
    (void)state;
    erlang_pid from, cpid;
    fp_pid(&from, 42);
    for (int variant = 0; variant < 3; variant++) {
        fixture *f;
        assert_int_equal(setup((void **)&f), 0);
        counter_pid(f, &cpid);
        ei_x_buff ctl, msg;
        ei_x_new_with_version(&msg);
        ei_x_encode_atom(&msg, "x");
        if (variant == 0) {
            fp_ctl_reg_send(&ctl, &from, "counter");     /* REG_SEND with two messages */
        } else if (variant == 1) {
            ei_x_new_with_version(&ctl);                   /* LINK with a term after it */
            ei_x_encode_tuple_header(&ctl, 3);
            ei_x_encode_long(&ctl, DOP_LINK);
            ei_x_encode_pid(&ctl, &from);
            ei_x_encode_pid(&ctl, &cpid);
        } else {
            ei_x_new_with_version(&ctl);                   /* an unknown operation with two terms */
            ei_x_encode_tuple_header(&ctl, 2);
            ei_x_encode_long(&ctl, 99);
            ei_x_encode_atom(&ctl, "whatever");
        }
        cn_buf rest;
        cn_buf_init(&rest);
        cn_buf_append(&rest, msg.buff, (size_t)msg.index);
        if (variant != 1)
            cn_buf_append(&rest, msg.buff, (size_t)msg.index);
        feed_frame(f, ctl.buff, (size_t)ctl.index, rest.data, rest.len);
        if (!f->fp.closed)
            fail_msg("variant %d was accepted", variant);
        assert_non_null(cn_proc_whereis(f->fp.node, "counter"));
        cn_buf_free(&rest);
        ei_x_free(&ctl);
        ei_x_free(&msg);
        teardown((void **)&f);
    }
}

/* The control tuple {Op, ...} as raw bytes with the name atom `name` (n bytes of UTF-8) in it. */
static void ctl_with_name(cn_buf *b, long op, const erlang_pid *from, const char *name, size_t n,
                          const erlang_ref *ref)
{
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_long(&x, op);
    ei_x_encode_pid(&x, from);
    if (op == DOP_REG_SEND)
        ei_x_encode_atom(&x, "");
    /* ei_x_encode_atom_len_as refuses nothing legal: NUL bytes included. */
    assert_int_equal(ei_x_encode_atom_len_as(&x, name, (int)n, ERLANG_UTF8, ERLANG_UTF8), 0);
    if (op != DOP_REG_SEND)
        ei_x_encode_ref(&x, ref);
    cn_buf_append(b, x.buff, (size_t)x.index);
    ei_x_free(&x);
}

/* MONITOR_P by name: the node answers noproc at once, echoing the name byte for byte. */
static void assert_noproc_for_name(fixture *f, const char *name, size_t n)
{
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 43);
    fp_ref(&ref, 43, 43, 43);
    cn_buf ctl;
    cn_buf_init(&ctl);
    ctl_with_name(&ctl, DOP_MONITOR_P, &from, name, n, &ref);
    cn_buf_reset(&f->fp.out);
    feed_frame(f, ctl.data, ctl.len, NULL, 0);
    cn_buf_free(&ctl);
    assert_false(f->fp.closed);
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), 0);
    assert_int_equal(v.op, DOP_PAYLOAD_MONITOR_P_EXIT);
    int i = v.ctl, type, size;
    assert_int_equal(ei_get_type(v.buf, &i, &type, &size), 0);
    char echoed[MAXATOMLEN_UTF8];
    erlang_char_encoding enc;
    assert_int_equal(ei_decode_atom_as(v.buf, &i, echoed, sizeof echoed, ERLANG_UTF8, &enc, NULL), 0);
    assert_int_equal(size, (int)n);
    assert_memory_equal(echoed, name, n);
    i = v.msg;
    int ver;
    char reason[MAXATOMLEN];
    ei_decode_version(v.buf, &i, &ver);
    assert_int_equal(ei_decode_atom(v.buf, &i, reason), 0);
    assert_string_equal(reason, "noproc");
    fp_view_free(&v);
}

/* REG_SEND of a cast `increment` to the name; the counter must not get it. */
static void cast_to_name(fixture *f, const char *name, size_t n)
{
    erlang_pid from;
    fp_pid(&from, 44);
    cn_buf ctl;
    cn_buf_init(&ctl);
    ctl_with_name(&ctl, DOP_REG_SEND, &from, name, n, NULL);
    ei_x_buff msg;
    fp_msg_cast(&msg, "increment");
    feed_frame(f, ctl.data, ctl.len, msg.buff, (size_t)msg.index);
    ei_x_free(&msg);
    cn_buf_free(&ctl);
}

static char smileys[4 * 255 + 1];

static const char *smiley_name(void)
{
    for (int k = 0; k < 255; k++)
        memcpy(smileys + 4 * k, "\xF0\x9F\x98\x80", 4);
    return smileys;
}

/*
 * A legal atom never drops a peer (issue 9, 5): a send to :"日本" or to 255
 * four-byte characters is dropped and a call by that name exits noproc, as on
 * the BEAM; the connection stays.
 */
static void utf8_names_that_are_not_registered(void **state)
{
    fixture *f = *state;
    const char *names[] = {"\xE6\x97\xA5\xE6\x9C\xAC", smiley_name()};
    for (int k = 0; k < 2; k++) {
        cast_to_name(f, names[k], strlen(names[k]));
        assert_false(f->fp.closed);
        assert_noproc_for_name(f, names[k], strlen(names[k]));
    }
    assert_int_equal(counter_value(f, 1), 0);
}

static int got_messages;

static void count_message(cn_proc *p, const char *buf, size_t len)
{
    (void)p;
    (void)buf;
    (void)len;
    got_messages++;
}

static const cn_proc_ops counting_ops = {.message = count_message};

/* A process registered from C under the longest UTF-8 name is reached by it, and its DOWN names it. */
static void utf8_names_that_are_registered(void **state)
{
    fixture *f = *state;
    const char *name = smiley_name();
    cn_proc *p = cn_proc_spawn(f->fp.node, &counting_ops, NULL);
    assert_int_equal(cn_proc_register(p, name), 0);
    got_messages = 0;
    cast_to_name(f, name, strlen(name));
    assert_int_equal(got_messages, 1);
    erlang_pid from;
    erlang_ref ref;
    fp_pid(&from, 45);
    fp_ref(&ref, 45, 45, 45);
    cn_buf ctl;
    cn_buf_init(&ctl);
    ctl_with_name(&ctl, DOP_MONITOR_P, &from, name, strlen(name), &ref);
    feed_frame(f, ctl.data, ctl.len, NULL, 0);
    cn_buf_free(&ctl);
    cn_buf_reset(&f->fp.out);
    cn_proc_exit(p, NULL, 0);
    fp_run(&f->fp);
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), 0);
    assert_int_equal(v.op, DOP_PAYLOAD_MONITOR_P_EXIT);
    int i = v.ctl;
    char echoed[MAXATOMLEN_UTF8];
    assert_int_equal(ei_decode_atom_as(v.buf, &i, echoed, sizeof echoed, ERLANG_UTF8, NULL, NULL), 0);
    assert_string_equal(echoed, name);
    fp_view_free(&v);
    assert_false(f->fp.closed);
}

/*
 * :"counter\0junk" is an atom other than counter (issue 9, 9): the BEAM drops a
 * send to it and answers a monitor noproc. The old decoder cut it at the NUL and
 * delivered to counter.
 */
static void a_name_with_a_nul_is_another_name(void **state)
{
    fixture *f = *state;
    static const char name[] = "counter\0junk";
    cast_to_name(f, name, sizeof name - 1);
    assert_false(f->fp.closed);
    assert_noproc_for_name(f, name, sizeof name - 1);
    assert_int_equal(counter_value(f, 1), 0);
}

/* Pids and refs of nodes with UTF-8 names far from Latin-1 are pids and refs like any other. */
static void utf8_node_names_in_pids_and_refs(void **state)
{
    fixture *f = *state;
    static char node[4 * 250 + 3];
    for (int k = 0; k < 250; k++)
        memcpy(node + 4 * k, "\xF0\x9F\x98\x80", 4);
    memcpy(node + 1000, "@h", 3);
    erlang_pid from, cpid;
    memset(&from, 0, sizeof from);
    memcpy(from.node, node, sizeof node);
    from.num = 48;
    from.creation = 9;
    erlang_ref ref;
    memset(&ref, 0, sizeof ref);
    memcpy(ref.node, node, sizeof node);
    ref.len = 3;
    ref.n[0] = 48;
    ref.creation = 9;
    counter_pid(f, &cpid);
    cn_node_stats st0, st;
    cn_node_get_stats(f->fp.node, &st0);
    fp_send_monitor(&f->fp, DOP_MONITOR_P, &from, NULL, &cpid, &ref);
    assert_false(f->fp.closed);
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.monitors, st0.monitors + 1);
}

/* A send by name to the peer carries the name as a UTF-8 atom, whole. */
static void names_sent_to_the_peer_are_utf8(void **state)
{
    fixture *f = *state;
    cn_proc *p = cn_proc_spawn(f->fp.node, &counting_ops, NULL);
    char msg[16];
    size_t n = cn_term_atom(msg, "hi");
    const char *name = smiley_name();
    cn_buf_reset(&f->fp.out);
    assert_int_equal(cn_send_name(p, name, FP_PEER, msg, n), 0);
    fp_run(&f->fp);
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), 0);
    assert_int_equal(v.op, DOP_REG_SEND);
    int i = v.ctl;
    erlang_pid from;
    assert_int_equal(ei_decode_pid(v.buf, &i, &from), 0);
    assert_int_equal(ei_skip_term(v.buf, &i), 0);
    char got[MAXATOMLEN_UTF8];
    assert_int_equal(ei_decode_atom_as(v.buf, &i, got, sizeof got, ERLANG_UTF8, NULL, NULL), 0);
    assert_string_equal(got, name);
    fp_view_free(&v);
    cn_proc_exit(p, NULL, 0);
}

/* A pid whose node name holds a NUL would be cut to a name it is not: malformed. */
static void a_pid_node_with_a_nul_is_malformed(void **state)
{
    fixture *f = *state;
    erlang_pid cpid;
    counter_pid(f, &cpid);
    ei_x_buff ctl;
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, 3);
    ei_x_encode_long(&ctl, DOP_LINK);
    /* NEW_PID_EXT with the node 'cnode@127.0.0.1\0x': the counter's own node, cut. */
    static const char node[] = FP_NODE "\0x";
    char pid[3 + sizeof node + 12];
    size_t n = sizeof node - 1, k = 0;
    pid[k++] = (char)ERL_NEW_PID_EXT;
    pid[k++] = (char)ERL_SMALL_ATOM_UTF8_EXT;
    pid[k++] = (char)n;
    memcpy(pid + k, node, n);
    k += n;
    memset(pid + k, 0, 12);
    pid[k + 3] = 1;
    k += 12;
    ei_x_append_buf(&ctl, pid, (int)k);
    ei_x_encode_pid(&ctl, &cpid);
    feed_frame(f, ctl.buff, (size_t)ctl.index, NULL, 0);
    assert_true(f->fp.closed);
    ei_x_free(&ctl);
}

/* ---- Memory a peer made us take is given back (issue 9, 8) ---- */

#ifdef COUNT_ALLOCATIONS
/* Bytes malloc has handed out and not had back: the arena's and the mmapped chunks'. */
static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* n MONITOR_P (or DEMONITOR_P) of the counter by pid, from one peer process, in one read. */
static void feed_monitors(fixture *f, int op, unsigned n)
{
    erlang_pid from, cpid;
    fp_pid(&from, 46);
    counter_pid(f, &cpid);
    cn_buf b;
    cn_buf_init(&b);
    for (unsigned k = 0; k < n; k++) {
        erlang_ref ref;
        fp_ref(&ref, k, k >> 16, 46);
        ei_x_buff ctl;
        fp_ctl_monitor(&ctl, op, &from, NULL, &cpid, &ref);
        fp_frame(&b, &ctl, NULL);
        ei_x_free(&ctl);
    }
    cn_conn_feed(f->fp.conn, b.data, b.len);
    fp_run(&f->fp);
    cn_buf_free(&b);
}
#endif

/*
 * 300,000 monitors never demonitored, then the same demonitored, then again with
 * the connection dropped: each time the node is back to what it held before,
 * give or take 512 KiB (the spare monitors kept for calls, the hash table).
 */
static void monitors_give_their_memory_back(void **state)
{
#ifdef COUNT_ALLOCATIONS
    fixture *f = *state;
    const unsigned n = 300000;
    assert_int_equal(counter_value(f, 1), 0);
    size_t base = heap_in_use();
    cn_node_stats st, st0;
    cn_node_get_stats(f->fp.node, &st0);
    feed_monitors(f, DOP_MONITOR_P, n);
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.monitors, st0.monitors + n);
    assert_true(heap_in_use() > base + 20 * 1024 * 1024);
    feed_monitors(f, DOP_DEMONITOR_P, n);
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.monitors, st0.monitors);
    if (heap_in_use() > base + 512 * 1024)
        fail_msg("after demonitors: %zu bytes held, %zu before", heap_in_use(), base);
    feed_monitors(f, DOP_MONITOR_P, n);
    const char bad[] = {0, 0, 0, 1, 'x'};
    cn_conn_feed(f->fp.conn, bad, sizeof bad);
    /* The lost connection's monitors are freed a batch per loop turn. */
    for (int turn = 0; turn < 64; turn++)
        uv_run(&f->fp.loop, UV_RUN_NOWAIT);
    assert_true(f->fp.closed);
    cn_node_get_stats(f->fp.node, &st);
    assert_int_equal(st.monitors, 0);
    if (heap_in_use() > base + 512 * 1024)
        fail_msg("after the connection went: %zu bytes held, %zu before", heap_in_use(), base);
#else
    (void)state;
    skip();
#endif
}

#ifdef COUNT_ALLOCATIONS
/* {'$gen_call', {From, Tag}, get_value} with a binary of n bytes as the tag. */
static void big_tag_call(ei_x_buff *msg, const erlang_pid *from, size_t n)
{
    char *tag = calloc(1, n);
    assert_non_null(tag);
    ei_x_new_with_version(msg);
    ei_x_encode_tuple_header(msg, 3);
    ei_x_encode_atom(msg, "$gen_call");
    ei_x_encode_tuple_header(msg, 2);
    ei_x_encode_pid(msg, from);
    ei_x_encode_binary(msg, tag, (long)n);
    ei_x_encode_atom(msg, "get_value");
    free(tag);
}
#endif

/*
 * A 16 MB call tag is answered, and once answered the node holds what it held
 * before, with the connection still up: the read buffer, the write buffers and
 * the server's reply buffer shrink back. So does the room an exit reason of 16 MB
 * inside a control tuple took.
 */
static void a_large_message_gives_its_memory_back(void **state)
{
#ifdef COUNT_ALLOCATIONS
    fixture *f = *state;
    const size_t big = 16u << 20;
    assert_int_equal(counter_value(f, 1), 0);
    cn_buf_free(&f->fp.out);
    size_t base = heap_in_use();
    erlang_pid from;
    fp_pid(&from, 47);
    ei_x_buff ctl, msg;
    fp_ctl_reg_send(&ctl, &from, "counter");
    big_tag_call(&msg, &from, big);
    fp_send(&f->fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    assert_int_equal(reply_value(f, DOP_SEND_SENDER), 0);
    cn_buf_free(&f->fp.out);
    if (heap_in_use() > base + 1024 * 1024)
        fail_msg("after a 16 MB tag: %zu bytes held, %zu before", heap_in_use(), base);
    /* exit(Pid, Reason) with the reason inside the control tuple, to a process that dies of it. */
    cn_proc *p = cn_proc_spawn(f->fp.node, &counting_ops, NULL);
    erlang_pid ppid;
    cn_proc_pid(p, &ppid);
    char *reason = calloc(1, big);
    assert_non_null(reason);
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, 4);
    ei_x_encode_long(&ctl, DOP_EXIT2);
    ei_x_encode_pid(&ctl, &from);
    ei_x_encode_pid(&ctl, &ppid);
    ei_x_encode_binary(&ctl, reason, (long)big);
    free(reason);
    fp_send(&f->fp, &ctl, NULL);
    ei_x_free(&ctl);
    cn_buf_free(&f->fp.out);
    if (heap_in_use() > base + 1024 * 1024)
        fail_msg("after a 16 MB exit reason: %zu bytes held, %zu before", heap_in_use(), base);
    assert_int_equal(counter_value(f, 2), 0);
#else
    (void)state;
    skip();
#endif
}

/*
 * A call whose tag is 4 MB, read as TCP reads it (64 KiB a read, in place): no
 * read is offered more room than it asked for, the frame is read into one
 * allocation of its size (not a buffer doubling as it fills), and the reply
 * echoes the tag byte for byte from the request's frame: written as a piece
 * of its own, not copied into the reply or the write buffer.
 */
static void a_large_tag_is_echoed_from_its_frame(void **state)
{
    fixture *f = *state;
    const size_t n = 4u << 20, chunk = 64 * 1024;
    erlang_pid from;
    fp_pid(&from, 48);
    ei_x_buff ctl, msg;
    fp_ctl_reg_send(&ctl, &from, "counter");
    ei_x_new_with_version(&msg);
    ei_x_encode_tuple_header(&msg, 3);
    ei_x_encode_atom(&msg, "$gen_call");
    ei_x_encode_tuple_header(&msg, 2);
    ei_x_encode_pid(&msg, &from);
    int tag_at = msg.index;
    char *tag = malloc(n);
    assert_non_null(tag);
    for (size_t k = 0; k < n; k++)
        tag[k] = (char)(k * 7);
    ei_x_encode_binary(&msg, tag, (long)n);
    int tag_len = msg.index - tag_at;
    ei_x_encode_atom(&msg, "get_value");
    free(tag);
    cn_buf frame;
    cn_buf_init(&frame);
    fp_frame(&frame, &ctl, &msg);
#ifdef COUNT_ALLOCATIONS
    unsigned long before = allocations;
#endif
    for (size_t off = 0; off < frame.len;) {
        char *base;
        size_t room;
        cn_conn_read_buf(f->fp.conn, chunk, &base, &room);
        assert_true(room > 0 && room <= chunk);
        size_t take = frame.len - off < room ? frame.len - off : room;
        memcpy(base, frame.data + off, take);
        cn_conn_read_done(f->fp.conn, take);
        off += take;
    }
#ifdef COUNT_ALLOCATIONS
    /* The frame's blob, the rbuf shrinking back, the segment list: a handful, not one per read. */
    assert_true(allocations - before < 8);
#endif
    fp_run(&f->fp);
    assert_false(f->fp.closed);
    assert_int_equal(f->fp.largest_write, (size_t)tag_len);
    fp_frame_view v;
    assert_int_equal(fp_next(&f->fp, &v), 0);
    assert_int_equal(v.op, DOP_SEND_SENDER);
    int i = v.msg, ver, arity;
    assert_int_equal(ei_decode_version(v.buf, &i, &ver), 0);
    assert_int_equal(ei_decode_tuple_header(v.buf, &i, &arity), 0);
    assert_int_equal(arity, 2);
    assert_memory_equal(v.buf + i, msg.buff + tag_at, (size_t)tag_len);
    i += tag_len;
    long long value = -1;
    assert_int_equal(ei_decode_longlong(v.buf, &i, &value), 0);
    assert_int_equal(value, 0);
    assert_int_equal((size_t)i, v.len);
    fp_view_free(&v);
    cn_buf_free(&frame);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    /* The connection goes on as before. */
    call(f, 2, 1, "increment");
    assert_int_equal(reply_value(f, DOP_ALIAS_SEND), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(call_replies_to_alias_with_tag_echoed, setup, teardown),
        cmocka_unit_test_setup_teardown(counter_contract, setup, teardown),
        cmocka_unit_test_setup_teardown(reply_goes_to_pid_without_alias, setup_no_alias, teardown),
        cmocka_unit_test_setup_teardown(unknown_call_gets_error_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(monitor_of_unknown_name_is_down_noproc, setup, teardown),
        cmocka_unit_test_setup_teardown(monitors_are_added_and_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(split_and_merged_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(a_call_allocates_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(malformed_frame_closes_only_its_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(garbage_frame_without_pass_through_closes, setup, teardown),
        cmocka_unit_test(unknown_control_message_closes_the_connection),
        cmocka_unit_test_setup_teardown(exit2_kill_sends_killed_to_links_and_monitors, setup, teardown),
        cmocka_unit_test_setup_teardown(deeply_nested_exit_reasons_do_not_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(unlink_id_is_acknowledged, setup, teardown),
        cmocka_unit_test_setup_teardown(lost_connection_drops_monitors, setup, teardown),
        cmocka_unit_test_setup_teardown(a_lost_connections_monitors_leave_in_batches, setup, teardown),
        cmocka_unit_test(wrong_cookie_is_refused),
        cmocka_unit_test(corrupted_frames_never_crash_the_node),
        cmocka_unit_test(exit_tt_with_four_elements_is_malformed),
        cmocka_unit_test(every_operation_has_exactly_its_arity),
        cmocka_unit_test_setup_teardown(a_frame_ends_where_its_terms_end, setup, teardown),
        cmocka_unit_test(a_second_payload_or_a_trailing_term_is_malformed),
        cmocka_unit_test_setup_teardown(utf8_names_that_are_not_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(utf8_names_that_are_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(a_name_with_a_nul_is_another_name, setup, teardown),
        cmocka_unit_test_setup_teardown(a_pid_node_with_a_nul_is_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(utf8_node_names_in_pids_and_refs, setup, teardown),
        cmocka_unit_test_setup_teardown(names_sent_to_the_peer_are_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(monitors_give_their_memory_back, setup, teardown),
        cmocka_unit_test_setup_teardown(demonitors_in_any_order_leave_the_rest, setup, teardown),
        cmocka_unit_test_setup_teardown(a_large_message_gives_its_memory_back, setup, teardown),
        cmocka_unit_test_setup_teardown(a_large_tag_is_echoed_from_its_frame, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Writes the fuzz harnesses' seed corpora from valid messages: `make fuzz-corpus`
 * runs it as `gen_corpus test/fuzz/corpus`. Every seed is something a real peer
 * or a real save would produce, so the fuzzers start from deep inside the
 * formats rather than from noise:
 *
 *   handshake/   complete handshakes in both roles, recorded by playing the peer
 *                with the real handshake module against the harness's own
 *                configuration (test/fuzz/fuzz_handshake.h)
 *   dist/        streams of frames a BEAM sends: calls to the rate limiter with
 *                client ids of every kind, the counter, :sys, monitors, links,
 *                exit signals, messages to the bare processes, ticks, OTP 28's
 *                ALTACT_SIG_SEND in each form
 *   term/        client ids and control tuples as single terms
 *   statefile/   state files holding rate-limiter images made by rl_save
 *   journal/     journal bodies (the records after the header) as a crash leaves
 *                them: whole records of the counter's kinds, a torn tail; the first
 *                byte is the harness's (1: fix the CRCs)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cnode/proc.h"
#include "cnode/protocol.h"
#include "genserver/rl_table.h"
#include "test/fuzz/fuzz_handshake.h"
#include "test/fuzz/fuzz_node.h"

static const char *root;

static void die(const char *what)
{
    fprintf(stderr, "gen_corpus: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void write_seed(const char *harness, const char *name, const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, harness);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        die(path);
    snprintf(path, sizeof path, "%s/%s/%s", root, harness, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0)
        die(path);
}

/* ---- handshake ---- */

static uint32_t peer_random(void *ctx)
{
    (void)ctx;
    return 0x9abcdef0u;
}

/*
 * Runs the harness's machine (configured by cfg_byte) against a peer playing the
 * other role and records what the peer sent, prefixed by the two input bytes.
 * alive_answer: what the peer answers to an "alive" status, when it connects.
 */
static void record_handshake(const char *name, uint8_t cfg_byte, uint8_t seed, uint64_t peer_flags)
{
    cn_hs_config ours, theirs;
    fh_config(&cfg_byte, &ours);
    memset(&theirs, 0, sizeof theirs);
    theirs.role = ours.role == CN_HS_ACCEPT ? CN_HS_CONNECT : CN_HS_ACCEPT;
    theirs.our_name = FH_PEER;
    theirs.cookie = FH_COOKIE;
    theirs.our_flags = peer_flags;
    theirs.our_creation = 777;
    theirs.random32 = peer_random;
    theirs.alive_continue = 1;
    theirs.len4 = ours.len4;
    cn_hs us, peer;
    cn_buf to_us, to_peer, stream;
    cn_buf_init(&to_us);
    cn_buf_init(&to_peer);
    cn_buf_init(&stream);
    cn_buf_put_u8(&stream, cfg_byte);
    cn_buf_put_u8(&stream, seed);
    if (cn_hs_init(&us, &ours) != 0 || cn_hs_init(&peer, &theirs) != 0)
        die("cn_hs_init");
    if (ours.role == CN_HS_CONNECT)
        cn_hs_start(&us, &to_peer);
    else
        cn_hs_start(&peer, &to_us);
    for (int round = 0; round < 10; round++) {
        cn_buf_append(&stream, to_us.data, to_us.len);
        int a = cn_hs_feed(&us, to_us.data, to_us.len, &to_peer);
        cn_buf_reset(&to_us);
        int b = cn_hs_feed(&peer, to_peer.data, to_peer.len, &to_us);
        cn_buf_reset(&to_peer);
        if (a < 0 || b < 0 || (cn_hs_done(&us) && to_us.len == 0))
            break;
    }
    cn_buf_append(&stream, to_us.data, to_us.len);
    write_seed("handshake", name, stream.data, stream.len);
    cn_buf_free(&to_us);
    cn_buf_free(&to_peer);
    cn_buf_free(&stream);
}

static void handshake_seeds(void)
{
    record_handshake("accept_ok", 0x00, 0, CN_DFLAGS);
    record_handshake("accept_ok_pieces", 0x00, 7, CN_DFLAGS);
    record_handshake("accept_ok_simultaneous", 0x02, 0, CN_DFLAGS);
    record_handshake("accept_alive", 0x04, 3, CN_DFLAGS);
    record_handshake("accept_nok", 0x06, 0, CN_DFLAGS);
    record_handshake("accept_old_flags", 0x00, 0, DFLAG_EXTENDED_REFERENCES | DFLAG_HANDSHAKE_23);
    record_handshake("connect_ok", 0x01, 0, CN_DFLAGS);
    record_handshake("connect_ok_pieces", 0x01, 11, CN_DFLAGS);
    record_handshake("connect_expect_peer", 0x11, 0, CN_DFLAGS);
    record_handshake("connect_alive_continue", 0x09, 0, CN_DFLAGS);
    /* Over TLS distribution the lengths are 4 bytes. */
    record_handshake("accept_ok_tls", 0x20, 5, CN_DFLAGS);
    record_handshake("connect_ok_tls", 0x21, 0, CN_DFLAGS);
    /* A peer that sends MANDATORY_25_DIGEST in place of the OTP 25 set, as OTP 29's flags would be. */
    uint64_t digest_only = (0x6d07df7fbcULL & ~DFLAG_MANDATORY_25) | DFLAG_MANDATORY_25_DIGEST;
    record_handshake("accept_digest_only", 0x00, 0, digest_only);
    record_handshake("connect_digest_only", 0x01, 0, digest_only);
}

/* ---- terms: client ids ---- */

typedef void (*term_maker)(ei_x_buff *x);

static void id_binary(ei_x_buff *x) { ei_x_encode_binary(x, "client-42", 9); }
static void id_integer(ei_x_buff *x) { ei_x_encode_long(x, 42); }
static void id_bignum(ei_x_buff *x) { ei_x_encode_ulonglong(x, 0xFFFFFFFFFFFFull); }
static void id_float(ei_x_buff *x) { ei_x_encode_double(x, 1.0); }
static void id_atom_utf8(ei_x_buff *x) { ei_x_encode_atom_as(x, "\xE6\x97\xA5\xE6\x9C\xAC", ERLANG_UTF8, ERLANG_UTF8); }
static void id_string(ei_x_buff *x) { ei_x_encode_string(x, "client"); }

static void id_tuple(ei_x_buff *x)
{
    ei_x_encode_tuple_header(x, 3);
    ei_x_encode_atom(x, "user");
    ei_x_encode_long(x, 7);
    ei_x_encode_binary(x, "eu-west", 7);
}

static void id_list(ei_x_buff *x)
{
    ei_x_encode_list_header(x, 3);
    ei_x_encode_long(x, 1);
    ei_x_encode_atom(x, "two");
    ei_x_encode_double(x, 3.5);
    ei_x_encode_empty_list(x);
}

static void id_map(ei_x_buff *x)
{
    ei_x_encode_map_header(x, 3);
    ei_x_encode_atom(x, "zone");
    ei_x_encode_binary(x, "a", 1);
    ei_x_encode_atom(x, "id");
    ei_x_encode_long(x, 9);
    ei_x_encode_binary(x, "k", 1);
    ei_x_encode_map_header(x, 2);
    ei_x_encode_long(x, 2);
    ei_x_encode_atom(x, "b");
    ei_x_encode_long(x, 1);
    ei_x_encode_atom(x, "a");
}

static void id_pid_ref(ei_x_buff *x)
{
    erlang_pid pid = {FN_PEER, 5, 0, 777};
    erlang_ref ref = {FN_PEER, 3, {1, 2, 3, 0, 0}, 777};
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_pid(x, &pid);
    ei_x_encode_ref(x, &ref);
}

/* fun(Y) -> {X, Y} end with X = abc, as OTP 25 encodes it, and fun erlang:abs/1. */
static void id_funs(ei_x_buff *x)
{
    static const unsigned char closure[] = {
        112, 0, 0, 0, 76, 1, 176, 182, 251, 52, 184, 187, 61, 53, 142, 240, 10, 242, 44, 2,
        215, 188, 0, 0, 0, 0, 0, 0, 0, 1, 119, 5, 116, 107, 103, 101, 110, 97, 0, 98, 5, 133,
        183, 217, 88, 119, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115, 116,
        0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 119, 3, 97, 98, 99};
    static const unsigned char export_abs[] = {113, 119, 6, 101, 114, 108, 97, 110, 103, 119, 3,
                                               97, 98, 115, 97, 1};
    ei_x_encode_tuple_header(x, 2);
    ei_x_append_buf(x, (const char *)closure, sizeof closure);
    ei_x_append_buf(x, (const char *)export_abs, sizeof export_abs);
}

static const struct {
    const char *name;
    term_maker make;
} ids[] = {
    {"binary", id_binary}, {"integer", id_integer}, {"bignum", id_bignum},
    {"float", id_float},   {"atom_utf8", id_atom_utf8}, {"string", id_string},
    {"tuple", id_tuple},   {"list", id_list},       {"map", id_map},
    {"pid_ref", id_pid_ref}, {"funs", id_funs},
};
#define N_IDS (sizeof ids / sizeof ids[0])

static void term_seeds(void)
{
    char name[64];
    for (size_t k = 0; k < N_IDS; k++) {
        ei_x_buff x;
        ei_x_new(&x);
        ids[k].make(&x);
        snprintf(name, sizeof name, "id_%s", ids[k].name);
        write_seed("term", name, x.buff, (size_t)x.index);
        ei_x_free(&x);
    }
    /* A control tuple and a $gen_call, as whole terms. */
    erlang_pid pid = {FN_PEER, 5, 0, 777};
    erlang_ref ref = {FN_PEER, 3, {1, 2, 3, 0, 0}, 777};
    ei_x_buff x;
    ei_x_new(&x);
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_long(&x, DOP_MONITOR_P);
    ei_x_encode_pid(&x, &pid);
    ei_x_encode_atom(&x, "rate_limiter");
    ei_x_encode_ref(&x, &ref);
    write_seed("term", "ctl_monitor_p", x.buff, (size_t)x.index);
    ei_x_free(&x);
}

/* ---- dist: frames ---- */

typedef struct frames {
    cn_buf b;
} frames;

/* Appends one frame: length, pass-through byte, versioned control, optional message. */
static void frame(frames *f, const ei_x_buff *ctl, const ei_x_buff *msg)
{
    cn_buf_put_u32(&f->b, (uint32_t)(1 + ctl->index + (msg ? msg->index : 0)));
    cn_buf_put_u8(&f->b, CN_PASS_THROUGH);
    cn_buf_append(&f->b, ctl->buff, (size_t)ctl->index);
    if (msg)
        cn_buf_append(&f->b, msg->buff, (size_t)msg->index);
}

static erlang_pid peer_pid(unsigned num)
{
    erlang_pid p = {FN_PEER, num, 0, 777};
    return p;
}

static erlang_ref peer_ref(unsigned n)
{
    erlang_ref r = {FN_PEER, 3, {n, 0, 0, 0, 0}, 777};
    return r;
}

/* The node's pids, with the creation mark in place of the node's random creation. */
static erlang_pid node_pid(fuzz_node *fn, const char *name)
{
    erlang_pid p;
    cn_proc_pid(cn_proc_whereis(fn->node, name), &p);
    p.creation = FN_CREATION_MARK;
    return p;
}

static void ctl_begin(ei_x_buff *x, int arity, long op)
{
    ei_x_new_with_version(x);
    ei_x_encode_tuple_header(x, arity);
    ei_x_encode_long(x, op);
}

static void reg_send(frames *f, unsigned from, const char *to, const ei_x_buff *msg)
{
    erlang_pid p = peer_pid(from);
    ei_x_buff c;
    ctl_begin(&c, 4, DOP_REG_SEND);
    ei_x_encode_pid(&c, &p);
    ei_x_encode_atom(&c, "");
    ei_x_encode_atom(&c, to);
    frame(f, &c, msg);
    ei_x_free(&c);
}

static void monitor_name(frames *f, long op, unsigned from, const char *name, unsigned refn)
{
    erlang_pid p = peer_pid(from);
    erlang_ref r = peer_ref(refn);
    ei_x_buff c;
    ctl_begin(&c, 4, op);
    ei_x_encode_pid(&c, &p);
    ei_x_encode_atom(&c, name);
    ei_x_encode_ref(&c, &r);
    frame(f, &c, NULL);
    ei_x_free(&c);
}

/* {Label, {From, [alias | Ref]}, Req}, Req made by make (or the atom req). */
static void gen_request(ei_x_buff *m, const char *label, unsigned from, unsigned refn, term_maker make,
                        const char *req)
{
    erlang_pid p = peer_pid(from);
    erlang_ref r = peer_ref(refn);
    ei_x_new_with_version(m);
    ei_x_encode_tuple_header(m, 3);
    ei_x_encode_atom(m, label);
    ei_x_encode_tuple_header(m, 2);
    ei_x_encode_pid(m, &p);
    ei_x_encode_list_header(m, 1);
    ei_x_encode_atom(m, "alias");
    ei_x_encode_ref(m, &r);
    if (make) {
        ei_x_encode_tuple_header(m, 2);
        ei_x_encode_atom(m, "check_rate");
        make(m);
    } else {
        ei_x_encode_atom(m, req);
    }
}

/* GenServer.call by name as OTP 25 makes it: MONITOR_P, REG_SEND, DEMONITOR_P. */
static void call(frames *f, const char *to, unsigned refn, term_maker make, const char *req)
{
    ei_x_buff m;
    monitor_name(f, DOP_MONITOR_P, 1, to, refn);
    gen_request(&m, "$gen_call", 1, refn, make, req);
    reg_send(f, 1, to, &m);
    ei_x_free(&m);
    monitor_name(f, DOP_DEMONITOR_P, 1, to, refn);
}

/* A control message from a peer pid to one of the node's pids: LINK, UNLINK_ID, EXIT... */
static void pid_op(frames *f, long op, unsigned from, const erlang_pid *to, const char *reason, long id)
{
    erlang_pid p = peer_pid(from);
    ei_x_buff c;
    ctl_begin(&c, op == DOP_UNLINK_ID || reason ? 4 : 3, op);
    if (op == DOP_UNLINK_ID)
        ei_x_encode_long(&c, id);
    ei_x_encode_pid(&c, &p);
    ei_x_encode_pid(&c, to);
    if (reason)
        ei_x_encode_atom(&c, reason);
    frame(f, &c, NULL);
    ei_x_free(&c);
}

static void write_frames(const char *name, frames *f)
{
    write_seed("dist", name, f->b.data, f->b.len);
    cn_buf_reset(&f->b);
}

static void dist_call_seeds(frames *f)
{
    char name[64];
    for (size_t k = 0; k < N_IDS; k++) {
        call(f, "rate_limiter", (unsigned)k + 1, ids[k].make, NULL);
        snprintf(name, sizeof name, "check_rate_%s", ids[k].name);
        write_frames(name, f);
    }
    for (int k = 0; k < 5; k++)
        call(f, "rate_limiter", 100 + (unsigned)k, id_binary, NULL);
    write_frames("check_rate_until_limited", f);
    call(f, "counter", 1, NULL, "increment");
    call(f, "counter", 2, NULL, "get_value");
    call(f, "counter", 3, NULL, "no_such_call");
    ei_x_buff m;
    ei_x_new_with_version(&m);
    ei_x_encode_tuple_header(&m, 2);
    ei_x_encode_atom(&m, "$gen_cast");
    ei_x_encode_atom(&m, "increment");
    reg_send(f, 2, "counter", &m);
    ei_x_free(&m);
    write_frames("counter_calls_and_cast", f);
    ei_x_new_with_version(&m);
    ei_x_encode_atom(&m, "get_state");
    ei_x_buff sys;
    gen_request(&sys, "system", 3, 9, NULL, "get_state");
    reg_send(f, 3, "rate_limiter", &sys);
    ei_x_free(&sys);
    ei_x_free(&m);
    write_frames("sys_get_state", f);
    call(f, "nobody", 1, NULL, "ping");
    write_frames("call_unknown_name", f);
}

static void dist_signal_seeds(fuzz_node *fn, frames *f)
{
    erlang_pid sink = node_pid(fn, "sink"), trap = node_pid(fn, "trap");
    erlang_pid counter = node_pid(fn, "counter");
    pid_op(f, DOP_LINK, 4, &sink, NULL, 0);
    pid_op(f, DOP_UNLINK_ID, 4, &sink, NULL, 77);
    pid_op(f, DOP_LINK, 4, &sink, NULL, 0);
    pid_op(f, DOP_EXIT, 4, &sink, "boom", 0);
    write_frames("link_unlink_exit_sink", f);
    pid_op(f, DOP_LINK, 5, &trap, NULL, 0);
    pid_op(f, DOP_EXIT, 5, &trap, "boom", 0);
    pid_op(f, DOP_EXIT2, 5, &trap, "kill", 0);
    write_frames("exits_to_trapping_process", f);
    pid_op(f, DOP_EXIT2, 6, &counter, "shutdown", 0);
    call(f, "counter", 4, NULL, "get_value");
    write_frames("exit2_counter_then_call", f);

    /* SEND to the sink's pid: {PeerPid, hello} comes back to the peer. */
    erlang_pid p = peer_pid(7);
    ei_x_buff c, m;
    ctl_begin(&c, 3, DOP_SEND);
    ei_x_encode_atom(&c, "");
    ei_x_encode_pid(&c, &sink);
    ei_x_new_with_version(&m);
    ei_x_encode_tuple_header(&m, 2);
    ei_x_encode_pid(&m, &p);
    ei_x_encode_atom(&m, "hello");
    frame(f, &c, &m);
    ei_x_free(&c);
    ctl_begin(&c, 4, DOP_MONITOR_P);
    ei_x_encode_pid(&c, &p);
    ei_x_encode_pid(&c, &sink);
    erlang_ref r = peer_ref(55);
    ei_x_encode_ref(&c, &r);
    frame(f, &c, NULL);
    ei_x_free(&c);
    pid_op(f, DOP_EXIT2, 7, &sink, "kill", 0);
    ei_x_free(&m);
    cn_buf_put_u32(&f->b, 0); /* a tick */
    write_frames("send_monitor_kill_sink", f);
}

/* ALTACT_SIG_SEND {37, Flags, From, To[, Token]} + payload atom; to_kind 'a' alias, 'n' name, 'p' pid. */
static void altact(frames *f, long flags, char to_kind, const char *name, const erlang_pid *pid, const char *payload)
{
    erlang_pid p = peer_pid(8);
    erlang_ref r = peer_ref(99);
    ei_x_buff c, m;
    ctl_begin(&c, (flags & CN_ALTACT_TOKEN) ? 5 : 4, DOP_ALTACT_SIG_SEND);
    ei_x_encode_long(&c, flags);
    ei_x_encode_pid(&c, &p);
    if (to_kind == 'a')
        ei_x_encode_ref(&c, &r);
    else if (to_kind == 'n')
        ei_x_encode_atom(&c, name);
    else
        ei_x_encode_pid(&c, pid);
    if (flags & CN_ALTACT_TOKEN) {      /* a seq_trace token {Flags, Label, Serial, From, LastCnt} */
        ei_x_encode_tuple_header(&c, 5);
        ei_x_encode_long(&c, 1);
        ei_x_encode_long(&c, 42);
        ei_x_encode_long(&c, 7);
        ei_x_encode_pid(&c, &p);
        ei_x_encode_long(&c, 6);
    }
    ei_x_new_with_version(&m);
    ei_x_encode_atom(&m, payload);
    frame(f, &c, &m);
    ei_x_free(&c);
    ei_x_free(&m);
}

/* REG_SEND and MONITOR_P by a name of n bytes of UTF-8 (NUL bytes allowed). */
static void by_utf8_name(frames *f, const char *name, size_t n)
{
    erlang_pid p = peer_pid(8);
    erlang_ref r = peer_ref(88);
    ei_x_buff c, m;
    ctl_begin(&c, 4, DOP_MONITOR_P);
    ei_x_encode_pid(&c, &p);
    ei_x_encode_atom_len_as(&c, name, (int)n, ERLANG_UTF8, ERLANG_UTF8);
    ei_x_encode_ref(&c, &r);
    frame(f, &c, NULL);
    ei_x_free(&c);
    ctl_begin(&c, 4, DOP_REG_SEND);
    ei_x_encode_pid(&c, &p);
    ei_x_encode_atom(&c, "");
    ei_x_encode_atom_len_as(&c, name, (int)n, ERLANG_UTF8, ERLANG_UTF8);
    ei_x_new_with_version(&m);
    ei_x_encode_tuple_header(&m, 2);
    ei_x_encode_atom(&m, "$gen_cast");
    ei_x_encode_atom(&m, "increment");
    frame(f, &c, &m);
    ei_x_free(&c);
    ei_x_free(&m);
}

/* OTP 28's ALTACT_SIG_SEND in the forms erts sends: alias replies, priority sends and exits. */
static void dist_altact_seeds(fuzz_node *fn, frames *f)
{
    erlang_pid sink = node_pid(fn, "sink"), trap = node_pid(fn, "trap");
    altact(f, CN_ALTACT_ALIAS, 'a', NULL, NULL, "late");
    altact(f, CN_ALTACT_ALIAS | CN_ALTACT_TOKEN | CN_ALTACT_PRIO, 'a', NULL, NULL, "late");
    altact(f, CN_ALTACT_ALIAS | CN_ALTACT_EXIT, 'a', NULL, NULL, "kill");
    write_frames("altact_to_aliases", f);
    altact(f, CN_ALTACT_NAME | CN_ALTACT_PRIO, 'n', "sink", NULL, "hello");
    altact(f, CN_ALTACT_PRIO | CN_ALTACT_TOKEN, 'p', NULL, &sink, "hello");
    altact(f, CN_ALTACT_NAME, 'n', "nobody", NULL, "hello");
    write_frames("altact_priority_sends", f);
    altact(f, CN_ALTACT_EXIT | CN_ALTACT_PRIO, 'p', NULL, &trap, "boom");
    altact(f, CN_ALTACT_EXIT | CN_ALTACT_NAME, 'n', "sink", NULL, "kill");
    write_frames("altact_priority_exits", f);
    ei_x_buff m;
    gen_request(&m, "$gen_call", 1, 5, NULL, "increment");
    altact(f, CN_ALTACT_NAME, 'n', "counter", NULL, "ping");
    reg_send(f, 1, "counter", &m);
    ei_x_free(&m);
    write_frames("altact_then_call", f);
}

/* The frames of issue 9's items 1, 5 and 9: each a malformed frame or a legal name. */
static void dist_hostile_seeds(fuzz_node *fn, frames *f)
{
    erlang_pid counter = node_pid(fn, "counter"), p = peer_pid(9);
    ei_x_buff c, m;
    ctl_begin(&c, 4, DOP_EXIT_TT);          /* {13, From, To, Token}: the reason is missing */
    ei_x_encode_pid(&c, &p);
    ei_x_encode_pid(&c, &counter);
    ei_x_encode_atom(&c, "token");
    frame(f, &c, NULL);
    ei_x_free(&c);
    write_frames("exit_tt_without_reason", f);
    by_utf8_name(f, "\xE6\x97\xA5\xE6\x9C\xAC", 6);
    write_frames("names_utf8", f);
    by_utf8_name(f, "counter\0junk", 12);
    write_frames("names_with_nul", f);
    ei_x_new_with_version(&m);
    ei_x_encode_tuple_header(&m, 2);
    ei_x_encode_atom(&m, "$gen_cast");
    ei_x_encode_atom(&m, "increment");
    ei_x_append_buf(&m, "\1\2\3", 3);   /* bytes after the payload */
    reg_send(f, 9, "counter", &m);
    ei_x_free(&m);
    write_frames("trailing_bytes", f);
}

static void dist_seeds(void)
{
    fuzz_node fn;
    if (fn_setup(&fn) != 0)
        die("fn_setup");
    frames f;
    cn_buf_init(&f.b);
    dist_call_seeds(&f);
    dist_signal_seeds(&fn, &f);
    dist_altact_seeds(&fn, &f);
    dist_hostile_seeds(&fn, &f);
    cn_buf_free(&f.b);
    fn_teardown(&fn);
}

/* ---- state files ---- */

/* A state file as gs_state_save writes it, prefixed by the harness's flags byte 0. */
static void state_file(const char *name, const cn_buf *payload)
{
    cn_buf b;
    cn_buf_init(&b);
    cn_buf_put_u8(&b, 0);
    cn_buf_append(&b, "CNST", 4);
    cn_buf_put_u16(&b, 1);
    cn_buf_put_u16(&b, 1);
    cn_buf_put_u64(&b, payload->len);
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, b.data + 1, 16);
    XXH3_64bits_update(&st, payload->data, payload->len);
    cn_buf_put_u64(&b, XXH3_64bits_digest(&st));
    cn_buf_append(&b, payload->data, payload->len);
    write_seed("statefile", name, b.data, b.len);
    cn_buf_free(&b);
}

static void statefile_seeds(void)
{
    rl_table *t = rl_table_new(5, 60000);
    cn_buf img;
    cn_buf_init(&img);
    rl_save(t, 1000, 2000000, &img);
    state_file("empty_table", &img);
    uint32_t remaining;
    for (size_t k = 0; k < N_IDS; k++) {
        ei_x_buff x;
        ei_x_new(&x);
        ids[k].make(&x);
        for (size_t n = 0; n <= k % 3; n++)
            rl_check_n(t, x.buff, (size_t)x.index, 0, 500 + (int64_t)n, &remaining);
        ei_x_free(&x);
    }
    cn_buf_reset(&img);
    rl_save(t, 1000, 2000000, &img);
    state_file("all_kinds_of_ids", &img);
    cn_buf_free(&img);
    rl_table_free(t);
}

/* One journal record: length, CRC-32 of the length and the payload, the payload. */
static void journal_record(cn_buf *b, const char *payload, size_t n)
{
    unsigned char h[8];
    cn_set_u32(h, (uint32_t)n);
    uLong c = crc32(crc32(0L, Z_NULL, 0), h, 4);
    cn_set_u32(h + 4, (uint32_t)crc32_z(c, (const unsigned char *)payload, n));
    cn_buf_append(b, h, sizeof h);
    cn_buf_append(b, payload, n);
}

static void journal_seeds(void)
{
    cn_buf b;
    cn_buf_init(&b);
    write_seed("journal", "empty", "\0", 1);
    cn_buf_put_u8(&b, 0);
    journal_record(&b, "+", 1);
    write_seed("journal", "one_record", b.data, b.len);
    journal_record(&b, "\xff", 1);
    char set[17] = {'S'};
    journal_record(&b, set, sizeof set);
    cn_buf_append(&b, "\0\0\0\x09\x01", 5);
    write_seed("journal", "records_and_a_torn_tail", b.data, b.len);
    cn_buf_reset(&b);
    cn_buf_append(&b, "\x01\0\0\0\x03\0\0\0\0abc\0\0\0\0\0\0\0\0", 20);
    write_seed("journal", "bad_crc_fixed_by_the_harness", b.data, b.len);
    cn_buf_free(&b);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_corpus DIR\n");
        return 2;
    }
    root = argv[1];
    if (mkdir(root, 0755) != 0 && errno != EEXIST)
        die(root);
    handshake_seeds();
    term_seeds();
    dist_seeds();
    statefile_seeds();
    journal_seeds();
    return 0;
}

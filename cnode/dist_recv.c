/*
 * The receive path of the distribution protocol: a frame's control tuple
 * decoded and dispatched to the processes it concerns.
 *
 * A frame is 'p', a control tuple and, for the operations that carry one, a
 * message or an exit reason (the payload). Nothing in a frame is trusted:
 *
 * - the control tuple is walked with bounds checks first (cnode/term.c), and
 *   every decoder after that is bounded by the end of the tuple: pids and
 *   references by term.c's decoders, which check each length against it;
 *   other elements are walked again to find their own end, decoded within
 *   it, and the decoder must have used exactly its bytes;
 * - every operation has one layout (below): its arity, exactly, as the BEAM
 *   checks it, what each element is, and whether a payload follows;
 * - the frame ends exactly where the control tuple ends, or, for an operation
 *   with a payload, where its one payload term ends.
 *
 * Anything else is a malformed frame, and the connection goes, as the BEAM
 * drops a connection that sends it invalid data. So does an operation we have
 * no layout for: erts_net_message() in erts' dist.c answers an unknown
 * operation with "Invalid distribution message" in the log and kills the
 * connection (its switch's default case), and a peer only sends an operation
 * its flags say we understand. Atoms are read as UTF-8 with
 * their length (cn_term_decode_atom): every legal atom is a name we can look up,
 * and a name that is no registered name (one holding a NUL byte included) is
 * simply not found, as on the BEAM. Only what routing needs is decoded: the
 * pids, the names, the reference. What a handler must answer (a DOWN noproc,
 * an exit noproc, an unlink ack) goes out through dist_send.c.
 */
#include <string.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "cnode/node_int.h"
#include "cnode/protocol.h"
#include "cnode/term.h"

typedef struct ctl {
    long op;
    int arity;
    erlang_pid from;
    erlang_pid to;
    int to_is_name;
    char to_name[MAXATOMLEN_UTF8];  /* UTF-8, may hold NUL bytes: to_name_len counts */
    size_t to_name_len;
    erlang_ref ref;
    unsigned long long id;
    unsigned altact;                /* ALTACT_SIG_SEND's flags (CN_ALTACT_*), low byte */
    const char *payload;            /* message or reason: a term with its version byte */
    size_t payload_len;
    const char *ctl_reason;         /* a reason inside the control tuple (no version byte) */
    size_t ctl_reason_len;
    const char *who;                /* MONITOR_P_EXIT's FromProc, a pid or a name, kept in place */
    size_t who_len;
    int unknown;                    /* op has no layout: an invalid message */
} ctl;

/* What an element of a control tuple after the operation is, and where it goes. */
enum field {
    F_ANY = 1,  /* any term, walked and not used: Unused, a trace token, what we ignore */
    F_FROM,     /* a pid: m->from */
    F_TO,       /* a pid: m->to */
    F_NAME,     /* an atom: m->to_name */
    F_PROC,     /* a pid or an atom: m->to or m->to_name (MONITOR_P's ToProc) */
    F_REF,      /* a reference: m->ref */
    F_ID,       /* a non-negative integer of up to 64 bits: m->id */
    F_REASON,   /* any term, kept in place: m->ctl_reason */
    F_WHO       /* any term, kept in place: m->who */
};

/*
 * The layout of each operation (erts "Distribution Protocol", and the arity
 * checks of erts_net_message): the tuple's arity with the operation, whether a
 * payload term follows, and the elements after the operation. Operations we
 * ignore have their shape checked and their elements walked, nothing more.
 * An operation without a layout here is unknown: the connection goes (see the top).
 */
typedef struct layout {
    unsigned char arity;
    unsigned char payload;
    unsigned char fields[6];
} layout;

static const layout layouts[] = {
    [DOP_LINK] = {3, 0, {F_FROM, F_TO}},
    [DOP_SEND] = {3, 1, {F_ANY, F_TO}},
    [DOP_EXIT] = {4, 0, {F_FROM, F_TO, F_REASON}},
    [DOP_UNLINK] = {3, 0, {F_FROM, F_TO}},
    [DOP_REG_SEND] = {4, 1, {F_FROM, F_ANY, F_NAME}},
    [DOP_GROUP_LEADER] = {3, 0, {F_FROM, F_TO}},
    [DOP_EXIT2] = {4, 0, {F_FROM, F_TO, F_REASON}},
    [DOP_SEND_TT] = {4, 1, {F_ANY, F_TO, F_ANY}},
    [DOP_EXIT_TT] = {5, 0, {F_FROM, F_TO, F_ANY, F_REASON}},
    [DOP_REG_SEND_TT] = {5, 1, {F_FROM, F_ANY, F_NAME, F_ANY}},
    [DOP_EXIT2_TT] = {5, 0, {F_FROM, F_TO, F_ANY, F_REASON}},
    [DOP_MONITOR_P] = {4, 0, {F_FROM, F_PROC, F_REF}},
    [DOP_DEMONITOR_P] = {4, 0, {F_FROM, F_PROC, F_REF}},
    [DOP_MONITOR_P_EXIT] = {5, 0, {F_WHO, F_TO, F_REF, F_REASON}},
    [DOP_SEND_SENDER] = {3, 1, {F_FROM, F_TO}},
    [DOP_SEND_SENDER_TT] = {4, 1, {F_FROM, F_TO, F_ANY}},
    [DOP_PAYLOAD_EXIT] = {3, 1, {F_FROM, F_TO}},
    [DOP_PAYLOAD_EXIT_TT] = {4, 1, {F_FROM, F_TO, F_ANY}},
    [DOP_PAYLOAD_EXIT2] = {3, 1, {F_FROM, F_TO}},
    [DOP_PAYLOAD_EXIT2_TT] = {4, 1, {F_FROM, F_TO, F_ANY}},
    [DOP_PAYLOAD_MONITOR_P_EXIT] = {4, 1, {F_WHO, F_TO, F_REF}},
    [DOP_SPAWN_REQUEST] = {6, 1, {F_ANY, F_ANY, F_ANY, F_ANY, F_ANY}},
    [DOP_SPAWN_REQUEST_TT] = {7, 1, {F_ANY, F_ANY, F_ANY, F_ANY, F_ANY, F_ANY}},
    [DOP_SPAWN_REPLY] = {5, 0, {F_ANY, F_ANY, F_ANY, F_ANY}},
    [DOP_SPAWN_REPLY_TT] = {6, 0, {F_ANY, F_ANY, F_ANY, F_ANY, F_ANY}},
    [DOP_ALIAS_SEND] = {3, 1, {F_FROM, F_REF}},
    [DOP_ALIAS_SEND_TT] = {4, 1, {F_FROM, F_REF, F_ANY}},
    [DOP_UNLINK_ID] = {4, 0, {F_ID, F_FROM, F_TO}},
    [DOP_UNLINK_ID_ACK] = {4, 0, {F_ID, F_FROM, F_TO}},
};

static const layout *layout_of(long op)
{
    if (op < 0 || op >= (long)(sizeof layouts / sizeof layouts[0]) || layouts[op].arity == 0)
        return NULL;
    return &layouts[op];
}

/* ---- Bounded decoders: each reads one element of the control tuple, within end ---- */

/* The element at *idx, walked within end: *e is where it ends. */
static int element(const char *f, size_t end, int idx, size_t *e)
{
    *e = (size_t)idx;
    return cn_term_skip(f, end, e);
}

/*
 * A pid or reference's node names a node only if it holds no NUL byte: the
 * name becomes a C string, and a truncated one could name this node or another.
 */
static int node_ok(const char *node, size_t n)
{
    return memchr(node, '\0', n) == NULL;
}

/*
 * Pids and references are decoded by term.c's bounded decoders, which check
 * every length against the tuple's end themselves and stop exactly where the
 * term does, with what ei would decode (test_term compares them).
 */
static int dec_pid(const char *f, size_t end, int *idx, erlang_pid *p)
{
    size_t i = (size_t)*idx, n;
    if (cn_term_decode_pid(f, end, &i, p, &n) < 0 || !node_ok(p->node, n))
        return -1;
    *idx = (int)i;
    return 0;
}

static int dec_ref(const char *f, size_t end, int *idx, erlang_ref *r)
{
    size_t i = (size_t)*idx, n;
    if (cn_term_decode_ref(f, end, &i, r, &n) < 0 || !node_ok(r->node, n))
        return -1;
    *idx = (int)i;
    return 0;
}

/*
 * ei's decoders, each held to one element: it must start there, succeed and
 * stop exactly at the element's end e (so it read nothing outside the element).
 */
#define EXACT(decode, f, i, out, e) ((decode)((f), &(i), (out)) == 0 && (size_t)(i) == (e))

static int dec_long(const char *f, size_t end, int *idx, long *v)
{
    size_t e;
    int i = *idx;
    if (element(f, end, i, &e) < 0 || !EXACT(ei_decode_long, f, i, v, e))
        return -1;
    *idx = i;
    return 0;
}

static int dec_id(const char *f, size_t end, int *idx, unsigned long long *v)
{
    size_t e;
    int i = *idx;
    if (element(f, end, i, &e) < 0 || !EXACT(ei_decode_ulonglong, f, i, v, e))
        return -1;
    *idx = i;
    return 0;
}

static int dec_name(const char *f, size_t end, int *idx, ctl *m)
{
    size_t i = (size_t)*idx;
    if (cn_term_decode_atom(f, end, &i, m->to_name, &m->to_name_len) < 0)
        return -1;
    m->to_is_name = 1;
    *idx = (int)i;
    return 0;
}

/* A pid or a registered name (MONITOR_P's ToProc). */
static int dec_proc(const char *f, size_t end, int *idx, ctl *m)
{
    if ((size_t)*idx >= end)
        return -1;
    unsigned char tag = (unsigned char)f[*idx];
    if (tag == ERL_ATOM_EXT || tag == ERL_SMALL_ATOM_EXT || tag == ERL_ATOM_UTF8_EXT ||
        tag == ERL_SMALL_ATOM_UTF8_EXT)
        return dec_name(f, end, idx, m);
    return dec_pid(f, end, idx, &m->to);
}

/* Any term, walked; a reason is kept where it is. */
static int dec_any(const char *f, size_t end, int *idx, const char **at, size_t *len)
{
    size_t e;
    if (element(f, end, *idx, &e) < 0)
        return -1;
    if (at != NULL) {
        *at = f + *idx;
        *len = e - (size_t)*idx;
    }
    *idx = (int)e;
    return 0;
}

static int dec_field(int kind, const char *f, size_t end, int *idx, ctl *m)
{
    switch (kind) {
    case F_ANY: return dec_any(f, end, idx, NULL, NULL);
    case F_FROM: return dec_pid(f, end, idx, &m->from);
    case F_TO: return dec_pid(f, end, idx, &m->to);
    case F_NAME: return dec_name(f, end, idx, m);
    case F_PROC: return dec_proc(f, end, idx, m);
    case F_REF: return dec_ref(f, end, idx, &m->ref);
    case F_ID: return dec_id(f, end, idx, &m->id);
    case F_REASON: return dec_any(f, end, idx, &m->ctl_reason, &m->ctl_reason_len);
    case F_WHO: return dec_any(f, end, idx, &m->who, &m->who_len);
    default: return -1;
    }
}

/* The elements after the operation, as l says, ending exactly at the tuple's end. */
static int decode_fields(const layout *l, const char *f, size_t ctl_end, int idx, ctl *m)
{
    if (m->arity != l->arity)
        return -1;
    for (int k = 0; k < l->arity - 1; k++)
        if (dec_field(l->fields[k], f, ctl_end, &idx, m) < 0)
            return -1;
    return (size_t)idx == ctl_end ? 0 : -1;
}

/*
 * ALTACT_SIG_SEND's Flags: any non-negative integer, of which only the least
 * significant byte means anything, as erts_net_message() in erts' dist.c reads
 * it (a small, or the first digit byte of a bignum of any size; a negative one
 * or anything else is an invalid message). Held to its element, as every field.
 */
static int dec_altact_flags(const char *f, size_t end, int *idx, unsigned *flags)
{
    size_t e;
    int i = *idx;
    if (element(f, end, i, &e) < 0)
        return -1;
    unsigned char tag = (unsigned char)f[i];
    if (tag == ERL_SMALL_INTEGER_EXT || tag == ERL_INTEGER_EXT) {
        long v;
        if (!EXACT(ei_decode_long, f, i, &v, e) || v < 0)
            return -1;
        *flags = (unsigned)(v & 0xff);
    } else if (tag == ERL_SMALL_BIG_EXT || tag == ERL_LARGE_BIG_EXT) {
        size_t sign_at = (size_t)i + (tag == ERL_SMALL_BIG_EXT ? 2 : 5); /* tag, digit count */
        if (sign_at >= e || f[sign_at] != 0)
            return -1;
        *flags = sign_at + 1 < e ? (unsigned char)f[sign_at + 1] : 0;
    } else {
        return -1;
    }
    *idx = (int)e;
    return 0;
}

/*
 * ALTACT_SIG_SEND {37, Flags, FromPid, To} or {37, Flags, FromPid, To, Token}
 * (OTP 28+), checked as erts_net_message() checks it: To is a reference with
 * CN_ALTACT_ALIAS (and then not CN_ALTACT_NAME), an atom with CN_ALTACT_NAME,
 * else a pid; CN_ALTACT_TOKEN needs a fifth element. Its arity is the one
 * operation's that is not exact: erts only checks that the tuple is large
 * enough ("might be extended with more elements in the future"), so elements
 * past the ones the flags ask for are walked within the tuple, not refused:
 * refusing them would cut off a later OTP. A payload always follows.
 */
static int decode_altact(const char *f, size_t ctl_end, int idx, ctl *m)
{
    if (m->arity < 4 || dec_altact_flags(f, ctl_end, &idx, &m->altact) < 0 ||
        dec_pid(f, ctl_end, &idx, &m->from) < 0)
        return -1;
    unsigned fl = m->altact;
    int rc;
    if (fl & CN_ALTACT_ALIAS)
        rc = (fl & CN_ALTACT_NAME) ? -1 : dec_ref(f, ctl_end, &idx, &m->ref);
    else if (fl & CN_ALTACT_NAME)
        rc = dec_name(f, ctl_end, &idx, m);
    else
        rc = dec_pid(f, ctl_end, &idx, &m->to);
    if (rc < 0 || ((fl & CN_ALTACT_TOKEN) && m->arity < 5))
        return -1;
    for (int k = 4; k < m->arity; k++)      /* the token, and what a later OTP adds */
        if (dec_any(f, ctl_end, &idx, NULL, NULL) < 0)
            return -1;
    return (size_t)idx == ctl_end ? 0 : -1;
}

/* ---- Handlers ---- */

/* The reason of an exit signal as a standalone term with its version byte. */
static const char *exit_reason(cn_node *node, const ctl *m, size_t *len)
{
    if (m->payload) {
        *len = m->payload_len;
        return m->payload;
    }
    cn_buf_reset(&node->scratch);
    cn_buf_put_u8(&node->scratch, CN_VERSION_MAGIC);
    cn_buf_append(&node->scratch, m->ctl_reason, m->ctl_reason_len);
    *len = node->scratch.len;
    return node->scratch.data;
}

static cn_proc *local_target(cn_conn *c, const ctl *m)
{
    if (m->to_is_name)
        return cn__proc_whereis_n(c->node, m->to_name, m->to_name_len);
    return cn__proc_by_pid(c->node, &m->to);
}

/* The sender of a link or exit signal, as the far end of a link through c. */
static cn_peer_pid sender(cn_conn *c, const ctl *m)
{
    return (cn_peer_pid){c, m->from.num, m->from.serial, m->from.creation};
}

static void handle_send(cn_conn *c, const ctl *m)
{
    cn_proc *p = local_target(c, m);
    if (p == NULL) {
        char peer[CN_LOG_ESC_MAX], name[CN_LOG_ESC_MAX];
        if (m->to_is_name)
            CN_DEBUG("dist", "message from %s to unregistered name %s dropped",
                     cn_log_escape_str(peer, sizeof peer, c->peer_name),
                     cn_log_escape(name, sizeof name, m->to_name, m->to_name_len));
        return;
    }
    c->node->stats.messages_in++;
    cn__proc_deliver(p, m->payload, m->payload_len);
}

static void handle_alias_send(cn_conn *c, const ctl *m)
{
    /* A reply to a call of ours (cnode/alias.c), or a stale one: dropped, as the BEAM drops it. */
    if (cn__alias_deliver(c->node, &m->ref, m->payload, m->payload_len) == 0)
        return;
    char peer[CN_LOG_ESC_MAX];
    CN_DEBUG("dist", "alias message from %s dropped: no such alias",
             cn_log_escape_str(peer, sizeof peer, c->peer_name));
}

/*
 * ALTACT_SIG_SEND: a message, or with CN_ALTACT_EXIT an exit signal (exit/2's
 * kind, never a link's), to an alias, a registered name or a pid; the payload is
 * the message or the reason. CN_ALTACT_PRIO asks for the receiver's priority
 * queue, which only a process that activated priority messages has (EEP 76);
 * ours never do, so, as in the BEAM, the signal is handled as an ordinary one.
 */
static void handle_altact(cn_conn *c, const ctl *m)
{
    char peer[CN_LOG_ESC_MAX];
    CN_DEBUG("dist", "ALTACT_SIG_SEND from %s, flags 0x%02x",
             cn_log_escape_str(peer, sizeof peer, c->peer_name), m->altact);
    if (m->altact & CN_ALTACT_ALIAS) {
        handle_alias_send(c, m);
        return;
    }
    if (!(m->altact & CN_ALTACT_EXIT)) {
        handle_send(c, m);
        return;
    }
    cn_proc *p = local_target(c, m);
    if (p == NULL) {
        CN_DEBUG("dist", "exit signal from %s to a process not here dropped",
                 cn_log_escape_str(peer, sizeof peer, c->peer_name));
        return;
    }
    cn__proc_exit_signal(p, &m->from, m->payload, m->payload_len, 0);
}

static void handle_monitor(cn_conn *c, const ctl *m)
{
    cn_proc *p = local_target(c, m);
    if (p == NULL || !cn_proc_alive(p)) {
        /* Unknown name or dead pid: the watcher gets DOWN noproc at once, echoing what it sent. */
        char reason[16];
        size_t rlen = cn_term_atom(reason, "noproc");
        cn__dist_monitor_p_exit(c, m->to_is_name ? m->to_name : NULL, m->to_name_len, &m->to, &m->from,
                                &m->ref, reason, rlen);
        return;
    }
    cn__monitor_add(p, c, c->monitors, &m->from, &m->ref, m->to_is_name);
}

static void handle_demonitor(cn_conn *c, const ctl *m)
{
    cn__monitor_remove(c->node, c, &m->ref);
}

static void handle_link(cn_conn *c, const ctl *m)
{
    cn_proc *p = cn__proc_by_pid(c->node, &m->to);
    cn_peer_pid other = sender(c, m);
    if (p == NULL || !cn_proc_alive(p)) {
        /* Linking to a dead process: the linker gets an exit signal noproc. */
        char rb[16];
        size_t rl = cn_term_atom(rb, "noproc");
        cn__dist_exit(c, DOP_EXIT, &m->to, &other, rb, rl);
        return;
    }
    cn__link_add(p, &other, &c->links);
}

/* UNLINK and UNLINK_ID; the latter is acknowledged whether or not the link existed. */
static void handle_unlink(cn_conn *c, const ctl *m)
{
    cn_proc *p = cn__proc_by_pid(c->node, &m->to);
    cn_peer_pid other = sender(c, m);
    if (p != NULL)
        cn__link_remove(p, &other);
    if (m->op == DOP_UNLINK_ID)
        cn__dist_unlink_id(c, DOP_UNLINK_ID_ACK, m->id, &m->to, &other);
}

/* EXIT (a linked process died) and EXIT2 (exit/2), each in its four forms. */
static void handle_exit(cn_conn *c, const ctl *m)
{
    int from_link = m->op == DOP_EXIT || m->op == DOP_EXIT_TT || m->op == DOP_PAYLOAD_EXIT ||
                    m->op == DOP_PAYLOAD_EXIT_TT;
    cn_proc *p = cn__proc_by_pid(c->node, &m->to);
    if (p == NULL)
        return;
    if (from_link) {
        cn_peer_pid other = sender(c, m);
        /* An exit from a process we are not linked to (any more) is ignored. */
        if (cn__link_remove(p, &other) < 0)
            return;
    }
    size_t rlen;
    const char *reason = exit_reason(c->node, m, &rlen);
    cn__proc_exit_signal(p, &m->from, reason, rlen, from_link);
    /* The room a huge reason took is not kept. */
    cn_buf_reset(&c->node->scratch);
    cn_buf_shrink(&c->node->scratch, CN_BUF_KEEP);
}

/*
 * A monitor of ours (cnode/alias.c) reports its process gone: the watcher gets
 * {'DOWN', Ref, process, Who, Reason}, Who being {Name, Node} for a monitor by
 * name, as erlang:monitor delivers it. Nothing for a monitor we do not hold.
 */
static void handle_monitor_exit(cn_conn *c, const ctl *m)
{
    size_t rlen;
    const char *reason = exit_reason(c->node, m, &rlen);
    ei_x_buff x;
    cn__alias_down_head(&x, &m->ref);
    unsigned char tag = (unsigned char)m->who[0];
    int by_name = tag != ERL_NEW_PID_EXT && tag != ERL_PID_EXT;
    if (by_name)
        ei_x_encode_tuple_header(&x, 2);
    ei_x_append_buf(&x, m->who, (int)m->who_len);
    if (by_name)
        ei_x_encode_atom_as(&x, c->peer_name, ERLANG_UTF8, ERLANG_UTF8);
    ei_x_append_buf(&x, reason + 1, (int)rlen - 1);
    if (cn__alias_down(c->node, &m->ref, x.buff, (size_t)x.index) < 0)
        CN_DEBUG("dist", "DOWN of a monitor not held here dropped");
    ei_x_free(&x);
}

/* Operations that need nothing from us: acks, and group leaders (we lead none). */
static void ignore(cn_conn *c, const ctl *m)
{
    (void)c;
    (void)m;
}

/* Spawning is not offered (no DFLAG_SPAWN): a request for it is logged and not answered. */
static void handle_unknown(cn_conn *c, const ctl *m)
{
    char peer[CN_LOG_ESC_MAX];
    CN_WARN("dist", "unsupported control message %ld from %s ignored", m->op,
            cn_log_escape_str(peer, sizeof peer, c->peer_name));
}

static void dispatch(cn_conn *c, const ctl *m)
{
    switch (m->op) {
    case DOP_SEND: case DOP_SEND_TT: case DOP_SEND_SENDER: case DOP_SEND_SENDER_TT:
    case DOP_REG_SEND: case DOP_REG_SEND_TT:
        handle_send(c, m);
        return;
    case DOP_ALIAS_SEND: case DOP_ALIAS_SEND_TT:
        handle_alias_send(c, m);
        return;
    case DOP_ALTACT_SIG_SEND:
        handle_altact(c, m);
        return;
    case DOP_MONITOR_P:
        handle_monitor(c, m);
        return;
    case DOP_DEMONITOR_P:
        handle_demonitor(c, m);
        return;
    case DOP_LINK:
        handle_link(c, m);
        return;
    case DOP_UNLINK: case DOP_UNLINK_ID:
        handle_unlink(c, m);
        return;
    case DOP_EXIT: case DOP_EXIT_TT: case DOP_PAYLOAD_EXIT: case DOP_PAYLOAD_EXIT_TT:
    case DOP_EXIT2: case DOP_EXIT2_TT: case DOP_PAYLOAD_EXIT2: case DOP_PAYLOAD_EXIT2_TT:
        handle_exit(c, m);
        return;
    case DOP_MONITOR_P_EXIT: case DOP_PAYLOAD_MONITOR_P_EXIT:
        handle_monitor_exit(c, m);
        return;
    case DOP_UNLINK_ID_ACK: case DOP_GROUP_LEADER:
        ignore(c, m);
        return;
    default:
        handle_unknown(c, m);
        return;
    }
}

/* ---- The frame ---- */

/*
 * After the control tuple (ending at ctl_end): the payload when the operation
 * has one (layout l), and then nothing: a frame ends where its last term ends.
 */
static int decode_payload(const layout *l, const char *f, size_t len, size_t ctl_end, ctl *m)
{
    if (ctl_end == len)
        return !l->payload ? 0 : -1;
    if (!l->payload)
        return -1;
    size_t pend = ctl_end;
    if (cn_term_skip_versioned(f, len, &pend) < 0 || pend != len)
        return -1;
    m->payload = f + ctl_end;
    m->payload_len = len - ctl_end;
    return 0;
}

/* The whole frame into m: 0, or -1 for a malformed one. */
static int decode_frame(const char *f, size_t len, ctl *m)
{
    if (len < 2 || (unsigned char)f[0] != CN_PASS_THROUGH)
        return -1;
    size_t ctl_end = 1;
    if (cn_term_skip_versioned(f, len, &ctl_end) < 0)
        return -1;
    /* Within the walked tuple: its header, then the operation, an integer. */
    int idx = 2;
    if (ei_decode_tuple_header(f, &idx, &m->arity) < 0 || m->arity < 1 || (size_t)idx > ctl_end ||
        dec_long(f, ctl_end, &idx, &m->op) < 0)
        return -1;
    if (m->op == DOP_ALTACT_SIG_SEND) {
        static const layout with_payload = {0, 1, {0}};
        if (decode_altact(f, ctl_end, idx, m) < 0)
            return -1;
        return decode_payload(&with_payload, f, len, ctl_end, m);
    }
    const layout *l = layout_of(m->op);
    if (l == NULL) {
        m->unknown = 1;
        return -1;
    }
    if (decode_fields(l, f, ctl_end, idx, m) < 0)
        return -1;
    return decode_payload(l, f, len, ctl_end, m);
}

int cn__dist_recv_frame(cn_conn *c, const char *f, size_t len)
{
    /* Only what the decoders may leave unset: the struct is large and this is the hot path. */
    ctl m;
    m.to_is_name = 0;
    m.to_name_len = 0;
    m.payload = NULL;
    m.payload_len = 0;
    m.ctl_reason = NULL;
    m.ctl_reason_len = 0;
    m.unknown = 0;
    if (decode_frame(f, len, &m) < 0) {
        if (m.unknown) {
            char peer[CN_LOG_ESC_MAX];
            CN_ERROR("dist", "invalid distribution message from %s: unknown control operation %ld",
                     cn_log_escape_str(peer, sizeof peer, c->peer_name), m.op);
        }
        return CN_EDECODE;
    }
    c->node->delivering_from = c->peer_name; /* cn_proc_msg_origin, for what this frame delivers */
    dispatch(c, &m);
    c->node->delivering_from = NULL;
    return 0;
}

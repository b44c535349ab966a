/*
 * Control messages: the tuple at the head of every distribution frame.
 *
 * A frame is 'p', a control tuple and, for the operations that carry one, a
 * message or an exit reason. The whole frame is walked with bounds checks first
 * (cnode/term.c); after that, ei's decoders are safe on it. Routing decodes only
 * what it needs: the operation, the pids and names, the reference.
 */
#include <string.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/node_int.h"
#include "cnode/protocol.h"
#include "cnode/term.h"

/* Room for a control tuple: its header, an op and up to four pids, names or refs. */
#define CTL_RESERVE 4600

typedef struct ctl {
    long op;
    int arity;
    erlang_pid from;
    erlang_pid to;
    int to_is_name;
    char to_name[MAXATOMLEN_UTF8];
    erlang_ref ref;
    unsigned long long id;
    const char *payload;            /* message or reason: a term with its version byte */
    size_t payload_len;
    const char *ctl_reason;         /* a reason inside the control tuple (no version byte) */
    size_t ctl_reason_len;
} ctl;

/* Decodes a pid or a registered name (MONITOR_P's ToProc). */
static int decode_proc(const char *f, int *idx, ctl *m)
{
    int type, size;
    if (ei_get_type(f, idx, &type, &size) < 0)
        return -1;
    if (type == ERL_ATOM_EXT || type == ERL_SMALL_ATOM_EXT || type == ERL_ATOM_UTF8_EXT ||
        type == ERL_SMALL_ATOM_UTF8_EXT) {
        m->to_is_name = 1;
        return ei_decode_atom(f, idx, m->to_name);
    }
    m->to_is_name = 0;
    return ei_decode_pid(f, idx, &m->to);
}

/* The frame was walked with bounds checks already; this skip does not recurse. */
static int skip(const char *f, int *idx)
{
    return cn_term_skip_trusted(f, idx);
}

/* Parses the control tuple's fields for op. Returns 0 or -1. */
static int decode_fields(const char *f, int *idx, ctl *m)
{
    int a = m->arity;
    int start;
    switch (m->op) {
    case DOP_SEND:            /* {2, Unused, ToPid} */
    case DOP_SEND_TT:         /* {12, Unused, ToPid, Token} */
        return (a >= 3 && skip(f, idx) == 0 && ei_decode_pid(f, idx, &m->to) == 0) ? 0 : -1;
    case DOP_SEND_SENDER:     /* {22, FromPid, ToPid} */
    case DOP_SEND_SENDER_TT:
        return (a >= 3 && ei_decode_pid(f, idx, &m->from) == 0 && ei_decode_pid(f, idx, &m->to) == 0) ? 0 : -1;
    case DOP_REG_SEND:        /* {6, FromPid, Unused, ToName} */
    case DOP_REG_SEND_TT:
        m->to_is_name = 1;
        return (a >= 4 && ei_decode_pid(f, idx, &m->from) == 0 && skip(f, idx) == 0 &&
                ei_decode_atom(f, idx, m->to_name) == 0) ? 0 : -1;
    case DOP_ALIAS_SEND:      /* {33, FromPid, Alias} */
    case DOP_ALIAS_SEND_TT:
        return (a >= 3 && ei_decode_pid(f, idx, &m->from) == 0 && ei_decode_ref(f, idx, &m->ref) == 0) ? 0 : -1;
    case DOP_LINK:            /* {1, FromPid, ToPid} */
    case DOP_UNLINK:
    case DOP_PAYLOAD_EXIT:    /* {24, FromPid, ToPid} + Reason */
    case DOP_PAYLOAD_EXIT2:
    case DOP_PAYLOAD_EXIT_TT: /* {25, FromPid, ToPid, Token} + Reason */
    case DOP_PAYLOAD_EXIT2_TT:
    case DOP_GROUP_LEADER:
        return (a >= 3 && ei_decode_pid(f, idx, &m->from) == 0 && ei_decode_pid(f, idx, &m->to) == 0) ? 0 : -1;
    case DOP_EXIT:            /* {3, FromPid, ToPid, Reason} */
    case DOP_EXIT2:
    case DOP_EXIT_TT:         /* {13, FromPid, ToPid, Token, Reason} */
    case DOP_EXIT2_TT:
        if (a < 4 || ei_decode_pid(f, idx, &m->from) < 0 || ei_decode_pid(f, idx, &m->to) < 0)
            return -1;
        if ((m->op == DOP_EXIT_TT || m->op == DOP_EXIT2_TT) && skip(f, idx) < 0)
            return -1;
        start = *idx;
        if (skip(f, idx) < 0)
            return -1;
        m->ctl_reason = f + start;
        m->ctl_reason_len = (size_t)(*idx - start);
        return 0;
    case DOP_MONITOR_P:       /* {19, FromPid, ToProc, Ref} */
    case DOP_DEMONITOR_P:
        return (a >= 4 && ei_decode_pid(f, idx, &m->from) == 0 && decode_proc(f, idx, m) == 0 &&
                ei_decode_ref(f, idx, &m->ref) == 0) ? 0 : -1;
    case DOP_UNLINK_ID:       /* {35, Id, FromPid, ToPid} */
    case DOP_UNLINK_ID_ACK:
        return (a >= 4 && ei_decode_ulonglong(f, idx, &m->id) == 0 && ei_decode_pid(f, idx, &m->from) == 0 &&
                ei_decode_pid(f, idx, &m->to) == 0) ? 0 : -1;
    default:
        return 0;
    }
}

/* The reason of an exit signal as a standalone term with its version byte. */
static const char *exit_reason(cn_node *node, const ctl *m, size_t *len)
{
    static cn_buf scratch;
    (void)node;
    if (m->payload) {
        *len = m->payload_len;
        return m->payload;
    }
    cn_buf_reset(&scratch);
    if (cn_buf_put_u8(&scratch, CN_VERSION_MAGIC) < 0 ||
        cn_buf_append(&scratch, m->ctl_reason, m->ctl_reason_len) < 0) {
        *len = 0;
        return NULL;
    }
    *len = scratch.len;
    return scratch.data;
}

static void monitor_exit_noproc(cn_conn *c, const ctl *m);

static cn_proc *local_target(cn_conn *c, const ctl *m)
{
    if (m->to_is_name)
        return cn_proc_whereis(c->node, m->to_name);
    return cn__proc_by_pid(c->node, &m->to);
}

static void handle_monitor(cn_conn *c, const ctl *m)
{
    cn_proc *p = local_target(c, m);
    if (p == NULL || !cn_proc_alive(p)) {
        /* Unknown name or dead pid: the watcher gets DOWN noproc at once. */
        monitor_exit_noproc(c, m);
        return;
    }
    if (cn__monitor_add(p, c, &m->from, &m->ref, m->to_is_name) < 0)
        CN_ERROR("dist", "out of memory adding a monitor from %s", c->peer_name);
}

static void dispatch(cn_conn *c, const ctl *m)
{
    cn_node *node = c->node;
    cn_proc *p;
    size_t rlen;
    const char *reason;
    switch (m->op) {
    case DOP_SEND:
    case DOP_SEND_TT:
    case DOP_SEND_SENDER:
    case DOP_SEND_SENDER_TT:
    case DOP_REG_SEND:
    case DOP_REG_SEND_TT:
        if (m->payload == NULL)
            return;
        p = local_target(c, m);
        if (p == NULL) {
            if (m->to_is_name)
                CN_DEBUG("dist", "message from %s to unregistered name %s dropped", c->peer_name, m->to_name);
            return;
        }
        node->stats.messages_in++;
        cn__proc_deliver(p, m->payload, m->payload_len);
        return;
    case DOP_ALIAS_SEND:
    case DOP_ALIAS_SEND_TT:
        /* No process here creates aliases, so every alias message is stale. */
        CN_DEBUG("dist", "alias message from %s dropped: no such alias", c->peer_name);
        return;
    case DOP_MONITOR_P:
        handle_monitor(c, m);
        return;
    case DOP_DEMONITOR_P:
        cn__monitor_remove(node, c, &m->ref);
        return;
    case DOP_LINK: {
        p = cn__proc_by_pid(node, &m->to);
        cn_peer_pid other = {c, m->from.num, m->from.serial, m->from.creation};
        if (p == NULL || !cn_proc_alive(p)) {
            /* Linking to a dead process: the linker gets an exit signal noproc. */
            char rb[16];
            size_t rl = cn_term_atom(rb, "noproc");
            cn__dist_exit(c, DOP_EXIT, &m->to, &other, rb, rl);
            return;
        }
        cn__link_add(p, &other);
        return;
    }
    case DOP_UNLINK:
    case DOP_UNLINK_ID: {
        p = cn__proc_by_pid(node, &m->to);
        cn_peer_pid other = {c, m->from.num, m->from.serial, m->from.creation};
        if (p != NULL)
            cn__link_remove(p, &other);
        if (m->op == DOP_UNLINK_ID)
            cn__dist_unlink_id(c, DOP_UNLINK_ID_ACK, m->id, &m->to, &other);
        return;
    }
    case DOP_UNLINK_ID_ACK:
        return;
    case DOP_EXIT:
    case DOP_EXIT_TT:
    case DOP_PAYLOAD_EXIT:
    case DOP_PAYLOAD_EXIT_TT:
    case DOP_EXIT2:
    case DOP_EXIT2_TT:
    case DOP_PAYLOAD_EXIT2:
    case DOP_PAYLOAD_EXIT2_TT: {
        int from_link = m->op == DOP_EXIT || m->op == DOP_EXIT_TT || m->op == DOP_PAYLOAD_EXIT ||
                        m->op == DOP_PAYLOAD_EXIT_TT;
        p = cn__proc_by_pid(node, &m->to);
        if (p == NULL)
            return;
        if (from_link) {
            cn_peer_pid other = {c, m->from.num, m->from.serial, m->from.creation};
            /* An exit from a process we are not linked to (any more) is ignored. */
            if (cn__link_remove(p, &other) < 0)
                return;
        }
        reason = exit_reason(node, m, &rlen);
        if (reason != NULL)
            cn__proc_exit_signal(p, &m->from, reason, rlen, from_link);
        return;
    }
    case DOP_MONITOR_P_EXIT:
    case DOP_PAYLOAD_MONITOR_P_EXIT:
    case DOP_GROUP_LEADER:
        return;
    default:
        CN_WARN("dist", "unknown control message %ld from %s ignored", m->op, c->peer_name);
        return;
    }
}

static int has_payload(long op)
{
    switch (op) {
    case DOP_SEND: case DOP_SEND_TT: case DOP_SEND_SENDER: case DOP_SEND_SENDER_TT:
    case DOP_REG_SEND: case DOP_REG_SEND_TT: case DOP_ALIAS_SEND: case DOP_ALIAS_SEND_TT:
    case DOP_PAYLOAD_EXIT: case DOP_PAYLOAD_EXIT_TT: case DOP_PAYLOAD_EXIT2: case DOP_PAYLOAD_EXIT2_TT:
    case DOP_PAYLOAD_MONITOR_P_EXIT: case DOP_SPAWN_REQUEST: case DOP_SPAWN_REQUEST_TT:
        return 1;
    default:
        return 0;
    }
}

int cn__dist_handle_frame(cn_conn *c, const char *f, size_t len)
{
    if (len < 2 || (unsigned char)f[0] != CN_PASS_THROUGH)
        return CN_EDECODE;
    size_t end = 1;
    if (cn_term_skip_versioned(f, len, &end) < 0)
        return CN_EDECODE;
    ctl m;
    m.payload = NULL;
    m.payload_len = 0;
    m.ctl_reason = NULL;
    m.to_is_name = 0;
    int idx = 1, ver;
    if (ei_decode_version(f, &idx, &ver) < 0 || ei_decode_tuple_header(f, &idx, &m.arity) < 0 ||
        m.arity < 1 || ei_decode_long(f, &idx, &m.op) < 0)
        return CN_EDECODE;
    if (decode_fields(f, &idx, &m) < 0)
        return CN_EDECODE;
    if (has_payload(m.op)) {
        size_t pend = end;
        if (cn_term_skip_versioned(f, len, &pend) < 0)
            return CN_EDECODE;
        m.payload = f + end;
        m.payload_len = pend - end;
    }
    dispatch(c, &m);
    return 0;
}

/* ---- Encoding what we send ---- */

static int encode_peer_pid(cn_conn *c, char *b, int *i, const cn_peer_pid *pp)
{
    erlang_pid pid;
    cn__pid_of_peer(c->node, pp, &pid);
    return ei_encode_pid(b, i, &pid);
}

/* Finishes a frame: appends the optional payload, fixes the length. */
static int finish(cn_conn *c, size_t start, int idx, const char *payload, size_t plen)
{
    c->wbuf.len = (size_t)idx;
    if (payload != NULL)
        memcpy(c->wbuf.data + c->wbuf.len, payload, plen), c->wbuf.len += plen;
    cn__frame_end(c, start);
    return 0;
}

#define BEGIN(c, extra)                                                 \
    size_t start;                                                       \
    int rc_ = cn__frame_begin_at((c), CTL_RESERVE + (extra), &start);   \
    if (rc_ < 0)                                                        \
        return rc_;                                                     \
    char *b = (c)->wbuf.data;                                           \
    int i = (int)(c)->wbuf.len;                                         \
    ei_encode_version(b, &i)

int cn__dist_send(cn_conn *c, const erlang_pid *from, const erlang_pid *to, const char *msg, size_t len)
{
    BEGIN(c, len);
    if (c->peer_flags & DFLAG_SEND_SENDER) {
        ei_encode_tuple_header(b, &i, 3);
        ei_encode_long(b, &i, DOP_SEND_SENDER);
        ei_encode_pid(b, &i, from);
    } else {
        ei_encode_tuple_header(b, &i, 3);
        ei_encode_long(b, &i, DOP_SEND);
        ei_encode_atom(b, &i, "");
    }
    ei_encode_pid(b, &i, to);
    return finish(c, start, i, msg, len);
}

int cn__dist_reg_send(cn_conn *c, const erlang_pid *from, const char *name, const char *msg, size_t len)
{
    BEGIN(c, len);
    ei_encode_tuple_header(b, &i, 4);
    ei_encode_long(b, &i, DOP_REG_SEND);
    ei_encode_pid(b, &i, from);
    ei_encode_atom(b, &i, "");
    ei_encode_atom(b, &i, name);
    return finish(c, start, i, msg, len);
}

int cn__dist_alias_send(cn_conn *c, const erlang_pid *from, const erlang_ref *alias, const char *msg, size_t len)
{
    BEGIN(c, len);
    ei_encode_tuple_header(b, &i, 3);
    ei_encode_long(b, &i, DOP_ALIAS_SEND);
    ei_encode_pid(b, &i, from);
    ei_encode_ref(b, &i, alias);
    return finish(c, start, i, msg, len);
}

/*
 * MONITOR_P_EXIT {21, FromProc, ToPid, Ref, Reason}, or its payload form when the
 * peer has EXIT_PAYLOAD. FromProc is the name when the monitor was by name.
 */
static int monitor_exit(cn_conn *c, const char *name, const erlang_pid *target_pid, const erlang_pid *watcher,
                        const erlang_ref *ref, const char *reason, size_t rlen)
{
    int payload = (c->peer_flags & DFLAG_EXIT_PAYLOAD) != 0;
    BEGIN(c, rlen);
    ei_encode_tuple_header(b, &i, payload ? 4 : 5);
    ei_encode_long(b, &i, payload ? DOP_PAYLOAD_MONITOR_P_EXIT : DOP_MONITOR_P_EXIT);
    if (name != NULL)
        ei_encode_atom(b, &i, name);
    else
        ei_encode_pid(b, &i, target_pid);
    ei_encode_pid(b, &i, watcher);
    ei_encode_ref(b, &i, ref);
    if (payload)
        return finish(c, start, i, reason, rlen);
    /* Inline reason: the term without its version byte. */
    return finish(c, start, i, reason + 1, rlen - 1);
}

int cn__dist_monitor_exit(cn_conn *c, const cn_proc *target, const cn_monitor *m, const char *reason, size_t len)
{
    erlang_pid tpid, watcher;
    cn_proc_pid(target, &tpid);
    cn__pid_of_peer(c->node, &m->watcher, &watcher);
    erlang_ref ref;
    memset(&ref, 0, sizeof ref);
    snprintf(ref.node, sizeof ref.node, "%s", c->peer_name);
    ref.len = (int)m->key.len;
    memcpy(ref.n, m->key.n, sizeof ref.n);
    ref.creation = m->ref_creation;
    return monitor_exit(c, m->by_name ? target->name : NULL, &tpid, &watcher, &ref, reason, len);
}

/* DOWN noproc for a monitor that never existed: echo what the watcher sent. */
static void monitor_exit_noproc(cn_conn *c, const ctl *m)
{
    char reason[16];
    size_t rlen = cn_term_atom(reason, "noproc");
    monitor_exit(c, m->to_is_name ? m->to_name : NULL, &m->to, &m->from, &m->ref, reason, rlen);
}

int cn__dist_exit(cn_conn *c, int op_plain, const erlang_pid *from, const cn_peer_pid *to, const char *reason,
                  size_t len)
{
    int payload = (c->peer_flags & DFLAG_EXIT_PAYLOAD) != 0;
    long op = op_plain;
    if (payload)
        op = op_plain == DOP_EXIT ? DOP_PAYLOAD_EXIT : DOP_PAYLOAD_EXIT2;
    BEGIN(c, len);
    ei_encode_tuple_header(b, &i, payload ? 3 : 4);
    ei_encode_long(b, &i, op);
    ei_encode_pid(b, &i, from);
    encode_peer_pid(c, b, &i, to);
    if (payload)
        return finish(c, start, i, reason, len);
    return finish(c, start, i, reason + 1, len - 1);
}

int cn__dist_link(cn_conn *c, const erlang_pid *from, const cn_peer_pid *to)
{
    BEGIN(c, 0);
    ei_encode_tuple_header(b, &i, 3);
    ei_encode_long(b, &i, DOP_LINK);
    ei_encode_pid(b, &i, from);
    encode_peer_pid(c, b, &i, to);
    return finish(c, start, i, NULL, 0);
}

int cn__dist_unlink_id(cn_conn *c, int op, uint64_t id, const erlang_pid *from, const cn_peer_pid *to)
{
    BEGIN(c, 0);
    ei_encode_tuple_header(b, &i, 4);
    ei_encode_long(b, &i, op);
    ei_encode_ulonglong(b, &i, id);
    ei_encode_pid(b, &i, from);
    encode_peer_pid(c, b, &i, to);
    return finish(c, start, i, NULL, 0);
}

/*
 * The receive path of the distribution protocol: a frame's control tuple
 * decoded and dispatched to the processes it concerns.
 *
 * A frame is 'p', a control tuple and, for the operations that carry one, a
 * message or an exit reason. The whole frame is walked with bounds checks first
 * (cnode/term.c); after that, ei's decoders are safe on it. Only what routing
 * needs is decoded: the operation, the pids and names, the reference. Every
 * operation has one handler below; what a handler must answer (a DOWN noproc,
 * an exit noproc, an unlink ack) goes out through dist_send.c.
 */
#include <string.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/node_int.h"
#include "cnode/protocol.h"
#include "cnode/term.h"

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

/* {3, FromPid, ToPid, Reason} or {13, FromPid, ToPid, Token, Reason}: the reason stays in place. */
static int decode_exit(const char *f, int *idx, ctl *m)
{
    if (m->arity < 4 || ei_decode_pid(f, idx, &m->from) < 0 || ei_decode_pid(f, idx, &m->to) < 0)
        return -1;
    if ((m->op == DOP_EXIT_TT || m->op == DOP_EXIT2_TT) && skip(f, idx) < 0)
        return -1;
    int start = *idx;
    if (skip(f, idx) < 0)
        return -1;
    m->ctl_reason = f + start;
    m->ctl_reason_len = (size_t)(*idx - start);
    return 0;
}

/* Parses the control tuple's fields for op. Returns 0 or -1. */
static int decode_fields(const char *f, int *idx, ctl *m)
{
    int a = m->arity;
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
        return decode_exit(f, idx, m);
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
        return cn_proc_whereis(c->node, m->to_name);
    return cn__proc_by_pid(c->node, &m->to);
}

/* The sender of a link or exit signal, as the far end of a link through c. */
static cn_peer_pid sender(cn_conn *c, const ctl *m)
{
    return (cn_peer_pid){c, m->from.num, m->from.serial, m->from.creation};
}

static void handle_send(cn_conn *c, const ctl *m)
{
    if (m->payload == NULL)
        return;
    cn_proc *p = local_target(c, m);
    if (p == NULL) {
        if (m->to_is_name)
            CN_DEBUG("dist", "message from %s to unregistered name %s dropped", c->peer_name, m->to_name);
        return;
    }
    c->node->stats.messages_in++;
    cn__proc_deliver(p, m->payload, m->payload_len);
}

static void handle_alias_send(cn_conn *c, const ctl *m)
{
    (void)m;
    /* No process here creates aliases, so every alias message is stale. */
    CN_DEBUG("dist", "alias message from %s dropped: no such alias", c->peer_name);
}

static void handle_monitor(cn_conn *c, const ctl *m)
{
    cn_proc *p = local_target(c, m);
    if (p == NULL || !cn_proc_alive(p)) {
        /* Unknown name or dead pid: the watcher gets DOWN noproc at once, echoing what it sent. */
        char reason[16];
        size_t rlen = cn_term_atom(reason, "noproc");
        cn__dist_monitor_p_exit(c, m->to_is_name ? m->to_name : NULL, &m->to, &m->from, &m->ref, reason, rlen);
        return;
    }
    cn__monitor_add(p, c, &c->monitors, &m->from, &m->ref, m->to_is_name);
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

/* Operations that need nothing from us: acks, and signals to processes we never monitor or lead. */
static void ignore(cn_conn *c, const ctl *m)
{
    (void)c;
    (void)m;
}

static void handle_unknown(cn_conn *c, const ctl *m)
{
    CN_WARN("dist", "unknown control message %ld from %s ignored", m->op, c->peer_name);
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
    case DOP_UNLINK_ID_ACK: case DOP_MONITOR_P_EXIT: case DOP_PAYLOAD_MONITOR_P_EXIT:
    case DOP_GROUP_LEADER:
        ignore(c, m);
        return;
    default:
        handle_unknown(c, m);
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

int cn__dist_recv_frame(cn_conn *c, const char *f, size_t len)
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

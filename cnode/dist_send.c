/*
 * The send path of the distribution protocol: control messages encoded into a
 * connection's frames. Each function here writes one frame, 'p', a control
 * tuple and, for the operations that carry one, the message or reason after
 * it, straight into the connection's write buffer (conn.c), where it waits for
 * the end of the loop turn.
 *
 * A message may come in pieces (cn_piece): a large piece that lives in a blob
 * becomes a segment of the frame (cn__frame_segment), written from the blob,
 * and only the other pieces are copied into the write buffer.
 *
 * ei's encoders do not check the room they write into, so each frame reserves
 * CTL_RESERVE bytes for its control tuple before encoding: the largest tuple we
 * send, computed below from the largest encodings of what it holds.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "cnode/error.h"
#include "cnode/node_int.h"
#include "cnode/protocol.h"
#include "cnode/term.h"

/*
 * Largest encodings, in bytes, as ei writes them (erts "External Term Format"):
 * an atom of 255 UTF-8 characters of up to 4 bytes is ATOM_UTF8_EXT (tag, u16
 * length); a pid NEW_PID_EXT (tag, node atom, id, serial, creation); a
 * reference NEWER_REFERENCE_EXT (tag, u16 count, node atom, creation, at most 5
 * words); an integer up to 64 bits SMALL_BIG_EXT (tag, count, sign, 8 digits).
 */
#define ENC_ATOM_MAX (1 + 2 + (MAXATOMLEN_UTF8 - 1))
#define ENC_PID_MAX (1 + ENC_ATOM_MAX + 4 + 4 + 4)
#define ENC_REF_MAX (1 + 2 + ENC_ATOM_MAX + 4 + 4 * 5)
#define ENC_INT_MAX (1 + 1 + 1 + 8)
/* The version byte, a small tuple header and the operation. */
#define CTL_HEAD (1 + 2 + ENC_INT_MAX)
/*
 * After the operation a control tuple we send holds at most three of those:
 *   SEND_SENDER {22, From, To}, SEND {2, '', To}     two pids
 *   REG_SEND {6, From, '', Name}                     a pid, two atoms
 *   ALIAS_SEND {33, From, Alias}                     a pid, a ref
 *   ALTACT_SIG_SEND {37, Flags, From, Alias}         a small integer, a pid, a ref
 *   MONITOR_P_EXIT {21, Proc, Watcher, Ref, R}       an atom or pid, a pid, a ref
 *   MONITOR_P {19, From, Name, Ref}, DEMONITOR_P     a pid, an atom, a ref
 *   EXIT/EXIT2 {3, From, To, R}, LINK {1, From, To}  two pids
 *   UNLINK_ID {35, Id, From, To}                     an integer, two pids
 * (a reason R is counted with the payload that follows). The monitor exit is
 * the largest.
 */
#define CTL_RESERVE (CTL_HEAD + ENC_PID_MAX + ENC_PID_MAX + ENC_REF_MAX)

_Static_assert(sizeof(((erlang_pid *)0)->node) == MAXATOMLEN_UTF8, "pid node names fit ENC_ATOM_MAX");
_Static_assert(sizeof(((erlang_ref *)0)->node) == MAXATOMLEN_UTF8, "ref node names fit ENC_ATOM_MAX");
_Static_assert(sizeof(((erlang_ref *)0)->n) == 5 * sizeof(unsigned), "a ref has at most 5 words");
_Static_assert(CTL_HEAD + ENC_PID_MAX + 2 * ENC_ATOM_MAX <= CTL_RESERVE, "REG_SEND fits");
_Static_assert(CTL_HEAD + ENC_PID_MAX + ENC_REF_MAX <= CTL_RESERVE, "ALIAS_SEND fits");
_Static_assert(CTL_HEAD + ENC_INT_MAX + 2 * ENC_PID_MAX <= CTL_RESERVE, "UNLINK_ID fits");
_Static_assert(CTL_HEAD + ENC_INT_MAX + ENC_PID_MAX + ENC_REF_MAX <= CTL_RESERVE, "ALTACT_SIG_SEND fits");
_Static_assert(ENC_ATOM_MAX <= ENC_PID_MAX, "a name takes no more room than a pid");

/* A frame being encoded: the connection, where its length goes, and the encoding index. */
typedef struct enc {
    cn_conn *c;
    size_t start;
    int i;
    int bad;        /* an encoder refused its input */
} enc;

static int begin(enc *e, cn_conn *c, size_t extra)
{
    int rc = cn__frame_begin(c, CTL_RESERVE + extra, &e->start);
    if (rc < 0)
        return rc;
    e->c = c;
    e->i = (int)c->wbuf.len;
    e->bad = ei_encode_version(c->wbuf.data, &e->i) < 0;
    return 0;
}

/* Every encoder goes through here: a refusal is remembered, not ignored. */
#define ENC(e, call, ...) ((e)->bad |= ei_encode_##call((e)->c->wbuf.data, &(e)->i, __VA_ARGS__) < 0)
/*
 * Pids and references go through term.c's encoders: ei's bytes without ei's
 * atom conversion, which cost about 500 instructions a reply (issue 13).
 */
#define ENC_PID(e, p) ((e)->bad |= cn_term_encode_pid((e)->c->wbuf.data, &(e)->i, (p)) < 0)
#define ENC_REF(e, r) ((e)->bad |= cn_term_encode_ref((e)->c->wbuf.data, &(e)->i, (r)) < 0)

static void enc_peer_pid(enc *e, const cn_peer_pid *pp)
{
    erlang_pid pid;
    cn__peer_to_pid(e->c->node, pp, &pid);
    ENC_PID(e, &pid);
}

/* Is this piece sent from its blob rather than copied? (cn_piece in node.h) */
static int shared(const cn_piece *p)
{
    return p->len >= CN_BLOB_SHARE_MIN && cn_blob_holds(p->blob, p->data, p->len);
}

/* The bytes of a message in pieces that are copied into the write buffer. */
static size_t copied_len(const cn_piece *pc, int n)
{
    size_t len = 0;
    for (int k = 0; k < n; k++)
        if (!shared(&pc[k]))
            len += pc[k].len;
    return len;
}

/* Ends the frame: the payload's n pieces (n may be 0) after the control tuple, and the length. */
static int finish_pieces(enc *e, const cn_piece *pc, int n)
{
    cn_conn *c = e->c;
    assert((size_t)e->i - e->start <= 5 + CTL_RESERVE);
    if (e->bad) {
        cn__frame_abort(c, e->start);
        return -EINVAL;
    }
    c->wbuf.len = (size_t)e->i;
    for (int k = 0; k < n; k++) {
        if (shared(&pc[k])) {
            cn__frame_segment(c, pc[k].data, pc[k].len, pc[k].blob);
        } else if (pc[k].len > 0) {
            memcpy(c->wbuf.data + c->wbuf.len, pc[k].data, pc[k].len);
            c->wbuf.len += pc[k].len;
        }
    }
    cn__frame_end(c, e->start);
    return 0;
}

/* finish_pieces with one payload (may be NULL), copied. */
static int finish(enc *e, const char *payload, size_t plen)
{
    cn_piece p = {payload, plen, NULL};
    return finish_pieces(e, &p, payload != NULL);
}

int cn__dist_send(cn_conn *c, const erlang_pid *from, const erlang_pid *to, const cn_piece *msg, int n)
{
    enc e;
    int rc = begin(&e, c, copied_len(msg, n));
    if (rc < 0)
        return rc;
    ENC(&e, tuple_header, 3);
    if (c->peer_flags & DFLAG_SEND_SENDER) {
        ENC(&e, long, DOP_SEND_SENDER);
        ENC_PID(&e, from);
    } else {
        ENC(&e, long, DOP_SEND);
        ENC(&e, atom, "");
    }
    ENC_PID(&e, to);
    return finish_pieces(&e, msg, n);
}

int cn__dist_reg_send(cn_conn *c, const erlang_pid *from, const char *name, const cn_piece *msg, int n)
{
    enc e;
    int rc = begin(&e, c, copied_len(msg, n));
    if (rc < 0)
        return rc;
    ENC(&e, tuple_header, 4);
    ENC(&e, long, DOP_REG_SEND);
    ENC_PID(&e, from);
    ENC(&e, atom, "");
    /* Names are UTF-8 (ei_encode_atom would take them for Latin-1 and cut them at 255 bytes). */
    ENC(&e, atom_as, name, ERLANG_UTF8, ERLANG_UTF8);
    return finish_pieces(&e, msg, n);
}

int cn__dist_alias_send(cn_conn *c, const erlang_pid *from, const erlang_ref *alias, const cn_piece *msg, int n)
{
    enc e;
    int rc = begin(&e, c, copied_len(msg, n));
    if (rc < 0)
        return rc;
    ENC(&e, tuple_header, 3);
    ENC(&e, long, DOP_ALIAS_SEND);
    ENC_PID(&e, from);
    ENC_REF(&e, alias);
    return finish_pieces(&e, msg, n);
}

/*
 * ALTACT_SIG_SEND {37, Flags, FromPid, Alias}: OTP 28's replacement for ALIAS_SEND,
 * as erts_dsig_send_msg() in erts/emulator/beam/dist.c builds it for a message to an
 * alias without a seq_trace token: Flags is ERTS_DOP_ALTACT_SIG_FLG_ALIAS alone,
 * a 4-tuple, the message after it.
 */
int cn__dist_altact_alias_send(cn_conn *c, const erlang_pid *from, const erlang_ref *alias, const cn_piece *msg,
                               int n)
{
    enc e;
    int rc = begin(&e, c, copied_len(msg, n));
    if (rc < 0)
        return rc;
    ENC(&e, tuple_header, 4);
    ENC(&e, long, DOP_ALTACT_SIG_SEND);
    ENC(&e, ulong, CN_ALTACT_ALIAS);
    ENC_PID(&e, from);
    ENC_REF(&e, alias);
    return finish_pieces(&e, msg, n);
}

/*
 * MONITOR_P_EXIT {21, FromProc, ToPid, Ref, Reason}, or its payload form when the
 * peer has EXIT_PAYLOAD. FromProc is the name when the monitor was by name, as
 * UTF-8 of name_len bytes: the name the watcher asked for, byte for byte.
 */
int cn__dist_monitor_p_exit(cn_conn *c, const char *name, size_t name_len, const erlang_pid *tpid,
                            const erlang_pid *watcher, const erlang_ref *ref, const char *reason, size_t rlen)
{
    int payload = (c->peer_flags & DFLAG_EXIT_PAYLOAD) != 0;
    enc e;
    int rc = begin(&e, c, rlen);
    if (rc < 0)
        return rc;
    ENC(&e, tuple_header, payload ? 4 : 5);
    ENC(&e, long, payload ? DOP_PAYLOAD_MONITOR_P_EXIT : DOP_MONITOR_P_EXIT);
    if (name != NULL)
        ENC(&e, atom_len_as, name, (int)name_len, ERLANG_UTF8, ERLANG_UTF8);
    else
        ENC_PID(&e, tpid);
    ENC_PID(&e, watcher);
    ENC_REF(&e, ref);
    if (payload)
        return finish(&e, reason, rlen);
    /* Inline reason: the term without its version byte. */
    return finish(&e, reason + 1, rlen - 1);
}

int cn__dist_monitor_exit(cn_conn *c, const cn_monitor *m, const erlang_pid *tpid, const char *name,
                          const char *reason, size_t len)
{
    erlang_pid watcher;
    cn__peer_to_pid(c->node, &m->watcher, &watcher);
    erlang_ref ref;
    memset(&ref, 0, sizeof ref);
    snprintf(ref.node, sizeof ref.node, "%s", c->peer_name);
    ref.len = (int)m->key.len;
    memcpy(ref.n, m->key.n, sizeof ref.n);
    ref.creation = m->ref_creation;
    return cn__dist_monitor_p_exit(c, m->by_name ? name : NULL, m->by_name ? strlen(name) : 0, tpid, &watcher,
                                   &ref, reason, len);
}

int cn__dist_exit(cn_conn *c, int op_plain, const erlang_pid *from, const cn_peer_pid *to, const char *reason,
                  size_t len)
{
    int payload = (c->peer_flags & DFLAG_EXIT_PAYLOAD) != 0;
    long op = op_plain;
    if (payload)
        op = op_plain == DOP_EXIT ? DOP_PAYLOAD_EXIT : DOP_PAYLOAD_EXIT2;
    enc e;
    int rc = begin(&e, c, len);
    if (rc < 0)
        return rc;
    ENC(&e, tuple_header, payload ? 3 : 4);
    ENC(&e, long, op);
    ENC_PID(&e, from);
    enc_peer_pid(&e, to);
    if (payload)
        return finish(&e, reason, len);
    return finish(&e, reason + 1, len - 1);
}

int cn__dist_link(cn_conn *c, const erlang_pid *from, const cn_peer_pid *to)
{
    enc e;
    int rc = begin(&e, c, 0);
    if (rc < 0)
        return rc;
    ENC(&e, tuple_header, 3);
    ENC(&e, long, DOP_LINK);
    ENC_PID(&e, from);
    enc_peer_pid(&e, to);
    return finish(&e, NULL, 0);
}

int cn__dist_unlink_id(cn_conn *c, int op, uint64_t id, const erlang_pid *from, const cn_peer_pid *to)
{
    enc e;
    int rc = begin(&e, c, 0);
    if (rc < 0)
        return rc;
    ENC(&e, tuple_header, 4);
    ENC(&e, long, op);
    ENC(&e, ulonglong, id);
    ENC_PID(&e, from);
    enc_peer_pid(&e, to);
    return finish(&e, NULL, 0);
}

/*
 * MONITOR_P {19, FromPid, ToProc, Ref} or DEMONITOR_P {20, ...}, ToProc the
 * registered name (UTF-8), as erlang:monitor(process, {Name, Node}) and
 * erlang:demonitor send them.
 */
int cn__dist_monitor_p(cn_conn *c, int op, const erlang_pid *from, const char *name, const erlang_ref *ref)
{
    assert(op == DOP_MONITOR_P || op == DOP_DEMONITOR_P);
    enc e;
    int rc = begin(&e, c, 0);
    if (rc < 0)
        return rc;
    ENC(&e, tuple_header, 4);
    ENC(&e, long, op);
    ENC_PID(&e, from);
    ENC(&e, atom_as, name, ERLANG_UTF8, ERLANG_UTF8);
    ENC_REF(&e, ref);
    return finish(&e, NULL, 0);
}

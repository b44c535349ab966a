/*
 * Routing: where a message, link or exit signal addressed to a pid or a name
 * goes. A pid of this node is a local process (proc.c, through the local run
 * queue); any other pid is reached through the connection to its node
 * (conn.c), in a frame encoded by dist_send.c. A pid on a node we are not
 * connected to is treated as Erlang treats it: a send is dropped, a link
 * breaks at once with 'noconnection'.
 *
 * The other direction too: when a connection goes, the links and monitors
 * that went through it go with it (cn__route_conn_down).
 */
#include <assert.h>
#include <string.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/node_int.h"
#include "cnode/protocol.h"

/* ---- Messages ---- */

/*
 * A message in pieces queued for a local process: the queue keeps a copy of
 * the message anyway, so the pieces are joined (rare: pieces are for replies
 * to large remote calls).
 */
static void enqueue_pieces(cn_node *node, uint32_t to, uint32_t from, const cn_piece *pc, int n)
{
    if (n == 1) {
        cn__proc_enqueue(node, to, from, CN_LMSG_MESSAGE, pc[0].data, pc[0].len);
        return;
    }
    cn_buf b;
    cn_buf_init(&b);
    for (int k = 0; k < n; k++)
        cn_buf_append(&b, pc[k].data, pc[k].len);
    cn__proc_enqueue(node, to, from, CN_LMSG_MESSAGE, b.data, b.len);
    cn_buf_free(&b);
}

int cn_send(cn_proc *from, const erlang_pid *to, const char *msg, size_t len)
{
    cn_piece p = {msg, len, NULL};
    return cn_send_pieces(from, to, &p, 1);
}

int cn_send_pieces(cn_proc *from, const erlang_pid *to, const cn_piece *pc, int n)
{
    assert(n >= 1);
    cn_node *node = from->node;
    if (cn__is_local(node, to)) {
        if (to->creation != node->creation)
            return CN_ENOPROC;
        enqueue_pieces(node, to->num, from->num, pc, n);
        return 0;
    }
    cn_conn *c = cn__conn_find(node, to->node);
    if (c == NULL) {
        char esc[CN_LOG_ESC_MAX];
        CN_DEBUG("route", "message to %s dropped: not connected", cn_log_escape_str(esc, sizeof esc, to->node));
        return CN_ENOCONN;
    }
    erlang_pid self;
    cn_proc_pid(from, &self);
    return cn__dist_send(c, &self, to, pc, n);
}

int cn_send_name(cn_proc *from, const char *name, const char *nodename, const char *msg, size_t len)
{
    cn_node *node = from->node;
    if (nodename == NULL || strcmp(nodename, node->name) == 0) {
        cn_proc *p = cn_proc_whereis(node, name);
        if (p == NULL)
            return CN_ENOPROC;
        cn__proc_enqueue(node, p->num, from->num, CN_LMSG_MESSAGE, msg, len);
        return 0;
    }
    cn_conn *c = cn__conn_find(node, nodename);
    if (c == NULL)
        return CN_ENOCONN;
    erlang_pid self;
    cn_proc_pid(from, &self);
    cn_piece p = {msg, len, NULL};
    return cn__dist_reg_send(c, &self, name, &p, 1);
}

/*
 * OTP 28 deprecates ALIAS_SEND (gone in OTP 30) for ALTACT_SIG_SEND: a peer that
 * has both gets the new one, as the BEAM itself chooses (erts_dsig_send_msg() in
 * erts/emulator/beam/dist.c). Each kind is counted and, at debug level, logged.
 */
static int alias_send(cn_conn *c, cn_proc *from, const erlang_ref *alias, const cn_piece *pc, int n)
{
    int altact = (c->peer_flags & DFLAG_ALTACT_SIG) != 0;
    erlang_pid self;
    cn_proc_pid(from, &self);
    int rc = altact ? cn__dist_altact_alias_send(c, &self, alias, pc, n)
                    : cn__dist_alias_send(c, &self, alias, pc, n);
    if (rc < 0)
        return rc;
    if (altact)
        from->node->stats.altact_sends++;
    else
        from->node->stats.alias_sends++;
    CN_DEBUG("route", "reply to an alias on %s sent as %s", c->peer_name,
             altact ? "ALTACT_SIG_SEND" : "ALIAS_SEND");
    return 0;
}

int cn_send_alias(cn_proc *from, const erlang_ref *alias, const erlang_pid *fallback, const char *msg, size_t len)
{
    cn_piece p = {msg, len, NULL};
    return cn_send_alias_pieces(from, alias, fallback, &p, 1);
}

int cn_send_alias_pieces(cn_proc *from, const erlang_ref *alias, const erlang_pid *fallback, const cn_piece *pc,
                         int n)
{
    cn_conn *c = cn__conn_find(from->node, fallback->node);
    if (c != NULL && (c->peer_flags & (DFLAG_ALTACT_SIG | DFLAG_ALIAS)))
        return alias_send(c, from, alias, pc, n);
    return cn_send_pieces(from, fallback, pc, n);
}

/* ---- Links and exit signals ---- */

/* The far end `pid` as reached through c. */
static cn_peer_pid remote(cn_conn *c, const erlang_pid *pid)
{
    return (cn_peer_pid){c, pid->num, pid->serial, pid->creation};
}

int cn_proc_link(cn_proc *p, const erlang_pid *pid)
{
    cn_node *node = p->node;
    if (cn__is_local(node, pid))
        return cn__proc_link_local(p, pid);
    cn_conn *c = cn__conn_find(node, pid->node);
    if (c == NULL) {
        /* As in Erlang, linking to an unreachable node's process is an instant noconnection. */
        char reason[32];
        size_t n = cn_term_atom(reason, "noconnection");
        cn__proc_enqueue(node, p->num, 0, CN_LMSG_EXIT_LINK, reason, n);
        return CN_ENOCONN;
    }
    cn_peer_pid o = remote(c, pid);
    cn__link_add(p, &o, &c->links);
    erlang_pid self;
    cn_proc_pid(p, &self);
    return cn__dist_link(c, &self, &o);
}

int cn_proc_unlink(cn_proc *p, const erlang_pid *pid)
{
    cn_node *node = p->node;
    if (cn__is_local(node, pid)) {
        cn__proc_unlink_local(p, pid);
        return 0;
    }
    cn_conn *c = cn__conn_find(node, pid->node);
    if (c == NULL)
        return 0;
    cn_peer_pid o = remote(c, pid);
    if (cn__link_remove(p, &o) < 0)
        return 0;
    erlang_pid self;
    cn_proc_pid(p, &self);
    return cn__dist_unlink_id(c, DOP_UNLINK_ID, ++node->next_unlink_id, &self, &o);
}

int cn_proc_exit_pid(cn_proc *p, const erlang_pid *pid, const char *reason, size_t len)
{
    cn_node *node = p->node;
    if (cn__is_local(node, pid)) {
        cn__proc_enqueue(node, pid->num, p->num, CN_LMSG_EXIT2, reason, len);
        return 0;
    }
    cn_conn *c = cn__conn_find(node, pid->node);
    if (c == NULL)
        return CN_ENOCONN;
    erlang_pid self;
    cn_proc_pid(p, &self);
    cn_peer_pid o = remote(c, pid);
    return cn__dist_exit(c, DOP_EXIT2, &self, &o, reason, len);
}

/* ---- A connection that goes ---- */

void cn__route_conn_down(cn_conn *c)
{
    cn__proc_conn_lost(c->node, &c->links, c->monitors);
    c->monitors = NULL;
    cn__alias_conn_lost(c->node, c, c->peer_name);
}

/*
 * Processes, registered names, links, monitors and exit signals.
 *
 * Erlang's rules, as a BEAM node applies them to its own processes:
 * - an exit signal 'kill' sent with exit/2 cannot be trapped: the process dies
 *   with reason 'killed';
 * - a process that traps exits gets every other exit signal as {'EXIT', From,
 *   Reason};
 * - otherwise 'normal' is ignored and any other reason kills it with that reason;
 * - a dying process sends its reason to every linked process and a DOWN to every
 *   monitor; a link or monitor whose connection is lost behaves as if the far
 *   process died with 'noconnection' (for links) or simply goes (for monitors
 *   held by the remote side, which learns of the loss itself).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/node_int.h"
#include "cnode/protocol.h"

size_t cn_term_atom(char *buf, const char *atom)
{
    int i = 0;
    ei_encode_version(buf, &i);
    ei_encode_atom(buf, &i, atom);
    return (size_t)i;
}

/* Is the versioned term `r` the atom `atom`? */
static int reason_is(const char *r, size_t len, const char *atom)
{
    char name[MAXATOMLEN_UTF8];
    int i = 0, ver;
    if (len < 2 || ei_decode_version(r, &i, &ver) < 0)
        return 0;
    int type, size;
    if (ei_get_type(r, &i, &type, &size) < 0 || (size_t)size >= sizeof name)
        return 0;
    if (type != ERL_ATOM_EXT && type != ERL_SMALL_ATOM_EXT && type != ERL_ATOM_UTF8_EXT &&
        type != ERL_SMALL_ATOM_UTF8_EXT)
        return 0;
    if (ei_decode_atom(r, &i, name) < 0)
        return 0;
    return strcmp(name, atom) == 0;
}

cn_proc *cn_proc_spawn(cn_node *node, const cn_proc_ops *ops, void *data)
{
    cn_proc *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->node = node;
    p->ops = ops;
    p->data = data;
    do {
        p->num = node->next_num++;
        if (node->next_num == 0)
            node->next_num = 1;
        cn_proc *dup = NULL;
        HASH_FIND(hh, node->procs, &p->num, sizeof p->num, dup);
        if (dup == NULL)
            break;
    } while (1);
    HASH_ADD(hh, node->procs, num, sizeof p->num, p);
    node->stats.processes++;
    return p;
}

int cn_proc_register(cn_proc *p, const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof p->name || p->dead)
        return -EINVAL;
    if (p->name[0] != '\0' || cn_proc_whereis(p->node, name) != NULL)
        return CN_EEXIST;
    memcpy(p->name, name, n + 1);
    HASH_ADD(hh_name, p->node->names, name[0], n, p);
    return 0;
}

cn_proc *cn_proc_whereis(cn_node *node, const char *name)
{
    cn_proc *p = NULL;
    HASH_FIND(hh_name, node->names, name, strlen(name), p);
    return p;
}

void cn_proc_pid(const cn_proc *p, erlang_pid *out)
{
    memcpy(out->node, p->node->name, strlen(p->node->name) + 1);
    out->num = p->num;
    out->serial = 0;
    out->creation = p->node->creation;
}

cn_node *cn_proc_node(const cn_proc *p) { return p->node; }
void *cn_proc_data(const cn_proc *p) { return p->data; }
void cn_proc_set_data(cn_proc *p, void *data) { p->data = data; }
const char *cn_proc_name(const cn_proc *p) { return p->name; }
int cn_proc_alive(const cn_proc *p) { return !p->dead; }
void cn_proc_trap_exit(cn_proc *p, int trap) { p->trap_exit = trap != 0; }

int cn__is_local(const cn_node *node, const erlang_pid *pid)
{
    return strcmp(pid->node, node->name) == 0;
}

cn_proc *cn__proc_by_pid(cn_node *node, const erlang_pid *pid)
{
    /* A pid of an earlier incarnation of this node names no process here. */
    if (!cn__is_local(node, pid) || pid->creation != node->creation || pid->serial != 0)
        return NULL;
    cn_proc *p = NULL;
    HASH_FIND(hh, node->procs, &pid->num, sizeof pid->num, p);
    return p;
}

cn_proc *cn_proc_by_pid(cn_node *node, const erlang_pid *pid)
{
    cn_proc *p = cn__proc_by_pid(node, pid);
    return p && !p->dead ? p : NULL;
}

void cn_proc_exit_now(cn_proc *from, cn_proc *to, const char *reason, size_t len)
{
    erlang_pid f;
    cn_proc_pid(from, &f);
    cn__proc_exit_signal(to, &f, reason, len, 0);
}

void cn__pid_of_peer(const cn_node *node, const cn_peer_pid *pp, erlang_pid *out)
{
    const char *name = pp->conn ? pp->conn->peer_name : node->name;
    memcpy(out->node, name, strlen(name) + 1);
    out->num = pp->num;
    out->serial = pp->serial;
    out->creation = pp->creation;
}

void cn__proc_deliver(cn_proc *p, const char *msg, size_t len)
{
    if (!p->dead)
        p->ops->message(p, msg, len);
}

/* ---- Links ---- */

static cn_link *link_find(cn_proc *p, const cn_peer_pid *o)
{
    for (cn_link *l = p->links; l; l = l->p_next)
        if (l->other.conn == o->conn && l->other.num == o->num && l->other.serial == o->serial &&
            l->other.creation == o->creation)
            return l;
    return NULL;
}

static void link_unhook(cn_link *l)
{
    cn_proc *p = l->local;
    if (l->p_prev)
        l->p_prev->p_next = l->p_next;
    else
        p->links = l->p_next;
    if (l->p_next)
        l->p_next->p_prev = l->p_prev;
    if (l->other.conn) {
        cn_conn *c = l->other.conn;
        if (l->c_prev)
            l->c_prev->c_next = l->c_next;
        else
            c->links = l->c_next;
        if (l->c_next)
            l->c_next->c_prev = l->c_prev;
    }
    p->node->stats.links--;
}

int cn__link_add(cn_proc *p, const cn_peer_pid *other)
{
    if (link_find(p, other))
        return 0;
    cn_link *l = calloc(1, sizeof *l);
    if (l == NULL)
        return -ENOMEM;
    l->local = p;
    l->other = *other;
    l->p_next = p->links;
    if (p->links)
        p->links->p_prev = l;
    p->links = l;
    if (other->conn) {
        l->c_next = other->conn->links;
        if (other->conn->links)
            other->conn->links->c_prev = l;
        other->conn->links = l;
    }
    p->node->stats.links++;
    return 0;
}

int cn__link_remove(cn_proc *p, const cn_peer_pid *other)
{
    cn_link *l = link_find(p, other);
    if (l == NULL)
        return CN_ENOPROC;
    link_unhook(l);
    free(l);
    return 0;
}

static cn_conn *conn_for(cn_node *node, const erlang_pid *pid)
{
    return cn__conn_find(node, pid->node);
}

int cn_proc_link(cn_proc *p, const erlang_pid *pid)
{
    cn_node *node = p->node;
    erlang_pid self;
    cn_proc_pid(p, &self);
    char reason[32];
    if (cn__is_local(node, pid)) {
        cn_proc *o = cn__proc_by_pid(node, pid);
        if (o == NULL || o->dead) {
            size_t n = cn_term_atom(reason, "noproc");
            cn__local_enqueue(node, p->num, pid->num, CN_LMSG_EXIT_LINK, reason, n);
            return CN_ENOPROC;
        }
        if (o == p)
            return 0;
        cn_peer_pid a = {NULL, o->num, 0, node->creation};
        cn_peer_pid b = {NULL, p->num, 0, node->creation};
        int rc = cn__link_add(p, &a);
        if (rc == 0)
            rc = cn__link_add(o, &b);
        return rc;
    }
    cn_conn *c = conn_for(node, pid);
    if (c == NULL) {
        /* As in Erlang, linking to an unreachable node's process is an instant noconnection. */
        size_t n = cn_term_atom(reason, "noconnection");
        cn__local_enqueue(node, p->num, 0, CN_LMSG_EXIT_LINK, reason, n);
        return CN_ENOCONN;
    }
    cn_peer_pid o = {c, pid->num, pid->serial, pid->creation};
    int rc = cn__link_add(p, &o);
    if (rc == 0)
        rc = cn__dist_link(c, &self, &o);
    return rc;
}

/*
 * Drops the link exit signals from `from` to `to` that are queued but not yet
 * delivered. erlang:unlink/1 promises that once it returns the link has no
 * further effect on the caller, even when the other side already died.
 */
static void purge_link_signals(cn_node *node, uint32_t to, uint32_t from)
{
    cn_local_msg **pp = &node->rq_head, *last = NULL;
    while (*pp) {
        cn_local_msg *m = *pp;
        if (m->kind == CN_LMSG_EXIT_LINK && m->to == to && m->from == from) {
            *pp = m->next;
            free(m);
            continue;
        }
        last = m;
        pp = &m->next;
    }
    node->rq_tail = last;
}

int cn_proc_unlink(cn_proc *p, const erlang_pid *pid)
{
    cn_node *node = p->node;
    static uint64_t unlink_ids;
    if (cn__is_local(node, pid)) {
        cn_peer_pid a = {NULL, pid->num, 0, node->creation};
        cn__link_remove(p, &a);
        if (pid->creation == node->creation && pid->serial == 0)
            purge_link_signals(node, p->num, pid->num);
        cn_proc *o = cn__proc_by_pid(node, pid);
        if (o) {
            cn_peer_pid b = {NULL, p->num, 0, node->creation};
            cn__link_remove(o, &b);
        }
        return 0;
    }
    cn_conn *c = conn_for(node, pid);
    if (c == NULL)
        return 0;
    cn_peer_pid o = {c, pid->num, pid->serial, pid->creation};
    if (cn__link_remove(p, &o) < 0)
        return 0;
    erlang_pid self;
    cn_proc_pid(p, &self);
    return cn__dist_unlink_id(c, DOP_UNLINK_ID, ++unlink_ids, &self, &o);
}

/* ---- Monitors (remote watchers of local processes) ---- */

static void monitor_key(cn_monitor_key *k, cn_conn *c, const erlang_ref *ref)
{
    memset(k, 0, sizeof *k);
    k->conn = c;
    k->len = ref->len > 5 ? 5 : (uint32_t)ref->len;
    memcpy(k->n, ref->n, k->len * sizeof k->n[0]);
}

static void monitor_unhook(cn_node *node, cn_monitor *m)
{
    cn_proc *t = m->target;
    if (m->t_prev)
        m->t_prev->t_next = m->t_next;
    else
        t->monitors = m->t_next;
    if (m->t_next)
        m->t_next->t_prev = m->t_prev;
    cn_conn *c = m->key.conn;
    if (m->c_prev)
        m->c_prev->c_next = m->c_next;
    else
        c->monitors = m->c_next;
    if (m->c_next)
        m->c_next->c_prev = m->c_prev;
    HASH_DEL(node->monitors, m);
    /* Recycled: a GenServer.call makes and removes one, and should not allocate. */
    m->t_next = node->free_monitors;
    node->free_monitors = m;
    node->stats.monitors--;
}

int cn__monitor_add(cn_proc *target, cn_conn *c, const erlang_pid *watcher, const erlang_ref *ref, int by_name)
{
    cn_node *node = target->node;
    cn_monitor_key k;
    monitor_key(&k, c, ref);
    cn_monitor *m = NULL;
    HASH_FIND(hh, node->monitors, &k, sizeof k, m);
    if (m != NULL)
        return 0; /* the same reference twice: one monitor */
    if (node->free_monitors) {
        m = node->free_monitors;
        node->free_monitors = m->t_next;
    } else {
        m = malloc(sizeof *m);
        if (m == NULL)
            return -ENOMEM;
    }
    memset(m, 0, sizeof *m);
    m->key = k;
    m->ref_creation = ref->creation;
    m->target = target;
    m->watcher = (cn_peer_pid){c, watcher->num, watcher->serial, watcher->creation};
    m->by_name = by_name;
    HASH_ADD(hh, node->monitors, key, sizeof m->key, m);
    m->t_next = target->monitors;
    if (target->monitors)
        target->monitors->t_prev = m;
    target->monitors = m;
    m->c_next = c->monitors;
    if (c->monitors)
        c->monitors->c_prev = m;
    c->monitors = m;
    node->stats.monitors++;
    return 0;
}

void cn__monitor_remove(cn_node *node, cn_conn *c, const erlang_ref *ref)
{
    cn_monitor_key k;
    monitor_key(&k, c, ref);
    cn_monitor *m = NULL;
    HASH_FIND(hh, node->monitors, &k, sizeof k, m);
    if (m != NULL)
        monitor_unhook(node, m);
}

void cn__conn_drop_links_monitors(cn_conn *c)
{
    cn_node *node = c->node;
    while (c->monitors)
        monitor_unhook(node, c->monitors);
    char reason[32];
    size_t rlen = cn_term_atom(reason, "noconnection");
    /* Take the head each time: an exit signal may end a process and unhook more links. */
    cn_link *l;
    while ((l = c->links) != NULL) {
        cn_proc *p = l->local;
        erlang_pid from;
        cn__pid_of_peer(node, &l->other, &from);
        link_unhook(l);
        free(l);
        cn__proc_exit_signal(p, &from, reason, rlen, 1);
    }
}

/* ---- Exit ---- */

static void proc_finish(cn_proc *p, const char *reason, size_t len)
{
    cn_node *node = p->node;
    char normal[16];
    if (reason == NULL) {
        len = cn_term_atom(normal, "normal");
        reason = normal;
    }
    p->dead = 1;
    if (p->name[0] != '\0')
        HASH_DELETE(hh_name, node->names, p);

    while (p->monitors) {
        cn_monitor *m = p->monitors;
        cn__dist_monitor_exit(m->key.conn, p, m, reason, len);
        monitor_unhook(node, m);
    }

    erlang_pid self;
    cn_proc_pid(p, &self);
    cn_link *l;
    while ((l = p->links) != NULL) {
        cn_peer_pid other = l->other;
        link_unhook(l);
        free(l);
        if (other.conn) {
            cn__dist_exit(other.conn, DOP_EXIT, &self, &other, reason, len);
        } else {
            cn_proc *o = NULL;
            HASH_FIND(hh, node->procs, &other.num, sizeof other.num, o);
            if (o) {
                cn_peer_pid back = {NULL, p->num, 0, node->creation};
                cn__link_remove(o, &back);
                cn__local_enqueue(node, o->num, p->num, CN_LMSG_EXIT_LINK, reason, len);
            }
        }
    }
    HASH_DELETE(hh, node->procs, p);
    node->stats.processes--;
    /* Freed at the end of the loop turn: callers up the stack may still hold p. */
    p->zombie_next = node->zombies;
    node->zombies = p;
    cn__node_wake(node);
}

void cn_proc_exit(cn_proc *p, const char *reason, size_t len)
{
    if (!p->dead)
        proc_finish(p, reason, len);
}

static void die(cn_proc *p, cn_exit_cause cause, const char *reason, size_t len)
{
    if (p->dead)
        return;
    if (p->ops->exiting)
        p->ops->exiting(p, cause, reason, len);
    proc_finish(p, reason, len);
}

void cn__proc_exit_signal(cn_proc *p, const erlang_pid *from, const char *reason, size_t len, int from_link)
{
    if (p->dead)
        return;
    if (!from_link && reason_is(reason, len, "kill")) {
        char killed[16];
        size_t n = cn_term_atom(killed, "killed");
        die(p, CN_EXIT_KILL, killed, n);
        return;
    }
    if (p->trap_exit) {
        /* {'EXIT', From, Reason} */
        ei_x_buff x;
        if (ei_x_new_with_version(&x) < 0)
            return;
        ei_x_encode_tuple_header(&x, 3);
        ei_x_encode_atom(&x, "EXIT");
        ei_x_encode_pid(&x, from);
        ei_x_append_buf(&x, reason + 1, (int)len - 1);
        cn__proc_deliver(p, x.buff, (size_t)x.index);
        ei_x_free(&x);
        return;
    }
    if (reason_is(reason, len, "normal"))
        return;
    die(p, CN_EXIT_SIGNAL, reason, len);
}

int cn_proc_exit_pid(cn_proc *p, const erlang_pid *pid, const char *reason, size_t len)
{
    cn_node *node = p->node;
    if (cn__is_local(node, pid)) {
        cn__local_enqueue(node, pid->num, p->num, CN_LMSG_EXIT2, reason, len);
        return 0;
    }
    cn_conn *c = conn_for(node, pid);
    if (c == NULL)
        return CN_ENOCONN;
    erlang_pid self;
    cn_proc_pid(p, &self);
    cn_peer_pid o = {c, pid->num, pid->serial, pid->creation};
    return cn__dist_exit(c, DOP_EXIT2, &self, &o, reason, len);
}

/* ---- The local run queue ---- */

void cn__local_enqueue(cn_node *node, uint32_t to, uint32_t from, int kind, const char *data, size_t len)
{
    cn_local_msg *m = malloc(sizeof *m + len);
    if (m == NULL) {
        CN_ERROR("proc", "out of memory: a local message was dropped");
        return;
    }
    m->next = NULL;
    m->to = to;
    m->from = from;
    m->kind = kind;
    m->len = len;
    memcpy(m->data, data, len);
    if (node->rq_tail)
        node->rq_tail->next = m;
    else
        node->rq_head = m;
    node->rq_tail = m;
    cn__node_wake(node);
}

void cn__run_queue(cn_node *node, unsigned budget)
{
    while (node->rq_head && budget-- > 0) {
        cn_local_msg *m = node->rq_head;
        node->rq_head = m->next;
        if (node->rq_head == NULL)
            node->rq_tail = NULL;
        cn_proc *p = NULL;
        HASH_FIND(hh, node->procs, &m->to, sizeof m->to, p);
        if (p && !p->dead) {
            if (m->kind == CN_LMSG_MESSAGE) {
                cn__proc_deliver(p, m->data, m->len);
            } else {
                erlang_pid from;
                cn_peer_pid pp = {NULL, m->from, 0, node->creation};
                cn__pid_of_peer(node, &pp, &from);
                cn__proc_exit_signal(p, &from, m->data, m->len, m->kind == CN_LMSG_EXIT_LINK);
            }
        }
        free(m);
    }
}

void cn__free_zombies(cn_node *node)
{
    while (node->zombies) {
        cn_proc *p = node->zombies;
        node->zombies = p->zombie_next;
        free(p);
    }
}

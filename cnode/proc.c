/*
 * Processes: pids, registered names, links, monitors, exit signals, and the
 * queue of messages and signals between local processes.
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
 *
 * Connections are opaque here: a remote link or monitor sits on the list of the
 * connection it goes through (its route, given by whoever made it), and a
 * dying process's signals to remote pids go out through dist_send.c. Which
 * connection a pid is reached through is route.c's business.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "cnode/node_int.h"
#include "cnode/protocol.h"
#include "cnode/utf8.h"

/*
 * Spare monitors kept for reuse: enough that calls in flight never allocate,
 * few enough that a peer that made a million monitors leaves no more than
 * about 200 KiB behind when they go.
 */
#define MONITOR_SPARE 1024
/* Monitors of a lost connection freed per loop turn: a few milliseconds of free(). */
#define RECLAIM_BATCH 32768
/*
 * Monitors of a lost connection taken off their lists and tables per loop
 * turn: each costs a few cache misses, and a peer's million of them at once
 * held the loop 27 to 174 ms (measured, issue 9).
 */
#define ORPHAN_BATCH 8192
/* After this many monitors freed, the allocator is asked to give memory back. */
#define TRIM_AFTER 16384

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
    cn_proc *p = cn_calloc(1, sizeof *p);
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
    if (n == 0 || n >= sizeof p->name || cn_utf8_atom_chars(name, n) < 0 || p->dead)
        return -EINVAL;
    if (p->name[0] != '\0' || cn_proc_whereis(p->node, name) != NULL)
        return CN_EEXIST;
    memcpy(p->name, name, n + 1);
    HASH_ADD(hh_name, p->node->names, name[0], n, p);
    return 0;
}

cn_proc *cn__proc_whereis_n(cn_node *node, const char *name, size_t len)
{
    /* The table's keys are whole names, compared as bytes: a name with a NUL inside matches none. */
    cn_proc *p = NULL;
    HASH_FIND(hh_name, node->names, name, len, p);
    return p;
}

cn_proc *cn_proc_whereis(cn_node *node, const char *name)
{
    return cn__proc_whereis_n(node, name, strlen(name));
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
    /* A local process's signal, even when sent while a peer's frame is handled. */
    const char *outer = from->node->delivering_from;
    from->node->delivering_from = NULL;
    cn__proc_exit_signal(to, &f, reason, len, 0);
    from->node->delivering_from = outer;
}

void cn__proc_deliver(cn_proc *p, const char *msg, size_t len)
{
    if (!p->dead)
        p->ops->message(p, msg, len);
}

/* ---- Links ---- */

static cn_link *link_find(cn_proc *p, const cn_peer_pid *o)
{
    cn_link *l;
    DL_FOREACH2(p->links, l, p_next) {
        if (l->other.conn == o->conn && l->other.num == o->num && l->other.serial == o->serial &&
            l->other.creation == o->creation)
            return l;
    }
    return NULL;
}

/* Takes l off both its lists and frees it. */
static void link_drop(cn_link *l)
{
    cn_node *node = l->local->node;
    DL_DELETE2(l->local->links, l, p_prev, p_next);
    if (l->route != NULL)
        DL_DELETE2(*l->route, l, c_prev, c_next);
    CN__STAT_DEC(node, links);
    free(l);
}

void cn__link_add(cn_proc *p, const cn_peer_pid *other, cn_link **route)
{
    /* A remote far end is on its connection's list; a dead process keeps no links. */
    assert((other->conn != NULL) == (route != NULL));
    assert(!p->dead);
    if (link_find(p, other))
        return;
    cn_link *l = cn_calloc(1, sizeof *l);
    l->local = p;
    l->other = *other;
    l->route = route;
    DL_PREPEND2(p->links, l, p_prev, p_next);
    if (route != NULL)
        DL_PREPEND2(*route, l, c_prev, c_next);
    p->node->stats.links++;
}

int cn__link_remove(cn_proc *p, const cn_peer_pid *other)
{
    cn_link *l = link_find(p, other);
    if (l == NULL)
        return CN_ENOPROC;
    link_drop(l);
    return 0;
}

int cn__proc_link_local(cn_proc *p, const erlang_pid *pid)
{
    cn_node *node = p->node;
    cn_proc *o = cn__proc_by_pid(node, pid);
    if (o == NULL || o->dead) {
        char reason[16];
        size_t n = cn_term_atom(reason, "noproc");
        cn__proc_enqueue(node, p->num, pid->num, CN_LMSG_EXIT_LINK, reason, n);
        return CN_ENOPROC;
    }
    if (o == p)
        return 0;
    cn_peer_pid a = {NULL, o->num, 0, node->creation};
    cn_peer_pid b = {NULL, p->num, 0, node->creation};
    cn__link_add(p, &a, NULL);
    cn__link_add(o, &b, NULL);
    return 0;
}

/*
 * Drops the link exit signals from `from` to `to` that are queued but not yet
 * delivered. erlang:unlink/1 promises that once it returns the link has no
 * further effect on the caller, even when the other side already died.
 */
static void purge_link_signals(cn_node *node, uint32_t to, uint32_t from)
{
    cn_local_msg *m, *tmp;
    DL_FOREACH_SAFE(node->run_queue, m, tmp) {
        if (m->kind == CN_LMSG_EXIT_LINK && m->to == to && m->from == from) {
            DL_DELETE(node->run_queue, m);
            free(m);
        }
    }
}

void cn__proc_unlink_local(cn_proc *p, const erlang_pid *pid)
{
    cn_node *node = p->node;
    cn_peer_pid a = {NULL, pid->num, 0, node->creation};
    cn__link_remove(p, &a);
    if (pid->creation == node->creation && pid->serial == 0)
        purge_link_signals(node, p->num, pid->num);
    cn_proc *o = cn__proc_by_pid(node, pid);
    if (o) {
        cn_peer_pid b = {NULL, p->num, 0, node->creation};
        cn__link_remove(o, &b);
    }
}

/* ---- Monitors (remote watchers of local processes) ---- */

/* A seed for the monitor table's hash that a peer cannot guess. */
static uint64_t random_seed(const cn_node *node)
{
    uint64_t v;
    if (uv_random(NULL, NULL, &v, sizeof v, 0, NULL) != 0)
        v = uv_hrtime() ^ (uint64_t)(uintptr_t)node;
    return v;
}

/* A lost connection's list that has no monitor left goes. */
static void orphan_free(cn_node *node, cn_monitor_list *list)
{
    cn_monitor_list **pp = &node->orphans;
    while (*pp != list)
        pp = &(*pp)->next_orphan;
    *pp = list->next_orphan;
    free(list);
}

/* Takes m off its target's and its connection's lists (not off the table). */
static void monitor_unlink(cn_node *node, cn_monitor *m)
{
    cn_monitor_list *route = m->route;
    DL_DELETE2(m->target->monitors, m, t_prev, t_next);
    DL_DELETE2(route->head, m, c_prev, c_next);
    route->count--;
    CN__STAT_DEC(node, monitors);
    if (route->orphan && route->count == 0)
        orphan_free(node, route);
}

/*
 * A monitor on no list and in no table any more. Up to MONITOR_SPARE are kept
 * for reuse (a GenServer.call makes and removes one, and should not allocate);
 * the rest is freed, now or, when `later`, a batch per turn (cn__proc_reclaim).
 */
static void monitor_release(cn_node *node, cn_monitor *m, int later)
{
    if (node->free_monitor_count < MONITOR_SPARE) {
        LL_PREPEND2(node->free_monitors, m, t_next);
        node->free_monitor_count++;
    } else if (later) {
        LL_PREPEND2(node->doomed_monitors, m, t_next);
    } else {
        free(m);
        node->monitors_freed++;
    }
}

static void monitor_drop(cn_node *node, cn_monitor *m)
{
    monitor_unlink(node, m);
    cn__mon_table_del(&node->monitors, m);
    monitor_release(node, m, 0);
}

void cn__monitor_add(cn_proc *target, cn_conn *c, cn_monitor_list *route, const erlang_pid *watcher,
                     const erlang_ref *ref, int by_name)
{
    cn_node *node = target->node;
    assert(!target->dead);
    cn_monitor_key k;
    cn__monitor_key(&k, c, ref);
    cn_monitor *m = cn__mon_table_find(&node->monitors, &k);
    /* A lost connection's monitor whose key a new connection at the same address reuses goes now. */
    if (m != NULL && m->route->orphan) {
        monitor_drop(node, m);
        m = NULL;
    }
    if (m != NULL)
        return; /* the same reference twice: one monitor */
    if (node->free_monitors) {
        m = node->free_monitors;
        node->free_monitors = m->t_next;
        node->free_monitor_count--;
    } else {
        m = cn_malloc(sizeof *m);
    }
    memset(m, 0, sizeof *m);
    m->key = k;
    m->ref_creation = ref->creation;
    m->target = target;
    m->watcher = (cn_peer_pid){c, watcher->num, watcher->serial, watcher->creation};
    m->by_name = by_name;
    m->route = route;
    cn__mon_table_add(&node->monitors, m);
    DL_PREPEND2(target->monitors, m, t_prev, t_next);
    DL_PREPEND2(route->head, m, c_prev, c_next);
    route->count++;
    node->stats.monitors++;
}

void cn__monitor_remove(cn_node *node, cn_conn *c, const erlang_ref *ref)
{
    cn_monitor_key k;
    cn__monitor_key(&k, c, ref);
    cn_monitor *m = cn__mon_table_find(&node->monitors, &k);
    if (m != NULL && !m->route->orphan)
        monitor_drop(node, m);
}

/*
 * Up to n monitors of lost connections off their lists and table, into the
 * batches freed later (the table's shards shrink as they empty). Returns how many.
 */
static unsigned orphans_drain(cn_node *node, unsigned n)
{
    unsigned done = 0;
    cn_monitor_list *list;
    while (done < n && (list = node->orphans) != NULL) {
        cn_monitor *m = list->head;
        assert(m != NULL);
        cn__mon_table_del(&node->monitors, m);
        monitor_unlink(node, m);    /* frees list with its last monitor */
        monitor_release(node, m, 1);
        done++;
    }
    return done;
}

/*
 * glibc keeps freed small chunks in its heap: after a million monitors were
 * freed, 190 MB stayed resident until malloc_trim (measured, issue 9). It takes
 * about 10 ms for that much, so it runs only after many monitors were freed.
 */
static void give_back_memory(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

int cn__proc_reclaim(cn_node *node)
{
    orphans_drain(node, ORPHAN_BATCH);
    cn_monitor *m;
    for (unsigned n = 0; n < RECLAIM_BATCH && (m = node->doomed_monitors) != NULL; n++) {
        node->doomed_monitors = m->t_next;
        free(m);
        node->monitors_freed++;
    }
    /* The memory goes back once, when all of it is free. */
    if (node->doomed_monitors != NULL || node->orphans != NULL)
        return 1;
    if (node->monitors_freed >= TRIM_AFTER) {
        node->monitors_freed = 0;
        give_back_memory();
    }
    return 0;
}

void cn__proc_conn_lost(cn_node *node, cn_link **links, cn_monitor_list *monitors)
{
    /* The monitors leave a batch per turn; until then nothing is sent for them, nothing finds them. */
    if (monitors->count == 0) {
        free(monitors);
    } else {
        monitors->orphan = 1;
        monitors->next_orphan = node->orphans;
        node->orphans = monitors;
        cn__node_wake(node);
    }
    char reason[32];
    size_t rlen = cn_term_atom(reason, "noconnection");
    /* Take the head each time: an exit signal may end a process and drop more links. */
    cn_link *l;
    while ((l = *links) != NULL) {
        cn_proc *p = l->local;
        erlang_pid from;
        cn__peer_to_pid(node, &l->other, &from);
        link_drop(l);
        cn__proc_exit_signal(p, &from, reason, rlen, 1);
    }
}

/* ---- Exit ---- */

/* Every monitor of the dying p gets DOWN (MONITOR_P_EXIT) with the reason. */
static void notify_monitors(cn_proc *p, const erlang_pid *self, const char *reason, size_t len)
{
    cn_monitor *m;
    while ((m = p->monitors) != NULL) {
        /* A lost connection's monitor has no one to tell (and its connection is freed). */
        if (!m->route->orphan)
            cn__dist_monitor_exit(m->key.conn, m, self, p->name, reason, len);
        monitor_drop(p->node, m);
    }
}

/* Every process linked to the dying p gets the exit signal; a local one loses its half of the link. */
static void notify_links(cn_proc *p, const erlang_pid *self, const char *reason, size_t len)
{
    cn_node *node = p->node;
    cn_link *l;
    while ((l = p->links) != NULL) {
        cn_peer_pid other = l->other;
        link_drop(l);
        if (other.conn) {
            cn__dist_exit(other.conn, DOP_EXIT, self, &other, reason, len);
            continue;
        }
        cn_proc *o = NULL;
        HASH_FIND(hh, node->procs, &other.num, sizeof other.num, o);
        if (o) {
            cn_peer_pid back = {NULL, p->num, 0, node->creation};
            cn__link_remove(o, &back);
            cn__proc_enqueue(node, o->num, p->num, CN_LMSG_EXIT_LINK, reason, len);
        }
    }
}

static void proc_finish(cn_proc *p, const char *reason, size_t len)
{
    cn_node *node = p->node;
    /* A process ends once: only then does it become a zombie, freed once. */
    assert(!p->dead);
    char normal[16];
    if (reason == NULL) {
        len = cn_term_atom(normal, "normal");
        reason = normal;
    }
    p->dead = 1;
    if (p->name[0] != '\0')
        HASH_DELETE(hh_name, node->names, p);
    erlang_pid self;
    cn_proc_pid(p, &self);
    notify_monitors(p, &self, reason, len);
    notify_links(p, &self, reason, len);
    HASH_DELETE(hh, node->procs, p);
    CN__STAT_DEC(node, processes);
    /* Freed at the end of the loop turn: callers up the stack may still hold p. */
    LL_PREPEND2(node->zombies, p, zombie_next);
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
    /* The behaviour's exiting callback may have ended the process itself. */
    if (!p->dead)
        proc_finish(p, reason, len);
}

/* A trapped exit signal becomes the message {'EXIT', From, Reason}. */
static void deliver_exit_message(cn_proc *p, const erlang_pid *from, const char *reason, size_t len)
{
    ei_x_buff x;
    cn_x_new_with_version(&x);
    if (ei_x_encode_tuple_header(&x, 3) < 0 || ei_x_encode_atom(&x, "EXIT") < 0 || ei_x_encode_pid(&x, from) < 0 ||
        ei_x_append_buf(&x, reason + 1, (int)len - 1) < 0)
        cn_oom(len + 64);
    cn__proc_deliver(p, x.buff, (size_t)x.index);
    ei_x_free(&x);
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
        deliver_exit_message(p, from, reason, len);
        return;
    }
    if (reason_is(reason, len, "normal"))
        return;
    die(p, CN_EXIT_SIGNAL, reason, len);
}

/* ---- The local run queue ---- */

void cn__proc_enqueue(cn_node *node, uint32_t to, uint32_t from, int kind, const char *data, size_t len)
{
    cn_local_msg *m = cn_malloc(sizeof *m + len);
    m->to = to;
    m->from = from;
    m->kind = kind;
    m->len = len;
    memcpy(m->data, data, len);
    DL_APPEND(node->run_queue, m);
    cn__node_wake(node);
}

void cn__proc_run_queue(cn_node *node, unsigned budget)
{
    cn_local_msg *m;
    while ((m = node->run_queue) != NULL && budget-- > 0) {
        DL_DELETE(node->run_queue, m);
        cn_proc *p = NULL;
        HASH_FIND(hh, node->procs, &m->to, sizeof m->to, p);
        if (p && !p->dead) {
            if (m->kind == CN_LMSG_MESSAGE) {
                cn__proc_deliver(p, m->data, m->len);
            } else {
                erlang_pid from;
                cn_peer_pid pp = {NULL, m->from, 0, node->creation};
                cn__peer_to_pid(node, &pp, &from);
                cn__proc_exit_signal(p, &from, m->data, m->len, m->kind == CN_LMSG_EXIT_LINK);
            }
        }
        free(m);
    }
}

void cn__proc_free_zombies(cn_node *node)
{
    cn_proc *p;
    while ((p = node->zombies) != NULL) {
        assert(p->dead && p->links == NULL && p->monitors == NULL);
        node->zombies = p->zombie_next;
        free(p);
    }
}

void cn__proc_init(cn_node *node)
{
    node->next_num = 1;
    cn__mon_table_init(&node->monitors, random_seed(node));
}

void cn__proc_free_all(cn_node *node)
{
    cn_local_msg *m, *tmp;
    DL_FOREACH_SAFE(node->run_queue, m, tmp)
        free(m);
    node->run_queue = NULL;
    cn__proc_free_zombies(node);
    cn__alias_free_all(node);
    /* The name table lives inside the processes: clear it before they are freed. */
    HASH_CLEAR(hh_name, node->names);
    while (orphans_drain(node, UINT_MAX) > 0)
        ;
    cn_proc *p, *ptmp;
    HASH_ITER(hh, node->procs, p, ptmp) {
        /* Their connections are gone, and with them every remote link and monitor. */
        assert(p->monitors == NULL);
        while (p->links != NULL) {
            assert(p->links->route == NULL);
            link_drop(p->links);
        }
        HASH_DELETE(hh, node->procs, p);
        free(p);
    }
    assert(node->stats.monitors == 0);
    cn__mon_table_free(&node->monitors);
    cn_monitor *fm;
    while ((fm = node->free_monitors) != NULL) {
        node->free_monitors = fm->t_next;
        free(fm);
    }
    node->free_monitor_count = 0;
    while ((fm = node->doomed_monitors) != NULL) {
        node->doomed_monitors = fm->t_next;
        free(fm);
    }
}

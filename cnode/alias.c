/*
 * The caller's side of a call: monitors this node's processes hold on remote
 * registered names, and the aliases that come with them.
 *
 * Since OTP 24 gen:call to a remote server does
 *     Mref = erlang:monitor(process, {Name, Node}, [{alias, demonitor}]),
 *     {Name, Node} ! {'$gen_call', {self(), [alias | Mref]}, Request}
 * and, after the reply, erlang:demonitor(Mref, [flush]). On the wire: MONITOR_P,
 * REG_SEND, and DEMONITOR_P; the server's reply comes back to the alias Mref
 * (ALIAS_SEND, or ALTACT_SIG_SEND on OTP 28+). This file gives a local process
 * the same three steps, so a C program (the load generator, build/cnode-load)
 * can call a remote gen_server exactly as an Elixir caller does.
 *
 * An alias is an entry in node->aliases, keyed by the reference's 64-bit
 * counter (cn_node_make_ref), holding the pid number of its process. A message
 * to an active alias goes to that process's ops->message; one to an inactive
 * alias, or to one whose process has exited, is dropped, as the BEAM drops it.
 * Entries are recycled, so a steady stream of calls allocates nothing.
 *
 * The alias also keeps the monitor: the connection it went through and the
 * name. When that connection is lost, each such process gets {'DOWN', Ref,
 * process, {Name, Node}, noconnection}, as erlang:monitor delivers it, and a
 * caller learns at once that no reply will come (cn__alias_conn_lost). A
 * MONITOR_P_EXIT from the server's node (it died, or the name is not
 * registered) is delivered as erlang:monitor would deliver it (dist_recv.c).
 */
#include <stdlib.h>
#include <string.h>

#include "cnode/error.h"
#include "cnode/mem.h"
#include "cnode/node_int.h"
#include "cnode/protocol.h"

/* Spare entries kept for reuse: as for monitors, calls in flight never allocate. */
#define ALIAS_SPARE 1024

/* Registered names up to this long are kept in the entry; a longer one is allocated. */
#define NAME_INLINE 48

struct cn_alias {
    UT_hash_handle hh;
    uint64_t id;        /* the reference's counter, as cn_node_make_ref made it */
    uint32_t proc;      /* the pid number of the process it reaches */
    const cn_conn *conn; /* the monitor's connection (compared, never followed), or NULL */
    char *name;         /* the monitored name: short_name, or allocated */
    char short_name[NAME_INLINE];
    cn_alias *next;     /* the free list, or a lost connection's batch */
};

/* The counter of a reference this node made, or 0 for any other reference. */
static uint64_t ref_id(const cn_node *node, const erlang_ref *ref)
{
    if (ref->len != 3 || ref->creation != node->creation || strcmp(ref->node, node->name) != 0)
        return 0;
    return (uint64_t)ref->n[0] | (uint64_t)ref->n[1] << 18 | (uint64_t)ref->n[2] << 50;
}

static cn_alias *alias_find(cn_node *node, const erlang_ref *ref)
{
    uint64_t id = ref_id(node, ref);
    cn_alias *a = NULL;
    if (id != 0)
        HASH_FIND(hh, node->aliases, &id, sizeof id, a);
    return a;
}

/*
 * uthash frees a table whose last entry goes, and allocates it again for the
 * next: a caller with one call in flight would pay both on every call. An
 * entry with id 0, which no reference of ours has, keeps the table.
 */
static void alias_anchor(cn_node *node)
{
    cn_alias *anchor = cn_calloc(1, sizeof *anchor);
    HASH_ADD(hh, node->aliases, id, sizeof anchor->id, anchor);
}

static void alias_add(cn_proc *p, const erlang_ref *ref, const cn_conn *c, const char *name)
{
    cn_node *node = p->node;
    if (node->aliases == NULL)
        alias_anchor(node);
    cn_alias *a = node->free_aliases;
    if (a != NULL) {
        node->free_aliases = a->next;
        node->free_alias_count--;
    } else {
        a = cn_malloc(sizeof *a);
    }
    a->id = ref_id(node, ref);
    a->proc = p->num;
    a->conn = c;
    size_t n = strlen(name) + 1;
    a->name = n <= sizeof a->short_name ? a->short_name : cn_malloc(n);
    memcpy(a->name, name, n);
    HASH_ADD(hh, node->aliases, id, sizeof a->id, a);
}

/* An entry out of the table goes to the spares, or is freed. */
static void alias_recycle(cn_node *node, cn_alias *a)
{
    if (a->name != a->short_name)
        free(a->name);
    a->name = a->short_name;
    if (node->free_alias_count >= ALIAS_SPARE) {
        free(a);
        return;
    }
    a->next = node->free_aliases;
    node->free_aliases = a;
    node->free_alias_count++;
}

static void alias_drop(cn_node *node, cn_alias *a)
{
    HASH_DELETE(hh, node->aliases, a);
    alias_recycle(node, a);
}

/* MONITOR_P or DEMONITOR_P from p to name on node, with ref, through *c. */
static int monitor_op(cn_proc *p, int op, const char *name, const char *nodename, const erlang_ref *ref,
                      cn_conn **c)
{
    *c = cn__conn_find(p->node, nodename);
    if (*c == NULL)
        return CN_ENOCONN;
    erlang_pid self;
    cn_proc_pid(p, &self);
    return cn__dist_monitor_p(*c, op, &self, name, ref);
}

int cn_proc_monitor_name(cn_proc *p, const char *name, const char *nodename, erlang_ref *ref)
{
    cn_node_make_ref(p->node, ref);
    cn_conn *c;
    int rc = monitor_op(p, DOP_MONITOR_P, name, nodename, ref, &c);
    if (rc == 0)
        alias_add(p, ref, c, name);
    return rc;
}

int cn_proc_demonitor_name(cn_proc *p, const char *name, const char *nodename, const erlang_ref *ref)
{
    cn_alias *a = alias_find(p->node, ref);
    if (a != NULL && a->proc == p->num)
        alias_drop(p->node, a);
    cn_conn *c;
    return monitor_op(p, DOP_DEMONITOR_P, name, nodename, ref, &c);
}

/*
 * The live process an active alias reaches, or NULL. An alias whose process has
 * exited goes now: nothing can reach it again.
 */
static cn_proc *alias_target(cn_node *node, cn_alias *a)
{
    cn_proc *p = NULL;
    HASH_FIND(hh, node->procs, &a->proc, sizeof a->proc, p);
    if (p == NULL || p->dead) {
        alias_drop(node, a);
        return NULL;
    }
    return p;
}

int cn__alias_deliver(cn_node *node, const erlang_ref *ref, const char *msg, size_t len)
{
    cn_alias *a = alias_find(node, ref);
    cn_proc *p = a != NULL ? alias_target(node, a) : NULL;
    if (p == NULL)
        return CN_ENOPROC;
    node->stats.messages_in++;
    cn__proc_deliver(p, msg, len);
    return 0;
}

int cn__alias_down(cn_node *node, const erlang_ref *ref, const char *msg, size_t len)
{
    cn_alias *a = alias_find(node, ref);
    cn_proc *p = a != NULL ? alias_target(node, a) : NULL;
    if (p == NULL)
        return CN_ENOPROC;
    /* {alias, demonitor}: the DOWN ends the monitor, and with it the alias. */
    alias_drop(node, a);
    cn__proc_deliver(p, msg, len);
    return 0;
}

void cn__alias_down_head(ei_x_buff *x, const erlang_ref *ref)
{
    cn_x_new_with_version(x);
    ei_x_encode_tuple_header(x, 5);
    ei_x_encode_atom(x, "DOWN");
    ei_x_encode_ref(x, ref);
    ei_x_encode_atom(x, "process");
}

/* {'DOWN', Ref, process, {Name, Node}, noconnection} to a's process, if it lives. */
static void down_noconnection(cn_node *node, const cn_alias *a, const char *peer)
{
    cn_proc *p = NULL;
    HASH_FIND(hh, node->procs, &a->proc, sizeof a->proc, p);
    if (p == NULL || p->dead)
        return;
    erlang_ref ref;
    cn__node_ref(node, a->id, &ref);
    ei_x_buff x;
    cn__alias_down_head(&x, &ref);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom_as(&x, a->name, ERLANG_UTF8, ERLANG_UTF8);
    ei_x_encode_atom_as(&x, peer, ERLANG_UTF8, ERLANG_UTF8);
    ei_x_encode_atom(&x, "noconnection");
    cn__proc_deliver(p, x.buff, (size_t)x.index);
    ei_x_free(&x);
}

/*
 * The monitors through c are taken out of the table first, then their DOWNs
 * delivered: a process's message callback may monitor or demonitor again
 * (c is no longer found by name, so nothing new goes through it).
 */
void cn__alias_conn_lost(cn_node *node, const cn_conn *c, const char *peer)
{
    cn_alias *a, *tmp, *lost = NULL;
    HASH_ITER(hh, node->aliases, a, tmp) {
        if (a->conn == c) {
            HASH_DELETE(hh, node->aliases, a);
            a->next = lost;
            lost = a;
        }
    }
    while ((a = lost) != NULL) {
        lost = a->next;
        down_noconnection(node, a, peer);
        alias_recycle(node, a);
    }
}

void cn__alias_free_all(cn_node *node)
{
    cn_alias *a, *tmp;
    HASH_ITER(hh, node->aliases, a, tmp) {
        HASH_DELETE(hh, node->aliases, a);
        if (a->name != NULL && a->name != a->short_name)
            free(a->name);
        free(a);
    }
    while ((a = node->free_aliases) != NULL) {
        node->free_aliases = a->next;
        free(a);
    }
    node->free_alias_count = 0;
}

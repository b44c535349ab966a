/*
 * Replies held for the journal's group commit (genserver/journal.h).
 *
 * A server with a journal (gs_set_journal) does not send a reply while its
 * journal has records not yet durable: the reply may acknowledge one of them.
 * The replies are kept here, compactly (the caller's pid and alias as their
 * fields, then the encoded message). At the end of the loop turn, before the
 * node writes its output, the node's flush hook commits the journals of all
 * its journaled servers (the group): it writes each journal's records, then
 * starts the syncs (power mode), then releases what is durable. The turn's
 * replies are tagged with their commit's number and wait until the journal
 * says that commit is durable: at once in crash mode, and in power mode at
 * once for the journal that synced in the loop, else when the fdatasync on the
 * thread pool that covers it ends (on_sync). When the commit or the sync
 * fails, each gets {Tag, {error, not_durable}} instead: nothing that could not
 * be made durable is acknowledged. Replies to calls that changed nothing are
 * held too, so that no caller sees a state the disk does not have yet, and the
 * replies leave in the order they were made.
 *
 * Why one hook for the node, not one per server: a sync in the loop saves a
 * power-mode turn the two cross-thread wakes of a pool sync (journal.h), but
 * two of them would run one after the other. The syncs are decided once every
 * journal is written: one journal that needs one and has none running syncs
 * in the loop (in turn, when several could), after the others' have started
 * on the pool, so two busy servers wait for about one fdatasync per turn, not
 * two.
 *
 * A reply that echoes a large part of its request (a 100 MB tag) has holes
 * where those bytes stay in the request's blob (genserver.c, put_echo): the
 * entry keeps the holes and a reference to the blob, not a copy, so holding a
 * reply never costs a turn the time to touch that much memory.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

#include "cnode/buf.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "genserver/genserver_int.h"

/* The tag of a reply {Tag, Reply} starts after the version byte and the tuple header (gs__begin_reply). */
#define TAG_AT 3
/*
 * Entry: [u32 length of the rest][u64 commit][u8 has_alias][u32 tag_len]
 * [u8 nholes][the holes, then the blob pointer, if any][pid][alias if any][message],
 * the pid and alias as put_from keeps them.
 */
#define ENTRY_HEAD 18
#define ALL UINT64_MAX

/*
 * The caller's pid and alias are kept as their fields: the node's name (a
 * 16-bit length and the bytes) and the numbers. ei_encode_pid/ei_decode_pid
 * did the same through the external format, with the atom's UTF-8 checks both
 * ways, and the entry was built in ten appends: together about 1,700 of the
 * 18,500 instructions a crash-mode :increment cost (callgrind). Each entry is
 * now written in place after one reserve.
 */
static char *put_node(char *w, const char *node, size_t n)
{
    w[0] = (char)(n >> 8);
    w[1] = (char)n;
    memcpy(w + 2, node, n);
    return w + 2 + n;
}

#define PID_INTS (3 * sizeof(unsigned int))
#define REF_INTS (sizeof(int) + 6 * sizeof(unsigned int))

static char *put_from(char *w, const gs_from *from, size_t pid_node, size_t ref_node)
{
    w = put_node(w, from->pid.node, pid_node);
    unsigned int pid[3] = {from->pid.num, from->pid.serial, from->pid.creation};
    memcpy(w, pid, PID_INTS);
    w += PID_INTS;
    if (!from->has_alias)
        return w;
    w = put_node(w, from->alias.node, ref_node);
    memcpy(w, &from->alias.len, sizeof(int));
    memcpy(w + sizeof(int), from->alias.n, 5 * sizeof(unsigned int));
    memcpy(w + sizeof(int) + 5 * sizeof(unsigned int), &from->alias.creation, sizeof(unsigned int));
    return w + REF_INTS;
}

/* A node name as put_node kept it, into node (MAXATOMLEN_UTF8 bytes); returns the bytes it took. */
static size_t take_node(const char *p, char *node)
{
    size_t n = cn_get_u16(p);
    memcpy(node, p + 2, n);
    node[n] = '\0';
    return 2 + n;
}

/* Fills from's pid and alias as put_from kept them; returns the bytes they took. */
static size_t take_from(const char *p, gs_from *from)
{
    const char *q = p + take_node(p, from->pid.node);
    unsigned int pid[3];
    memcpy(pid, q, PID_INTS);
    q += PID_INTS;
    from->pid.num = pid[0];
    from->pid.serial = pid[1];
    from->pid.creation = pid[2];
    if (!from->has_alias)
        return (size_t)(q - p);
    q += take_node(q, from->alias.node);
    memcpy(&from->alias.len, q, sizeof(int));
    memcpy(from->alias.n, q + sizeof(int), 5 * sizeof(unsigned int));
    memcpy(&from->alias.creation, q + sizeof(int) + 5 * sizeof(unsigned int), sizeof(unsigned int));
    return (size_t)(q + REF_INTS - p);
}

/* The holes of the reply in s->out and a reference to their blob, after the entry's head. */
static char *put_holes(gs_server *s, char *w, int nholes)
{
    if (nholes == 0)
        return w;
    cn_blob *blob = cn_blob_hold(s->msg_blob);
    size_t n = sizeof(gs_hole) * (size_t)nholes;
    memcpy(w, s->holes, n);
    memcpy(w + n, &blob, sizeof blob);
    return w + n + sizeof blob;
}

void gs__hold_reply(gs_server *s, const gs_from *from, const char *msg, size_t len)
{
    cn_buf *h = &s->held;
    int holes = msg == s->out.buff ? s->nholes : 0;
    size_t pid_node = strnlen(from->pid.node, MAXATOMLEN_UTF8 - 1);
    size_t ref_node = from->has_alias ? strnlen(from->alias.node, MAXATOMLEN_UTF8 - 1) : 0;
    size_t size = ENTRY_HEAD + (holes > 0 ? sizeof(gs_hole) * (size_t)holes + sizeof(cn_blob *) : 0) + 2 +
                  pid_node + PID_INTS + (from->has_alias ? 2 + ref_node + REF_INTS : 0) + len;
    cn_buf_reserve(h, size);
    char *e = h->data + h->len, *w = e + ENTRY_HEAD;
    cn_set_u32(e, (uint32_t)(size - 4));
    memset(e + 4, 0, 8);
    e[12] = (char)from->has_alias;
    cn_set_u32(e + 13, (uint32_t)from->tag_len);
    e[17] = (char)holes;
    w = put_holes(s, w, holes);
    w = put_from(w, from, pid_node, ref_node);
    memcpy(w, msg, len);
    assert(w + len == e + size);
    h->len += size;
}

/*
 * {Tag, {error, not_durable}} for a held reply whose message is at msg; a tag
 * left in the blob (a hole right after the tuple header) stays a hole.
 */
static void send_refusal(gs_server *s, const gs_from *from, const char *msg)
{
    ei_x_buff *x = &s->out;
    x->index = 0;
    int tag_hole = s->nholes > 0 && s->holes[0].at == TAG_AT;
    s->nholes = tag_hole;
    ei_x_append_buf(x, msg, TAG_AT + (tag_hole ? 0 : from->tag_len));
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "error");
    ei_x_encode_atom(x, GS_NOT_DURABLE);
    gs__send_now(s, from, x->buff, (size_t)x->index);
}

/* The holes of an entry at p into s (with their blob); returns the bytes they took. */
static size_t take_holes(gs_server *s, const char *p, int nholes)
{
    s->nholes = nholes;
    if (nholes == 0)
        return 0;
    size_t n = sizeof(gs_hole) * (size_t)nholes;
    memcpy(s->holes, p, n);
    memcpy(&s->msg_blob, p + n, sizeof s->msg_blob);
    return n + sizeof s->msg_blob;
}

/* Sends (rc 0) or refuses one entry. */
static void release_entry(gs_server *s, const char *e, int rc)
{
    size_t n = cn_get_u32(e);
    gs_from from;
    from.has_alias = (unsigned char)e[12];
    from.tag_len = (int)cn_get_u32(e + 13);
    const char *p = e + ENTRY_HEAD;
    p += take_holes(s, p, (unsigned char)e[17]);
    const char *msg = p + take_from(p, &from);
    size_t mlen = n + 4 - (size_t)(msg - e);
    from.tag = msg + TAG_AT;
    cn_blob *blob = s->nholes > 0 ? s->msg_blob : NULL;
    if (rc == 0 && s->nholes == 0) {
        gs__send_now(s, &from, msg, mlen);
    } else if (rc == 0) {
        /* send_with_holes sends s->out: the message goes there (it is small: its large parts are the holes). */
        s->out.index = 0;
        ei_x_append_buf(&s->out, msg, (int)mlen);
        gs__send_now(s, &from, s->out.buff, mlen);
    } else {
        send_refusal(s, &from, msg);
    }
    s->nholes = 0;
    s->msg_blob = NULL;
    cn_blob_release(blob);
}

/* Releases, in order, the entries of b whose commit is at most upto; they leave b. */
static void release_until(gs_server *s, cn_buf *b, uint64_t upto, int rc)
{
    size_t off = 0;
    while (off < b->len && cn_get_u64(b->data + off + 4) <= upto) {
        release_entry(s, b->data + off, rc);
        off += 4 + cn_get_u32(b->data + off);
    }
    cn_buf_consume(b, off);
    cn_buf_shrink(b, CN_BUF_KEEP);
}

/* The turn's replies wait for commit seq: tagged and queued behind the earlier ones. */
static void queue_turn(gs_server *s, uint64_t seq)
{
    cn_buf *h = &s->held;
    for (size_t off = 0; off < h->len; off += 4 + cn_get_u32(h->data + off)) {
        cn_set_u32(h->data + off + 4, (uint32_t)(seq >> 32));
        cn_set_u32(h->data + off + 8, (uint32_t)seq);
    }
    /*
     * Nothing waits in crash mode, nor in power mode between syncs: the turn's
     * entries become the waiting list by a swap, not a copy of all of them
     * (with 64 caller nodes that copy was most of the node's memcpy).
     */
    if (s->waiting.len == 0) {
        cn_buf tmp = s->waiting;
        s->waiting = *h;
        *h = tmp;
    } else {
        cn_buf_append(&s->waiting, h->data, h->len);
    }
    cn_buf_reset(h);
    cn_buf_shrink(h, CN_BUF_KEEP);
}

/* A sync ended: what it covered goes; when the journal now refuses, the rest is refused. */
static void on_sync(void *arg, uint64_t synced, int status)
{
    gs_server *s = arg;
    release_until(s, &s->waiting, synced, 0);
    if (status < 0)
        release_until(s, &s->waiting, ALL, status);
}

/*
 * After the turn's write (rc < 0: refused, the journal's error), the turn's
 * replies queue behind their commit and what is durable leaves. Refused: this
 * turn's replies now; those waiting for a sync in flight learn from it, except
 * when the server stops (final), when nothing will come.
 */
static void settle_turn(gs_server *s, int rc, int final)
{
    if (rc < 0) {
        release_until(s, &s->held, ALL, rc);
        if (final)
            release_until(s, &s->waiting, ALL, rc);
        return;
    }
    queue_turn(s, gs_journal_seq(s->journal));
    release_until(s, &s->waiting, gs_journal_synced(s->journal), 0);
}

void gs__settle(gs_server *s)
{
    gs_journal *j = s->journal;
    if (j == NULL)
        return;
    int rc = gs_journal_write(j);
    if (rc >= 0)
        rc = gs_journal_sync_now(j);
    settle_turn(s, rc, 1);
}

/* A node's journaled servers, with the flush hook that commits their journals (the top of this file). */
typedef struct gs__group {
    cn_node_flush_hook hook;
    gs_server *servers;     /* utlist DL through gprev/gnext */
} gs__group;

/*
 * The pool's syncs start first, so that they run while the loop waits for
 * its own. Only a journal with no sync running may sync in the loop: one that
 * waits for a sync in flight gains nothing from the loop doing its next one.
 * The last such journal in the list is taken, and then moved to the front:
 * with two busy servers, each syncs in the loop every other turn, rather than
 * one of them always on the pool (whose callers then wait for the wakes).
 */
static void start_syncs(gs__group *g)
{
    gs_server *s, *in_loop = NULL;
    DL_FOREACH2(g->servers, s, gnext) {
        if (gs_journal_needs_sync(s->journal) && gs_journal_inline_ok(s->journal))
            in_loop = s;
    }
    DL_FOREACH2(g->servers, s, gnext) {
        if (s != in_loop && gs_journal_needs_sync(s->journal))
            (void)gs_journal_sync(s->journal, GS_SYNC_POOL);
    }
    if (in_loop == NULL)
        return;
    (void)gs_journal_sync(in_loop->journal, GS_SYNC_INLINE);
    DL_DELETE2(g->servers, in_loop, gprev, gnext);
    DL_PREPEND2(g->servers, in_loop, gprev, gnext);
}

/*
 * The walks assume that releasing replies stops no server of the group: sends
 * are queued (remote ones for the flush that follows, local ones for the run
 * queue), so nothing runs a server's callbacks from here.
 */
static void group_flush(cn_node_flush_hook *hook)
{
    gs__group *g = hook->data;
    gs_server *s;
    DL_FOREACH2(g->servers, s, gnext)
        (void)gs_journal_write(s->journal);
    start_syncs(g);
    DL_FOREACH2(g->servers, s, gnext)
        settle_turn(s, gs_journal_ready(s->journal), 0);
}

static void join_group(gs_server *s)
{
    cn_node_flush_hook *h = cn_node_find_flush_hook(s->node, group_flush);
    gs__group *g = h != NULL ? h->data : NULL;
    if (g == NULL) {
        g = cn_calloc(1, sizeof *g);
        g->hook.cb = group_flush;
        g->hook.data = g;
        cn_node_add_flush_hook(s->node, &g->hook);
    }
    DL_APPEND2(g->servers, s, gprev, gnext);
    s->group = g;
}

/* The last server out removes the hook and frees the group. */
static void leave_group(gs_server *s)
{
    gs__group *g = s->group;
    DL_DELETE2(g->servers, s, gprev, gnext);
    s->group = NULL;
    if (g->servers != NULL)
        return;
    cn_node_remove_flush_hook(s->node, &g->hook);
    free(g);
}

void gs_set_journal(gs_server *s, gs_journal *j)
{
    if (s->journal != NULL && j != s->journal) {
        gs__settle(s);
        gs_journal_on_sync(s->journal, NULL, NULL);
    }
    if (j != NULL && s->group == NULL)
        join_group(s);
    else if (j == NULL && s->group != NULL)
        leave_group(s);
    if (j != NULL)
        gs_journal_on_sync(j, on_sync, s);
    s->journal = j;
}

/* The blob references of the entries of b, dropped with them. */
static void drop_entries(cn_buf *b)
{
    for (size_t off = 0; off < b->len; off += 4 + cn_get_u32(b->data + off)) {
        const char *e = b->data + off;
        int nholes = (unsigned char)e[17];
        if (nholes > 0) {
            cn_blob *blob;
            memcpy(&blob, e + ENTRY_HEAD + sizeof(gs_hole) * (size_t)nholes, sizeof blob);
            cn_blob_release(blob);
        }
    }
    cn_buf_free(b);
}

void gs__hold_free(gs_server *s)
{
    drop_entries(&s->held);
    drop_entries(&s->waiting);
}

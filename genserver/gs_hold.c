/*
 * Replies held for the journal's group commit (genserver/journal.h).
 *
 * A server with a journal (gs_set_journal) does not send a reply while its
 * journal has records not yet written: the reply may acknowledge one of them.
 * The replies are kept here, compactly (the caller's pid and alias in external
 * format, then the encoded message), and at the end of the loop turn, before
 * the node writes its output, the flush hook commits the journal once and
 * sends them all; when the commit fails, each gets {Tag, {error, not_durable}}
 * instead: nothing that could not be made durable is acknowledged. Replies to
 * calls that changed nothing are held too, so that no caller sees a state the
 * disk does not have yet.
 */
#include <string.h>

#include "cnode/buf.h"
#include "cnode/log.h"
#include "genserver/genserver_int.h"

/* The tag of a reply {Tag, Reply} starts after the version byte and the tuple header (gs__begin_reply). */
#define TAG_AT 3

/* Entry: [u32 length of the rest][u8 has_alias][u32 tag_len][pid][alias if any][message]. */
void gs__hold_reply(gs_server *s, const gs_from *from, const char *msg, size_t len)
{
    cn_buf *h = &s->held;
    size_t start = h->len;
    cn_buf_put_u32(h, 0);
    cn_buf_put_u8(h, (uint8_t)from->has_alias);
    cn_buf_put_u32(h, (uint32_t)from->tag_len);
    cn_buf_reserve(h, 2 * (MAXATOMLEN_UTF8 + 32));
    int i = 0;
    ei_encode_pid(h->data + h->len, &i, &from->pid);
    if (from->has_alias)
        ei_encode_ref(h->data + h->len, &i, &from->alias);
    h->len += (size_t)i;
    cn_buf_append(h, msg, len);
    cn_set_u32(h->data + start, (uint32_t)(h->len - start - 4));
}

/* {Tag, {error, not_durable}} for a held reply whose message is at msg. */
static void send_refusal(gs_server *s, const gs_from *from, const char *msg)
{
    ei_x_buff *x = &s->out;
    x->index = 0;
    ei_x_append_buf(x, msg, TAG_AT + from->tag_len);
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "error");
    ei_x_encode_atom(x, GS_NOT_DURABLE);
    gs__send_now(s, from, x->buff, (size_t)x->index);
}

static void release_held(gs_server *s, int rc)
{
    cn_buf *h = &s->held;
    size_t off = 0;
    while (off < h->len) {
        const char *e = h->data + off;
        size_t n = cn_get_u32(e);
        gs_from from;
        memset(&from, 0, sizeof from);
        from.has_alias = (unsigned char)e[4];
        from.tag_len = (int)cn_get_u32(e + 5);
        int i = 0;
        const char *p = e + 9;
        ei_decode_pid(p, &i, &from.pid);
        if (from.has_alias)
            ei_decode_ref(p, &i, &from.alias);
        const char *msg = p + i;
        size_t mlen = n - 5 - (size_t)i;
        from.tag = msg + TAG_AT;
        if (rc == 0)
            gs__send_now(s, &from, msg, mlen);
        else
            send_refusal(s, &from, msg);
        off += 4 + n;
    }
    cn_buf_reset(h);
    cn_buf_shrink(h, CN_BUF_KEEP);
}

void gs__settle(gs_server *s)
{
    if (s->journal == NULL)
        return;
    int rc = gs_journal_commit(s->journal);
    if (s->held.len > 0)
        release_held(s, rc);
}

static void before_flush(cn_node_flush_hook *hook)
{
    gs__settle(hook->data);
}

void gs_set_journal(gs_server *s, gs_journal *j)
{
    if (s->journal != NULL && j != s->journal)
        gs__settle(s);
    if (j != NULL && !s->hooked) {
        s->hook.cb = before_flush;
        s->hook.data = s;
        cn_node_add_flush_hook(s->node, &s->hook);
        s->hooked = 1;
    } else if (j == NULL && s->hooked) {
        cn_node_remove_flush_hook(s->node, &s->hook);
        s->hooked = 0;
    }
    s->journal = j;
}

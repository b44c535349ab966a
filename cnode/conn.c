/*
 * Distribution connections as a state machine, on any transport (transport.h):
 * the handshake, frames in, batched frames out, ticks. Nothing here knows
 * sockets (tcp.c) or what a frame means (dist_recv.c, told through
 * node->conn_events).
 *
 * States: CONNECTING -> HANDSHAKE -> UP, and CLOSING from any of them
 * (node_int.h). A connection is freed only from a loop callback, once both its
 * transport (cn_conn_closed) and its handshake timer have let go, so no caller
 * up the stack ever holds a freed connection.
 *
 * Reading: bytes are appended to the connection's buffer (rbuf); a transport
 * that reads in place reads straight into it. Every complete frame in the
 * buffer is handled in place, without a copy, and what is left (a partial
 * frame) moves to the front for the next read. A frame larger than BIG_FRAME
 * is read into a blob of its announced length instead (cnode/blob.h): the
 * reads, a transport's chunk at a time, fill it in place, so no loop turn
 * copies or first touches more than a read's worth of it (doubling rbuf would
 * copy tens of MB in one turn), and whoever echoes a large part of it sends
 * that part from the blob (cn_proc_msg_blob). rbuf itself stays small.
 *
 * Writing: frames are appended to wbuf during a loop turn; at the end of the turn
 * (sched.c) each connection with output does one write of everything queued.
 * While a write is in flight new frames collect in wbuf, and the two buffers
 * swap when it completes, so buffers are reused and never copied. Every batch
 * passes through wflight, which shrinks back to CN_BUF_KEEP once written, so a
 * large message's room is not kept either. A frame may hold segments: large
 * pieces that stay in their blobs (cn__frame_segment). A batch is then written
 * as its pieces in order, one transport write each (write_pieces), and each
 * blob is released once its piece is written.
 *
 * Names, addresses and anything else a peer chose reach the log only through
 * cn_log_escape (esc below).
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "cnode/node_int.h"
#include "cnode/protocol.h"

/* A frame larger than this is taken as garbage rather than buffered. */
#define MAX_FRAME (256u * 1024 * 1024)
/*
 * The room the read buffer keeps once a large frame has been handled: well
 * above what reads of 64 KiB at the end of a partial frame need, so ordinary
 * traffic never reallocates it, and far below what one large frame took.
 */
#define RBUF_KEEP (256u * 1024)
/*
 * A frame larger than this is read into a blob of its own (see the top): it is
 * as much as rbuf keeps, so rbuf never grows for a large frame.
 */
#define BIG_FRAME RBUF_KEEP

static void hs_timeout(uv_timer_t *t);
static void conn_close(cn_conn *c, const char *why);
static void flush(cn_conn *c);

static uint32_t random32(void *ctx)
{
    (void)ctx;
    uint32_t v;
    if (uv_random(NULL, NULL, &v, sizeof v, 0, NULL) != 0)
        v = (uint32_t)rand();
    return v;
}

/* The only moves: CONNECTING -> HANDSHAKE -> UP, and any of them -> CLOSING. */
static void set_state(cn_conn *c, int to)
{
    assert(c->state != CN_CONN_CLOSING);
    assert(to == CN_CONN_CLOSING || to == c->state + 1);
    c->state = to;
}

cn_conn *cn_conn_new(cn_node *node, const cn_transport *tp, int outgoing)
{
    assert(!node->closing);
    cn_conn *c = cn_calloc(1, sizeof *c);
    c->node = node;
    c->tp = tp;
    c->outgoing = outgoing;
    c->state = outgoing ? CN_CONN_CONNECTING : CN_CONN_HANDSHAKE;
    cn_buf_init(&c->rbuf);
    cn_buf_init(&c->wbuf);
    cn_buf_init(&c->wflight);
    c->monitors = cn_calloc(1, sizeof *c->monitors);
    c->last_read = c->last_write = uv_now(node->loop);
    /* The timer covers the dialing too, as erl's net_setuptime does. */
    uv_timer_init(node->loop, &c->hs_timer);
    c->hs_timer.data = c;
    uv_timer_start(&c->hs_timer, hs_timeout, node->handshake_timeout_ms, 0);
    c->holds = 2;
    DL_PREPEND2(node->all_conns, c, all_prev, all_next);
    node->stats.pending++;
    return c;
}

void cn__conn_set_owner(cn_conn *c, const char *dialed, cn__conn_lost_cb cb, void *arg)
{
    snprintf(c->dialed, sizeof c->dialed, "%s", dialed);
    c->lost_cb = cb;
    c->lost_arg = arg;
}

cn_conn *cn__conn_find(cn_node *node, const char *peer_name)
{
    cn_conn *c = NULL;
    HASH_FIND_STR(node->conns, peer_name, c);
    return c;
}

static const char *who(const cn_conn *c)
{
    return *c->peer_name ? c->peer_name : c->addr;
}

/* s escaped for a log line, in buf (CN_LOG_ESC_MAX bytes). */
static const char *esc(char *buf, const char *s)
{
    return cn_log_escape_str(buf, CN_LOG_ESC_MAX, s);
}

/*
 * The accepting side's answer once it knows who is calling. A simultaneous
 * connect (we are dialing the same node) is settled as erts does: the node with
 * the greater name keeps its own attempt.
 */
static const char *status_for(void *ctx, const char *peer)
{
    cn_conn *self = ctx;
    cn_node *node = self->node;
    if (strcmp(peer, node->name) == 0)
        return "not_allowed";
    cn_conn *c;
    DL_FOREACH2(node->all_conns, c, all_next) {
        if (c == self || !c->outgoing || c->state == CN_CONN_CLOSING || c->state == CN_CONN_UP)
            continue;
        if (strcmp(c->dialed, peer) == 0) {
            if (strcmp(node->name, peer) > 0)
                return "nok";
            conn_close(c, "simultaneous connect: the peer's attempt wins");
            return "ok_simultaneous";
        }
    }
    return "ok";
}

static void mark_dirty(cn_conn *c)
{
    assert(c->state != CN_CONN_CLOSING);
    if (c->dirty)
        return;
    c->dirty = 1;
    DL_PREPEND2(c->node->dirty, c, dirty_prev, dirty_next);
    cn__node_wake(c->node);
}

void cn_conn_start_handshake(cn_conn *c, const char *expect_peer)
{
    cn_node *node = c->node;
    cn_hs_config cfg = {
        .role = c->outgoing ? CN_HS_CONNECT : CN_HS_ACCEPT,
        .our_name = node->name,
        .cookie = node->cookie,
        .our_flags = CN_DFLAGS,
        .our_creation = node->creation,
        .random32 = random32,
        .random_ctx = NULL,
        .status_for = status_for,
        .status_ctx = c,
        .expect_peer = expect_peer,
        /* We only dial a node we have no live connection to, so a stale one on its side may go. */
        .alive_continue = 1,
        .len4 = c->tp->hs_len4,
    };
    /* cn_node_new checked our name and cookie, so the handshake takes them. */
    int rc = cn_hs_init(&c->hs, &cfg);
    assert(rc == 0);
    if (c->outgoing) {
        set_state(c, CN_CONN_HANDSHAKE);
        rc = cn_hs_start(&c->hs, &c->wbuf);
        assert(rc == 0);
        mark_dirty(c);
    } else {
        assert(c->state == CN_CONN_HANDSHAKE);
    }
    (void)rc;
}

void cn__conn_connected(cn_conn *c)
{
    cn_conn_start_handshake(c, *c->dialed ? c->dialed : NULL);
}

static void conn_up(cn_conn *c)
{
    cn_node *node = c->node;
    snprintf(c->peer_name, sizeof c->peer_name, "%s", c->hs.peer_name);
    c->peer_flags = c->hs.peer_flags;
    c->peer_creation = c->hs.peer_creation;

    cn_conn *old = cn__conn_find(node, c->peer_name);
    if (old != NULL)
        conn_close(old, "replaced by a new connection from the same node");
    set_state(c, CN_CONN_UP);
    HASH_ADD_STR(node->conns, peer_name, c);
    CN__STAT_DEC(node, pending);
    node->stats.connections++;
    uv_timer_stop(&c->hs_timer);
    c->last_read = c->last_write = uv_now(node->loop);
    char e1[CN_LOG_ESC_MAX], e2[CN_LOG_ESC_MAX];
    CN_INFO("conn", "connected to %s (%s)%s", esc(e1, c->peer_name), esc(e2, c->addr),
            (c->peer_flags & DFLAG_ALIAS) ? "" : ", peer has no ALIAS: replies go to pids");
}

/* Feeds rbuf to the handshake. Returns the bytes it took, or -1 when c is closing. */
static long process_handshake(cn_conn *c)
{
    size_t before = c->wbuf.len;
    int n = cn_hs_feed(&c->hs, c->rbuf.data, c->rbuf.len, &c->wbuf);
    if (c->wbuf.len != before)
        mark_dirty(c);
    if (n < 0) {
        cn_metrics_refused(n);
        /* The handshake's error text escapes what the peer sent in it. */
        const char *peer = c->hs.peer_name;
        char e1[CN_LOG_ESC_MAX], e2[CN_LOG_ESC_MAX];
        CN_WARN("handshake", "refused %s (%s): %s", *peer ? esc(e1, peer) : "unknown node", esc(e2, c->addr),
                cn_hs_error(&c->hs));
        /* Let the refusal status reach the peer before the transport goes. */
        flush(c);
        if (c->state != CN_CONN_CLOSING)
            conn_close(c, NULL);
        return -1;
    }
    if (cn_hs_done(&c->hs))
        conn_up(c);
    return n;
}

/* Hands one frame up; a malformed one drops the connection. */
static void handle_frame(cn_conn *c, const char *f, uint32_t flen)
{
    c->node->stats.frames_in++;
    int rc = c->node->conn_events->frame(c, f, flen);
    if (rc < 0) {
        char e1[CN_LOG_ESC_MAX];
        CN_WARN("dist", "malformed frame from %s: %s; dropping the connection", esc(e1, c->peer_name),
                cn_strerror(rc));
        if (c->state != CN_CONN_CLOSING)
            conn_close(c, NULL);
    }
}

/* ---- Large frames, read into a blob (see the top) ---- */

/*
 * The frame of flen bytes at rbuf[off] is large and partial: what has come of
 * it moves to a blob of its full length, where the reads go from now on.
 */
static void big_begin(cn_conn *c, size_t off, uint32_t flen)
{
    size_t have = c->rbuf.len - off - 4;
    assert(have < flen);
    c->big = cn_blob_new(flen);
    c->big_have = have;
    memcpy(cn_blob_data(c->big), c->rbuf.data + off + 4, have);
    cn_buf_reset(&c->rbuf);
    cn_buf_shrink(&c->rbuf, RBUF_KEEP);
}

/* The large frame is complete: handled from its blob, which its readers may keep. */
static void big_end(cn_conn *c)
{
    cn_blob *b = c->big;
    c->big = NULL;
    c->node->delivering_blob = b;
    handle_frame(c, cn_blob_data(b), (uint32_t)cn_blob_len(b));
    c->node->delivering_blob = NULL;
    cn_blob_release(b);
}

/* n more bytes of the large frame are in its blob. */
static void big_read(cn_conn *c, size_t n)
{
    assert(n <= cn_blob_len(c->big) - c->big_have);
    c->last_read = uv_now(c->node->loop);
    c->big_have += n;
    if (c->big_have == cn_blob_len(c->big))
        big_end(c);
}

/* Copies what fits of data into the large frame's blob; returns the bytes taken. */
static size_t big_feed(cn_conn *c, const char *data, size_t len)
{
    size_t left = cn_blob_len(c->big) - c->big_have;
    size_t n = len < left ? len : left;
    memcpy(cn_blob_data(c->big) + c->big_have, data, n);
    big_read(c, n);
    return n;
}

/* Handles every complete frame in rbuf from off on; keeps a partial one for later. */
static void process_frames(cn_conn *c, size_t off)
{
    while (c->state == CN_CONN_UP) {
        size_t avail = c->rbuf.len - off;
        if (avail < 4)
            break;
        uint32_t flen = cn_get_u32(c->rbuf.data + off);
        if (flen == 0) {
            off += 4; /* a tick */
            continue;
        }
        if (flen > MAX_FRAME) {
            char e1[CN_LOG_ESC_MAX];
            CN_WARN("conn", "%s sent a frame of %u bytes; dropping the connection", esc(e1, c->peer_name), flen);
            conn_close(c, NULL);
            return;
        }
        if (avail - 4 < flen) {
            if (flen > BIG_FRAME) {
                big_begin(c, off, flen);
                return;
            }
            break;
        }
        handle_frame(c, c->rbuf.data + off + 4, flen);
        off += 4 + (size_t)flen;
    }
    if (c->state != CN_CONN_CLOSING) {
        cn_buf_consume(&c->rbuf, off);
        cn_buf_shrink(&c->rbuf, RBUF_KEEP);
    }
}

/* New bytes are at the end of rbuf. */
static void received(cn_conn *c)
{
    c->last_read = uv_now(c->node->loop);
    size_t off = 0;
    if (c->state == CN_CONN_HANDSHAKE) {
        long n = process_handshake(c);
        if (n < 0)
            return;
        off = (size_t)n;
        if (c->state == CN_CONN_HANDSHAKE) {
            cn_buf_consume(&c->rbuf, off);
            return;
        }
    }
    process_frames(c, off);
}

/* A transport reads only between its start and its close, and only after the dial. */
static void assert_reading(const cn_conn *c)
{
    assert(c->state == CN_CONN_HANDSHAKE || c->state == CN_CONN_UP);
    assert(c->hs.cfg.our_name != NULL);
    (void)c;
}

void cn_conn_feed(cn_conn *c, const char *data, size_t len)
{
    assert_reading(c);
    if (c->big != NULL) {
        while (c->big != NULL && len > 0) {
            size_t n = big_feed(c, data, len);
            data += n;
            len -= n;
        }
        if (len == 0 || c->state != CN_CONN_UP)
            return;
    }
    int rc = cn_buf_append(&c->rbuf, data, len);
    assert(rc == 0);
    (void)rc;
    received(c);
}

/*
 * At most want bytes: a read hands the node no more than the transport's
 * chunk, so neither a large frame's pages nor a flood of small frames (a read
 * of 128 KiB of MONITOR_Ps took up to 55 ms here) take more of a turn than that.
 */
void cn_conn_read_buf(cn_conn *c, size_t want, char **base, size_t *len)
{
    assert_reading(c);
    if (c->big != NULL) {
        size_t left = cn_blob_len(c->big) - c->big_have;
        *base = cn_blob_data(c->big) + c->big_have;
        *len = left < want ? left : want;
        return;
    }
    int rc = cn_buf_reserve(&c->rbuf, want);
    assert(rc == 0);
    (void)rc;
    *base = c->rbuf.data + c->rbuf.len;
    *len = want;
}

void cn_conn_read_done(cn_conn *c, size_t n)
{
    assert_reading(c);
    if (c->big != NULL) {
        big_read(c, n);
        return;
    }
    assert(n <= c->rbuf.cap - c->rbuf.len);
    c->rbuf.len += n;
    received(c);
}

/*
 * The peer went before the handshake ended: once it has said who it is, that is
 * worth a line (a port probe that says nothing is not).
 */
static void handshake_abandoned(const cn_conn *c, int status)
{
    const char *peer = c->hs.peer_name;
    if (*peer == '\0')
        return;
    char e1[CN_LOG_ESC_MAX], e2[CN_LOG_ESC_MAX];
    CN_INFO("handshake", "%s (%s) left during the handshake: %s", esc(e1, peer), esc(e2, c->addr),
            status == 0 ? "the peer closed the connection" : cn_strerror(status));
}

void cn_conn_ended(cn_conn *c, int status)
{
    switch (c->state) {
    case CN_CONN_CONNECTING: {
        char e1[CN_LOG_ESC_MAX];
        CN_INFO("conn", "cannot reach %s: %s", esc(e1, *c->dialed ? c->dialed : c->addr), cn_strerror(status));
        conn_close(c, NULL);
        return;
    }
    case CN_CONN_UP:
        conn_close(c, status == 0 ? "the peer closed it" : cn_strerror(status));
        return;
    case CN_CONN_HANDSHAKE:
        handshake_abandoned(c, status);
        conn_close(c, NULL);
        return;
    default:
        assert(!"a transport reported an end after its close");
    }
}

/* ---- Segments: pieces of a batch that stay in their blobs ---- */

static void segs_push(cn__segs *s, size_t at, const char *data, size_t len, cn_blob *blob)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 4;
        s->v = cn_realloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = (cn__seg){at, data, len, cn_blob_hold(blob)};
    s->bytes += len;
}

/* Releases the segments from the k-th on (the array stays for the next batch). */
static void segs_drop_from(cn__segs *s, unsigned k)
{
    while (s->n > k) {
        cn__seg *g = &s->v[--s->n];
        s->bytes -= g->len;
        cn_blob_release(g->blob);
    }
}

static void segs_free(cn__segs *s)
{
    segs_drop_from(s, 0);
    free(s->v);
    s->v = NULL;
    s->cap = 0;
}

/* ---- Writing ---- */

/*
 * The next piece of the batch in flight: wflight up to the next segment, or
 * that segment. 0 when the batch is all written.
 */
static int next_piece(cn_conn *c, const char **data, size_t *len)
{
    const cn__segs *s = &c->fsegs;
    size_t stop = c->fnext < s->n ? s->v[c->fnext].at : c->wflight.len;
    if (c->fpos < stop) {
        *data = c->wflight.data + c->fpos;
        *len = stop - c->fpos;
        c->fpos = stop;
        return 1;
    }
    if (c->fnext < s->n) {
        const cn__seg *g = &s->v[c->fnext++];
        *data = g->data;
        *len = g->len;
        return 1;
    }
    return 0;
}

/* The batch in flight is written or abandoned: its room shrinks back, its blobs go. */
static void flight_done(cn_conn *c)
{
    c->wflight.len = 0;
    cn_buf_shrink(&c->wflight, CN_BUF_KEEP);
    segs_drop_from(&c->fsegs, 0);
}

/*
 * Writes the batch in flight, a piece at a time (a batch without segments is
 * one piece). A piece the transport completes at once is followed by the next
 * here; one it completes later, by cn_conn_written.
 */
static void write_pieces(cn_conn *c)
{
    const char *data;
    size_t len;
    while (next_piece(c, &data, &len)) {
        c->writing = 1;
        c->wsync = 1;
        int rc = c->tp->write(c, data, len);
        c->wsync = 0;
        if (rc < 0) {
            c->writing = 0;
            flight_done(c);
            char e1[CN_LOG_ESC_MAX];
            CN_WARN("conn", "write to %s failed: %s", esc(e1, who(c)), cn_strerror(rc));
            conn_close(c, NULL);
            return;
        }
        /* Still in flight (cn_conn_written goes on), or it failed and c is closing. */
        if (c->writing || c->state == CN_CONN_CLOSING)
            return;
    }
    flight_done(c);
    if (c->wbuf.len > 0)
        mark_dirty(c);
}

static void flush(cn_conn *c)
{
    assert(c->state != CN_CONN_CLOSING);
    if (c->writing || c->wbuf.len == 0)
        return;
    /* Nothing is queued before the handshake starts, and no frame is half built between turns. */
    assert(c->state != CN_CONN_CONNECTING && !c->framing);
    assert(c->wflight.len == 0 && c->fsegs.n == 0);
    cn_buf tmp = c->wflight;
    c->wflight = c->wbuf;
    c->wbuf = tmp;
    cn__segs stmp = c->fsegs;
    c->fsegs = c->wsegs;
    c->wsegs = stmp;
    c->fpos = 0;
    c->fnext = 0;
    c->last_write = uv_now(c->node->loop);
    c->node->stats.writes++;
    write_pieces(c);
}

void cn__conn_flush_dirty(cn_node *node)
{
    cn_conn *c;
    while ((c = node->dirty) != NULL) {
        DL_DELETE2(node->dirty, c, dirty_prev, dirty_next);
        c->dirty = 0;
        flush(c);
    }
}

void cn_conn_written(cn_conn *c, int status)
{
    assert(c->writing);
    c->writing = 0;
    /* The close cancelled the write, or it finished while the connection was going. */
    if (c->state == CN_CONN_CLOSING) {
        flight_done(c);
        return;
    }
    if (status < 0) {
        flight_done(c);
        char e1[CN_LOG_ESC_MAX];
        CN_WARN("conn", "write to %s failed: %s", esc(e1, who(c)), cn_strerror(status));
        conn_close(c, NULL);
        return;
    }
    /* Inside tp->write, write_pieces goes on by itself. */
    if (!c->wsync)
        write_pieces(c);
}

int cn__frame_begin(cn_conn *c, size_t reserve, size_t *start)
{
    assert(!c->framing);
    if (c->state != CN_CONN_UP)
        return CN_ENOCONN;
    size_t queued = c->wbuf.len + c->wflight.len + c->wsegs.bytes + c->fsegs.bytes;
    if (queued > c->node->max_write_queue) {
        char e1[CN_LOG_ESC_MAX];
        CN_ERROR("conn", "%s is not reading: %zu bytes queued; dropping the connection", esc(e1, c->peer_name),
                 queued);
        conn_close(c, NULL);
        return CN_EFULL;
    }
    /* Only a size no memory could hold is refused; ours are bounded by real buffers. */
    int rc = cn_buf_reserve(&c->wbuf, reserve + 5);
    assert(rc == 0);
    (void)rc;
    *start = c->wbuf.len;
    c->framing = 1;
    c->frame_start = *start;
    c->frame_seg0 = c->wsegs.n;
    c->wbuf.len += 4;
    c->wbuf.data[c->wbuf.len++] = (char)CN_PASS_THROUGH;
    return 0;
}

void cn__frame_segment(cn_conn *c, const char *data, size_t len, cn_blob *blob)
{
    assert(c->framing);
    segs_push(&c->wsegs, c->wbuf.len, data, len, blob);
}

void cn__frame_end(cn_conn *c, size_t start)
{
    assert(c->framing && c->frame_start == start);
    assert(c->wbuf.len <= c->wbuf.cap);
    c->framing = 0;
    size_t len = c->wbuf.len - start - 4;
    for (unsigned k = c->frame_seg0; k < c->wsegs.n; k++)
        len += c->wsegs.v[k].len;
    assert(len <= UINT32_MAX);
    cn_set_u32(c->wbuf.data + start, (uint32_t)len);
    c->node->stats.frames_out++;
    mark_dirty(c);
}

void cn__frame_abort(cn_conn *c, size_t start)
{
    assert(c->framing && c->frame_start == start);
    c->framing = 0;
    c->wbuf.len = start;
    segs_drop_from(&c->wsegs, c->frame_seg0);
}

/* The connection is freed when its transport and its timer have both let go. */
static void release(cn_conn *c)
{
    assert(c->state == CN_CONN_CLOSING && c->holds > 0);
    if (--c->holds > 0)
        return;
    cn_node *node = c->node;
    DL_DELETE2(node->all_conns, c, all_prev, all_next);
    cn_buf_free(&c->rbuf);
    cn_blob_release(c->big);
    cn_buf_free(&c->wbuf);
    cn_buf_free(&c->wflight);
    segs_free(&c->wsegs);
    segs_free(&c->fsegs);
    free(c->monitors);  /* NULL once the connection's loss handed it over (cn__proc_conn_lost) */
    free(c);
    cn__node_maybe_closed(node);
}

static void timer_closed(uv_handle_t *h)
{
    release(h->data);
}

static void conn_close(cn_conn *c, const char *why)
{
    cn_node *node = c->node;
    int was_up = c->state == CN_CONN_UP;
    char e1[CN_LOG_ESC_MAX];
    if (why)
        CN_INFO("conn", "closing connection %s%s: %s", was_up ? "to " : "from ",
                esc(e1, was_up ? c->peer_name : c->addr), why);
    set_state(c, CN_CONN_CLOSING);
    if (was_up) {
        HASH_DEL(node->conns, c);
        CN__STAT_DEC(node, connections);
    } else {
        CN__STAT_DEC(node, pending);
    }
    if (c->dirty) {
        DL_DELETE2(node->dirty, c, dirty_prev, dirty_next);
        c->dirty = 0;
    }
    assert(!c->framing);
    /* A large frame half read is of no use any more (and big_end has taken a complete one). */
    cn_blob_release(c->big);
    c->big = NULL;
    uv_close((uv_handle_t *)&c->hs_timer, timer_closed);
    node->conn_events->lost(c);
    cn__conn_lost_cb cb = c->lost_cb;
    c->lost_cb = NULL;
    if (cb)
        cb(c, c->lost_arg, was_up);
    c->tp->close(c);
}

void cn_conn_closed(cn_conn *c)
{
    release(c);
}

void cn__conn_close_all(cn_node *node)
{
    cn_conn *c;
    /* Connections are freed only from loop callbacks, so the next one stays valid. */
    DL_FOREACH2(node->all_conns, c, all_next) {
        if (c->state != CN_CONN_CLOSING)
            conn_close(c, c->state == CN_CONN_UP ? "node shutting down" : NULL);
    }
}

static void hs_timeout(uv_timer_t *t)
{
    cn_conn *c = t->data;
    /* The timer stops when the handshake ends and is closed with the connection. */
    assert(c->state == CN_CONN_CONNECTING || c->state == CN_CONN_HANDSHAKE);
    CN_METRIC_INC(CN_MET_REFUSED_TIMEOUT);
    char e1[CN_LOG_ESC_MAX];
    CN_WARN("handshake", "%s did not complete the handshake in %u ms; dropped",
            esc(e1, *c->dialed ? c->dialed : c->addr), c->node->handshake_timeout_ms);
    conn_close(c, NULL);
}

/* Sends ticks on quiet connections and drops peers that have been silent too long. */
void cn__conn_tick_all(cn_node *node)
{
    static const char tick[4] = {0, 0, 0, 0};
    uint64_t now = uv_now(node->loop);
    uint64_t tick_ms = (uint64_t)node->net_ticktime * 1000 / 4;
    uint64_t dead_ms = (uint64_t)node->net_ticktime * 1000;
    cn_conn *c, *tmp;
    HASH_ITER(hh, node->conns, c, tmp) {
        if (now - c->last_read > dead_ms) {
            char e1[CN_LOG_ESC_MAX];
            CN_WARN("conn", "%s sent nothing for %u s (net_ticktime); dropping it", esc(e1, c->peer_name),
                    node->net_ticktime);
            conn_close(c, NULL);
            continue;
        }
        if (now - c->last_write >= tick_ms && c->wbuf.len == 0 && !c->writing) {
            cn_buf_append(&c->wbuf, tick, 4);
            mark_dirty(c);
        }
    }
}

const char *cn_conn_peer(const cn_conn *c)
{
    return c->state == CN_CONN_UP ? c->peer_name : "";
}

void cn_conn_set_addr(cn_conn *c, const char *addr)
{
    snprintf(c->addr, sizeof c->addr, "%s", addr);
}

void cn_conn_set_transport_data(cn_conn *c, void *data)
{
    c->tp_data = data;
}

void *cn_conn_transport_data(const cn_conn *c)
{
    return c->tp_data;
}

/*
 * The stdin watch (supervisor/stdin_watch.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "cnode/mem.h"
#include "supervisor/stdin_watch.h"

struct sup_stdin_watch {
    uv_poll_t poll;
    int ended;          /* eof_cb was called */
    sup_stdin_eof_cb eof_cb;
    void *data;
};

static void reach_end(sup_stdin_watch *w)
{
    if (w->ended)
        return;
    w->ended = 1;
    uv_poll_stop(&w->poll);
    if (w->eof_cb)
        w->eof_cb(w->data);
}

/*
 * Readable: data to drop, or the end. libuv made the fd nonblocking, so an
 * empty read is EAGAIN; one read per wakeup is enough, the poll fires again.
 */
static void on_readable(uv_poll_t *p, int status, int events)
{
    sup_stdin_watch *w = p->data;
    char buf[512];
    (void)events;
    if (status < 0) {
        reach_end(w);
        return;
    }
    ssize_t n = read(0, buf, sizeof buf);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)))
        return;
    reach_end(w);
}

static void closed(uv_handle_t *h)
{
    free(h->data);
}

int sup_stdin_watch_start(uv_loop_t *loop, sup_stdin_eof_cb eof_cb, void *data, sup_stdin_watch **out)
{
    sup_stdin_watch *w = cn_calloc(1, sizeof *w);
    /* A failed init leaves no handle behind (the fd is checked first): plain free. */
    int rc = uv_poll_init(loop, &w->poll, 0);
    if (rc < 0) {
        free(w);
        return rc;
    }
    w->eof_cb = eof_cb;
    w->data = data;
    w->poll.data = w;
    rc = uv_poll_start(&w->poll, UV_READABLE | UV_DISCONNECT, on_readable);
    if (rc < 0) {
        uv_close((uv_handle_t *)&w->poll, closed);
        return rc;
    }
    uv_unref((uv_handle_t *)&w->poll);
    *out = w;
    return 0;
}

void sup_stdin_watch_close(sup_stdin_watch *w)
{
    if (w == NULL)
        return;
    uv_close((uv_handle_t *)&w->poll, closed);
}

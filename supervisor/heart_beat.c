/*
 * The node's heartbeat (supervisor/heart_beat.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cnode/log.h"
#include "cnode/mem.h"
#include "supervisor/heart_beat.h"

struct sup_heart_beat {
    uv_timer_t timer;
    uv_poll_t poll;
    int fd;
    int lost;        /* the watchdog's end closed; lost_cb was called */
    int open_handles;
    sup_heart_lost_cb lost_cb;
    void *data;
};

unsigned sup_heart_beat_interval_ms(unsigned timeout_s)
{
    unsigned ms = timeout_s * 100;
    return ms > 1000 ? 1000 : ms;
}

/* The watchdog is gone: stop writing, and tell the node once. */
static void lose(sup_heart_beat *b)
{
    if (b->lost)
        return;
    b->lost = 1;
    uv_timer_stop(&b->timer);
    uv_poll_stop(&b->poll);
    CN_ERROR("heart", "the watchdog is gone (its end of the heartbeat socket closed)");
    if (b->lost_cb)
        b->lost_cb(b->data);
}

/*
 * One byte. A full socket (the watchdog is slow, or stopped) drops the beat:
 * the loop must never block on its watchdog, and a later beat will do.
 */
static void beat(uv_timer_t *t)
{
    sup_heart_beat *b = t->data;
    if (send(b->fd, "b", 1, MSG_NOSIGNAL) < 0 && errno != EAGAIN && errno != EINTR)
        lose(b);
}

/* The watchdog never writes: readable means end-of-file (or an error), so it died. */
static void on_readable(uv_poll_t *p, int status, int events)
{
    sup_heart_beat *b = p->data;
    char c;
    (void)events;
    if (status < 0) {
        lose(b);
        return;
    }
    ssize_t n = recv(b->fd, &c, 1, 0);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)))
        return;
    lose(b);
}

int sup_heart_beat_start(uv_loop_t *loop, int fd, unsigned interval_ms, sup_heart_lost_cb lost_cb, void *data,
                         sup_heart_beat **out)
{
    sup_heart_beat *b = cn_calloc(1, sizeof *b);
    int rc = uv_poll_init_socket(loop, &b->poll, fd);
    if (rc < 0) {
        close(fd);
        free(b);
        return rc;
    }
    uv_timer_init(loop, &b->timer);
    b->fd = fd;
    b->lost_cb = lost_cb;
    b->data = data;
    b->open_handles = 2;
    b->timer.data = b->poll.data = b;
    uv_poll_start(&b->poll, UV_READABLE | UV_DISCONNECT, on_readable);
    /*
     * The first beat now, not on the loop's first turn; a failure here is left
     * to the poll, which reports a dead watchdog on the loop, never from inside
     * this constructor.
     */
    (void)send(fd, "b", 1, MSG_NOSIGNAL);
    uv_timer_start(&b->timer, beat, interval_ms, interval_ms);
    uv_unref((uv_handle_t *)&b->poll);
    uv_unref((uv_handle_t *)&b->timer);
    *out = b;
    return 0;
}

static void handle_closed(uv_handle_t *h)
{
    sup_heart_beat *b = h->data;
    if (--b->open_handles == 0)
        free(b);
}

void sup_heart_beat_close(sup_heart_beat *b)
{
    if (b == NULL)
        return;
    uv_close((uv_handle_t *)&b->timer, handle_closed);
    uv_close((uv_handle_t *)&b->poll, handle_closed);
    close(b->fd);
}

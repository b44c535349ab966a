/*
 * The metrics endpoint (cnode/metrics_http.h): libmicrohttpd driven from the
 * node's loop. MHD keeps its sockets in an epoll set of its own; that set's
 * descriptor becomes readable when any of them is, so one uv_poll on it wakes
 * the loop, and a timer set from MHD_get_timeout covers idle timeouts and the
 * work MHD has pending without a socket event (it must then run again at once).
 */
#include "cnode/metrics_http.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <microhttpd.h>

#include "cnode/addr.h"
#include "cnode/log.h"
#include "cnode/mem.h"

/* A scraper needs one connection; a few allow overlapping scrapes and a curl by hand. */
#define MAX_CONNECTIONS 8
#define MAX_PER_ADDRESS 4
/* Seconds a connection may sit idle (a slowloris) before MHD closes it. */
#define IDLE_TIMEOUT_S 10
/* A request's headers must fit here; a Prometheus GET takes a few hundred bytes. */
#define CONN_MEMORY 16384

struct cn_metrics_http {
    struct MHD_Daemon *d;
    cn_metrics *m;
    uv_poll_t poll;
    uv_timer_t timer;
    int open_handles;
    unsigned port;
};

static void run(cn_metrics_http *h);

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    run(p->data);
}

static void on_timer(uv_timer_t *t)
{
    run(t->data);
}

/* Lets MHD do what is ready, then waits for its next deadline, if it has one. */
static void run(cn_metrics_http *h)
{
    MHD_run(h->d);
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(h->d, &ms) == MHD_YES)
        uv_timer_start(&h->timer, on_timer, (uint64_t)ms, 0);
    else
        uv_timer_stop(&h->timer);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, char *body, size_t len,
                             const char *type)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

/* GET /metrics (or /): the registry rendered now, on the loop, in one piece. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **req)
{
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)req;
    cn_metrics_http *h = cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, cn_strdup("GET only\n"), 9, "text/plain");
    if (strcmp(url, "/metrics") != 0 && strcmp(url, "/") != 0)
        return reply(c, MHD_HTTP_NOT_FOUND, cn_strdup("see /metrics\n"), 13, "text/plain");
    size_t len;
    char *text = cn_metrics_render(h->m, &len);
    return reply(c, MHD_HTTP_OK, text, len, "text/plain; version=0.0.4; charset=utf-8");
}

/* HOST:PORT with HOST a numeric literal ("[v6]" for IPv6): 0, or -EINVAL. */
static int parse_listen(const char *s, struct sockaddr_storage *sa)
{
    const char *colon = strrchr(s, ':');
    char host[CN_ADDR_STRLEN];
    if (colon == NULL || colon == s || (size_t)(colon - s) >= sizeof host)
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno || port > 65535)
        return -EINVAL;
    size_t n = (size_t)(colon - s);
    if (s[0] == '[' && s[n - 1] == ']') {
        memcpy(host, s + 1, n - 2);
        host[n - 2] = '\0';
        return cn_addr_literal(AF_INET6, host, (uint16_t)port, sa);
    }
    memcpy(host, s, n);
    host[n] = '\0';
    return cn_addr_literal(AF_INET, host, (uint16_t)port, sa);
}

static void log_mhd(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[256];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    CN_WARN("metrics", "%s", line);
}

static struct MHD_Daemon *daemon_start(cn_metrics_http *h, const struct sockaddr_storage *sa)
{
    return MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, cn_addr_port((const struct sockaddr *)sa),
                            NULL, NULL, on_request, h,
                            MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL,
                            MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)sa,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)MAX_PER_ADDRESS,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY,
                            MHD_OPTION_END);
}

int cn_metrics_http_start(uv_loop_t *loop, const char *listen, cn_metrics *m, cn_metrics_http **out)
{
    struct sockaddr_storage sa;
    if (parse_listen(listen, &sa) < 0)
        return -EINVAL;
    cn_metrics_http *h = cn_calloc(1, sizeof *h);
    h->m = m;
    errno = 0;
    h->d = daemon_start(h, &sa);
    if (h->d == NULL) {
        int e = errno ? -errno : -EIO;
        free(h);
        return e;
    }
    const union MHD_DaemonInfo *fd = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    const union MHD_DaemonInfo *port = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = port ? port->port : 0;
    assert(fd != NULL); /* MHD_USE_EPOLL always has its epoll descriptor */
    /* The epoll descriptor is MHD's and lives until MHD_stop_daemon, after the poll handle closes. */
    uv_poll_init(loop, &h->poll, fd->epoll_fd);
    uv_timer_init(loop, &h->timer);
    h->poll.data = h->timer.data = h;
    h->open_handles = 2;
    uv_poll_start(&h->poll, UV_READABLE, on_poll);
    run(h);
    CN_INFO("metrics", "serving Prometheus metrics on %s (port %u)", listen, h->port);
    *out = h;
    return 0;
}

unsigned cn_metrics_http_port(const cn_metrics_http *h)
{
    return h->port;
}

static void closed(uv_handle_t *handle)
{
    cn_metrics_http *h = handle->data;
    if (--h->open_handles > 0)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}

void cn_metrics_http_close(cn_metrics_http *h)
{
    if (h == NULL)
        return;
    uv_close((uv_handle_t *)&h->poll, closed);
    uv_close((uv_handle_t *)&h->timer, closed);
}

/*
 * The metrics endpoint: Prometheus text (cnode/metrics.h) over HTTP on the
 * node's own loop, for --metrics-listen HOST:PORT.
 *
 * libmicrohttpd parses HTTP; it runs with no thread of its own (MHD_USE_EPOLL,
 * external polling): its epoll descriptor is watched by a uv_poll and its
 * timeouts by a uv_timer, and MHD_run handles what is ready without blocking.
 * A scraper is bounded by a connection limit, a per-address limit, an idle
 * timeout and a per-connection memory limit, so a slow or hostile one holds
 * only its own connection, never the loop.
 */
#ifndef CN_METRICS_HTTP_H
#define CN_METRICS_HTTP_H

#include <uv.h>

#include "cnode/metrics.h"

typedef struct cn_metrics_http cn_metrics_http;

/*
 * Listens on listen ("HOST:PORT", HOST a numeric IPv4 literal or a bracketed
 * IPv6 one, "[::1]:9100") and serves m (borrowed; it must outlive the
 * endpoint) at GET /metrics (and /). Returns 0 and the endpoint in *out, or
 * -EINVAL for a bad address, or -errno (-EIO when libmicrohttpd says no
 * more) when the daemon cannot start: the port taken, say.
 */
int cn_metrics_http_start(uv_loop_t *loop, const char *listen, cn_metrics *m, cn_metrics_http **out);

/* The port it listens on (useful with port 0). */
unsigned cn_metrics_http_port(const cn_metrics_http *h);

/* Stops listening and frees the endpoint once its handles have closed. NULL is allowed. */
void cn_metrics_http_close(cn_metrics_http *h);

#endif

/*
 * build/cnode: a C node serving the counter and rate limiter GenServers.
 *
 * Start-up: parse flags, read (or create) the cookie, make sure epmd runs, listen,
 * register; once registered, start the servers and print "READY <name> <port>"
 * on stdout. SIGTERM or SIGINT stops the servers (their terminate saves state),
 * closes every connection, unregisters from epmd and exits 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/node.h"
#include "genserver/counter.h"
#include "genserver/net_kernel.h"
#include "genserver/rate_limiter.h"
#include "supervisor/statefile.h"
#include "supervisor/supervisor.h"

typedef struct app {
    uv_loop_t *loop;
    cn_node *node;
    uv_signal_t sigterm, sigint;
    counter_config counter;
    rate_limiter_config limiter;
    sup_t *root;
    gs_server *net_kernel;
    uv_timer_t closer;
    int exit_code;
    int stopping;
} app;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cnode --name NAME@HOST [--cookie C] [--data-dir DIR] [--port N]\n"
            "             [--connect NODE]... [--max-requests N] [--window-ms MS]\n"
            "             [--log-level debug|info|warning|error] [--net-ticktime S]\n"
            "             [--handshake-timeout-ms MS] [--counter-initial N] [--coalesce-us US]\n"
            "             [--busy-poll-us US]\n");
}

static int parse_long(const char *flag, const char *s, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "cnode: %s needs an integer from %lld to %lld, not '%s'\n", flag, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Reads ~/.erlang.cookie, creating it as erl does (20 capital letters, mode 0400). */
static int read_cookie(char *out, size_t size)
{
    const char *home = getenv("HOME");
    if (home == NULL || *home == '\0') {
        fprintf(stderr, "cnode: no --cookie given and HOME is not set\n");
        return -1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/.erlang.cookie", home);
    FILE *f = fopen(path, "r");
    if (f == NULL && errno == ENOENT) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0400);
        if (fd >= 0) {
            char cookie[21];
            unsigned char rnd[20];
            uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL);
            for (int i = 0; i < 20; i++)
                cookie[i] = (char)('A' + rnd[i] % 26);
            cookie[20] = '\0';
            ssize_t w = write(fd, cookie, 20);
            close(fd);
            if (w != 20) {
                fprintf(stderr, "cnode: cannot write %s\n", path);
                return -1;
            }
        }
        f = fopen(path, "r");
    }
    if (f == NULL) {
        fprintf(stderr, "cnode: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (fgets(out, (int)size, f) == NULL)
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    if (out[0] == '\0') {
        fprintf(stderr, "cnode: %s is empty\n", path);
        return -1;
    }
    return 0;
}

static void node_closed(cn_node *node)
{
    (void)node;
}

static void close_node(uv_timer_t *t)
{
    app *a = t->data;
    uv_close((uv_handle_t *)&a->closer, NULL);
    cn_node_close(a->node, node_closed);
}

/*
 * Stops the tree (children in reverse order, each terminate saving its state),
 * then, on the next loop turn, the node: connections, epmd, handles.
 */
static void shutdown_app(app *a, int code)
{
    if (a->stopping)
        return;
    a->stopping = 1;
    a->exit_code = code;
    CN_INFO("node", "shutting down");
    if (a->root) {
        sup_t *root = a->root;
        a->root = NULL;
        sup_stop(root);
    }
    if (a->net_kernel) {
        gs_stop(a->net_kernel, "shutdown");
        a->net_kernel = NULL;
    }
    uv_signal_stop(&a->sigterm);
    uv_signal_stop(&a->sigint);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_timer_start(&a->closer, close_node, 0, 0);
}

/* The root supervisor gave up (restart intensity exceeded): the node exits non-zero. */
static void root_exited(sup_t *s, const char *reason, void *data)
{
    (void)s;
    app *a = data;
    if (a->stopping)
        return;
    a->root = NULL;
    CN_ERROR("node", "the root supervisor exited (%s); stopping the node", reason);
    shutdown_app(a, 1);
}

static int start_rate_limiter(cn_node *node, cn_proc *parent, void *arg, cn_proc **out)
{
    gs_server *gs;
    int rc = rate_limiter_start(node, arg, "rate_limiter", parent, &gs);
    if (rc == 0)
        *out = gs_proc(gs);
    return rc;
}

static int start_counter(cn_node *node, cn_proc *parent, void *arg, cn_proc **out)
{
    gs_server *gs;
    int rc = counter_start(node, arg, "counter", parent, &gs);
    if (rc == 0)
        *out = gs_proc(gs);
    return rc;
}

static void on_signal(uv_signal_t *h, int signum)
{
    app *a = h->data;
    CN_INFO("node", "got %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    shutdown_app(a, 0);
}

static app *the_app;

static void on_ready(cn_node *node, int status)
{
    app *a = the_app;
    if (status < 0) {
        if (status == CN_ENOTALIVE)
            fprintf(stderr, "cnode: the name %s is already registered with epmd\n", cn_node_name(node));
        else
            fprintf(stderr, "cnode: cannot register with epmd: %s\n", cn_strerror(status));
        shutdown_app(a, 1);
        return;
    }
    if (net_kernel_start(node, &a->net_kernel) < 0)
        CN_WARN("node", "cannot start net_kernel: Node.ping from other nodes will say pang");
    /* The seed's application: one_for_one over the counter and the rate limiter. */
    sup_child_spec children[] = {
        {.id = "counter", .start = start_counter, .arg = &a->counter, .restart = SUP_PERMANENT,
         .shutdown_ms = SUP_WORKER_SHUTDOWN_MS, .type = SUP_WORKER, .module = "Elixir.Counter"},
        {.id = "rate_limiter", .start = start_rate_limiter, .arg = &a->limiter, .restart = SUP_PERMANENT,
         .shutdown_ms = SUP_WORKER_SHUTDOWN_MS, .type = SUP_WORKER, .module = "Elixir.RateLimiter"},
    };
    sup_flags flags = {.strategy = SUP_ONE_FOR_ONE, .intensity = 3, .period_s = 5};
    int rc = sup_start(node, "cnode_sup", &flags, children, sizeof children / sizeof children[0], NULL,
                       root_exited, a, &a->root);
    if (rc < 0) {
        fprintf(stderr, "cnode: cannot start the servers: %s\n", cn_strerror(rc));
        shutdown_app(a, 1);
        return;
    }
    printf("READY %s %u\n", cn_node_name(node), cn_node_port(node));
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, 0, 'n'},
        {"cookie", required_argument, 0, 'c'},
        {"data-dir", required_argument, 0, 'd'},
        {"port", required_argument, 0, 'p'},
        {"connect", required_argument, 0, 'C'},
        {"max-requests", required_argument, 0, 'm'},
        {"window-ms", required_argument, 0, 'w'},
        {"log-level", required_argument, 0, 'l'},
        {"net-ticktime", required_argument, 0, 't'},
        {"handshake-timeout-ms", required_argument, 0, 'H'},
        {"counter-initial", required_argument, 0, 'i'},
        {"coalesce-us", required_argument, 0, 'u'},
        {"busy-poll-us", required_argument, 0, 'b'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    cn_node_config cfg = {.coalesce_us = 150, .busy_poll_us = 200};
    app a;
    memset(&a, 0, sizeof a);
    the_app = &a;
    const char *connect[64];
    int nconnect = 0;
    char cookie[256];
    long long v;
    const char *data_dir = "var/cnode";
    long long max_requests = 100, window_ms = 60000;

    int ch;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'n': cfg.name = optarg; break;
        case 'c': cfg.cookie = optarg; break;
        case 'd': data_dir = optarg; break;
        case 'p':
            if (parse_long("--port", optarg, 0, 65535, &v) < 0) return 2;
            cfg.port = (uint16_t)v;
            break;
        case 'C':
            if (nconnect == 64) { fprintf(stderr, "cnode: at most 64 --connect\n"); return 2; }
            connect[nconnect++] = optarg;
            break;
        case 'm':
            if (parse_long("--max-requests", optarg, 1, UINT32_MAX, &max_requests) < 0) return 2;
            break;
        case 'w':
            if (parse_long("--window-ms", optarg, 1, INT32_MAX, &window_ms) < 0) return 2;
            break;
        case 'l':
            if (cn_log_parse_level(optarg, &cn_log_threshold) < 0) {
                fprintf(stderr, "cnode: --log-level takes debug, info, warning or error, not '%s'\n", optarg);
                return 2;
            }
            break;
        case 't':
            if (parse_long("--net-ticktime", optarg, 1, 86400, &v) < 0) return 2;
            cfg.net_ticktime = (unsigned)v;
            break;
        case 'H':
            if (parse_long("--handshake-timeout-ms", optarg, 1, 3600000, &v) < 0) return 2;
            cfg.handshake_timeout_ms = (unsigned)v;
            break;
        case 'i':
            if (parse_long("--counter-initial", optarg, INT64_MIN, INT64_MAX, &v) < 0) return 2;
            a.counter.initial = v;
            break;
        case 'u':
            if (parse_long("--coalesce-us", optarg, 0, 1000, &v) < 0) return 2;
            cfg.coalesce_us = (unsigned)v;
            break;
        case 'b':
            if (parse_long("--busy-poll-us", optarg, 0, 1000, &v) < 0) return 2;
            cfg.busy_poll_us = (unsigned)v;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "cnode: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cnode: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (cfg.name == NULL) {
        fprintf(stderr, "cnode: --name NAME@HOST is required\n");
        usage(stderr);
        return 2;
    }
    if (strchr(cfg.name, '@') == NULL) {
        fprintf(stderr, "cnode: --name must be NAME@HOST (use long names such as cnode@127.0.0.1)\n");
        return 2;
    }
    if (cfg.cookie == NULL) {
        if (read_cookie(cookie, sizeof cookie) < 0)
            return 1;
        cfg.cookie = cookie;
    }
    a.counter.data_dir = data_dir;
    int drc = sup_state_check_dir(data_dir);
    if (drc < 0) {
        fprintf(stderr, "cnode: the data dir %s is not usable: %s\n", data_dir, cn_strerror(drc));
        return 1;
    }
    a.limiter.max_requests = (uint32_t)max_requests;
    a.limiter.window_ms = window_ms;
    a.limiter.data_dir = data_dir;

    signal(SIGPIPE, SIG_IGN);
    a.loop = uv_default_loop();
    int rc = cn_node_new(a.loop, &cfg, &a.node);
    if (rc < 0) {
        fprintf(stderr, "cnode: bad node name '%s': %s\n", cfg.name, cn_strerror(rc));
        return 2;
    }
    uv_signal_init(a.loop, &a.sigterm);
    uv_signal_init(a.loop, &a.sigint);
    a.sigterm.data = a.sigint.data = &a;
    uv_signal_start(&a.sigterm, on_signal, SIGTERM);
    uv_signal_start(&a.sigint, on_signal, SIGINT);
    uv_timer_init(a.loop, &a.closer);
    a.closer.data = &a;

    rc = cn_node_start(a.node, on_ready);
    if (rc < 0) {
        if (rc == UV_EADDRINUSE)
            fprintf(stderr, "cnode: port %u is already in use\n", (unsigned)cfg.port);
        else
            fprintf(stderr, "cnode: cannot start: %s\n", cn_strerror(rc));
        shutdown_app(&a, 1);
        uv_run(a.loop, UV_RUN_DEFAULT);
        cn_node_free(a.node);
        return 1;
    }
    for (int i = 0; i < nconnect; i++) {
        if (cn_node_connect(a.node, connect[i]) < 0) {
            fprintf(stderr, "cnode: bad --connect node name '%s'\n", connect[i]);
            shutdown_app(&a, 2);
            break;
        }
    }
    uv_run(a.loop, UV_RUN_DEFAULT);
    cn_node_free(a.node);
    uv_loop_close(a.loop);
    return a.exit_code;
}

/*
 * build/cnode: a C node serving the counter and rate limiter GenServers.
 *
 * This file is the program's front: it parses the flags, reads (or creates)
 * the cookie, checks the data directory and hands the configuration to the
 * application (supervisor/app.h), which makes the node, registers it, starts
 * the supervision tree and prints "READY <name> <port>" on stdout through
 * ready_cb. SIGTERM or SIGINT stops the servers (their terminate saves state),
 * closes every connection, unregisters from epmd and exits 0 (1 when a final
 * save failed); the death of a
 * top supervisor exits 1, and so does losing the name: when epmd restarts the
 * node registers again, and if another node took the name meanwhile it stops
 * the same way. Bad flags exit 2.
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
#include "genserver/journal.h"
#include "genserver/statefile.h"
#include "supervisor/app.h"

#define MAX_CONNECT 64

/* What the flags say. */
typedef struct options {
    sup_app_config app;
    const char *data_dir;
    long long max_requests, window_ms;
    const char *connect[MAX_CONNECT];
    int nconnect;
    int help;
    char cookie[256];
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cnode --name NAME@HOST [--cookie C] [--data-dir DIR] [--port N]\n"
            "             [--connect NODE]... [--max-requests N] [--window-ms MS]\n"
            "             [--log-level debug|info|warning|error] [--net-ticktime S]\n"
            "             [--handshake-timeout-ms MS] [--counter-initial N] [--coalesce-us US]\n"
            "             [--busy-poll-us US] [--durability terminate|crash|power]\n"
            "             [--snapshot-bytes N]\n");
}

/* An integer flag value within [min, max]: 0, or -EINVAL after one line on stderr. */
static int parse_long(const char *flag, const char *s, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "cnode: %s needs an integer from %lld to %lld, not '%s'\n", flag, min, max, s);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

/* As parse_long, for the unsigned fields of the node's config. */
static int parse_unsigned(const char *flag, const char *s, long long min, long long max, unsigned *out)
{
    long long v;
    int rc = parse_long(flag, s, min, max, &v);
    if (rc == 0)
        *out = (unsigned)v;
    return rc;
}

static int add_connect(options *o, const char *node)
{
    if (o->nconnect == MAX_CONNECT) {
        fprintf(stderr, "cnode: at most %d --connect\n", MAX_CONNECT);
        return -EINVAL;
    }
    o->connect[o->nconnect++] = node;
    return 0;
}

static int set_log_level(const char *level)
{
    if (cn_log_parse_level(level, &cn_log_threshold) == 0)
        return 0;
    fprintf(stderr, "cnode: --log-level takes debug, info, warning or error, not '%s'\n", level);
    return -EINVAL;
}

static int set_port(options *o, const char *s)
{
    unsigned port;
    int rc = parse_unsigned("--port", s, 0, 65535, &port);
    if (rc == 0)
        o->app.node.port = (uint16_t)port;
    return rc;
}

static int set_durability(options *o, const char *arg)
{
    gs_durability d;
    if (gs_durability_parse(arg, &d) < 0) {
        fprintf(stderr, "cnode: --durability takes terminate, crash or power, not '%s'\n", arg);
        return -EINVAL;
    }
    o->app.counter.durability = o->app.limiter.durability = d;
    return 0;
}

static int set_snapshot_bytes(options *o, const char *arg)
{
    long long v;
    int rc = parse_long("--snapshot-bytes", arg, 4096, INT64_MAX, &v);
    if (rc == 0)
        o->app.counter.snapshot_bytes = o->app.limiter.snapshot_bytes = (uint64_t)v;
    return rc;
}

/* One flag of getopt_long's: 0, or -EINVAL after one line on stderr. A dispatch switch. */
static int set_option(options *o, int ch, const char *arg)
{
    cn_node_config *node = &o->app.node;
    switch (ch) {
    case 'n': node->name = arg; return 0;
    case 'c': node->cookie = arg; return 0;
    case 'd': o->data_dir = arg; return 0;
    case 'p': return set_port(o, arg);
    case 'C': return add_connect(o, arg);
    case 'm': return parse_long("--max-requests", arg, 1, UINT32_MAX, &o->max_requests);
    case 'w': return parse_long("--window-ms", arg, 1, INT32_MAX, &o->window_ms);
    case 'l': return set_log_level(arg);
    case 't': return parse_unsigned("--net-ticktime", arg, 1, 86400, &node->net_ticktime);
    case 'H': return parse_unsigned("--handshake-timeout-ms", arg, 1, 3600000, &node->handshake_timeout_ms);
    case 'i': return parse_long("--counter-initial", arg, INT64_MIN, INT64_MAX, &o->app.counter.initial);
    case 'u': return parse_unsigned("--coalesce-us", arg, 0, 1000, &node->coalesce_us);
    case 'b': return parse_unsigned("--busy-poll-us", arg, 0, 1000, &node->busy_poll_us);
    case 'D': return set_durability(o, arg);
    case 'S': return set_snapshot_bytes(o, arg);
    case 'h': o->help = 1; return 0;
    default: return -EINVAL;
    }
}

/* The flags into o, with the program's defaults: 0, or -EINVAL after a line on stderr. */
static int parse_args(int argc, char **argv, options *o)
{
    static const struct option opts[] = {
        {"name", required_argument, 0, 'n'}, {"cookie", required_argument, 0, 'c'},
        {"data-dir", required_argument, 0, 'd'}, {"port", required_argument, 0, 'p'},
        {"connect", required_argument, 0, 'C'}, {"max-requests", required_argument, 0, 'm'},
        {"window-ms", required_argument, 0, 'w'}, {"log-level", required_argument, 0, 'l'},
        {"net-ticktime", required_argument, 0, 't'}, {"handshake-timeout-ms", required_argument, 0, 'H'},
        {"counter-initial", required_argument, 0, 'i'}, {"coalesce-us", required_argument, 0, 'u'},
        {"busy-poll-us", required_argument, 0, 'b'}, {"help", no_argument, 0, 'h'},
        {"durability", required_argument, 0, 'D'}, {"snapshot-bytes", required_argument, 0, 'S'},
        {0, 0, 0, 0},
    };
    memset(o, 0, sizeof *o);
    o->app.node.coalesce_us = 150;
    o->app.node.busy_poll_us = 200;
    o->app.counter.durability = o->app.limiter.durability = GS_DURABLE_CRASH;
    o->data_dir = "var/cnode";
    o->max_requests = 100;
    o->window_ms = 60000;
    int ch;
    opterr = 0;
    while (!o->help && (ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (ch == '?') {
            fprintf(stderr, "cnode: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return -EINVAL;
        }
        int rc = set_option(o, ch, optarg);
        if (rc < 0)
            return rc;
    }
    if (!o->help && optind < argc) {
        fprintf(stderr, "cnode: unexpected argument '%s'\n", argv[optind]);
        return -EINVAL;
    }
    return 0;
}

/* The name is required and must be long (NAME@HOST). 0, or -EINVAL after a line on stderr. */
static int check_name(const char *name)
{
    if (name == NULL) {
        fprintf(stderr, "cnode: --name NAME@HOST is required\n");
        usage(stderr);
        return -EINVAL;
    }
    if (strchr(name, '@') == NULL) {
        fprintf(stderr, "cnode: --name must be NAME@HOST (use long names such as cnode@127.0.0.1)\n");
        return -EINVAL;
    }
    return 0;
}

/* Reads ~/.erlang.cookie, creating it as erl does (20 capital letters, mode 0400). */
static int read_cookie(char *out, size_t size)
{
    const char *home = getenv("HOME");
    if (home == NULL || *home == '\0') {
        fprintf(stderr, "cnode: no --cookie given and HOME is not set\n");
        return -EINVAL;
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
                return -EIO;
            }
        }
        f = fopen(path, "r");
    }
    if (f == NULL) {
        int rc = -errno;
        fprintf(stderr, "cnode: cannot read %s: %s\n", path, strerror(errno));
        return rc;
    }
    if (fgets(out, (int)size, f) == NULL)
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    if (out[0] == '\0') {
        fprintf(stderr, "cnode: %s is empty\n", path);
        return -EINVAL;
    }
    return 0;
}

/* The cookie (from ~/.erlang.cookie unless given), the data dir and the servers' config. 0 or < 0. */
static int complete_config(options *o)
{
    if (o->app.node.cookie == NULL) {
        int rc = read_cookie(o->cookie, sizeof o->cookie);
        if (rc < 0)
            return rc;
        o->app.node.cookie = o->cookie;
    }
    int rc = gs_state_check_dir(o->data_dir);
    if (rc < 0) {
        fprintf(stderr, "cnode: the data dir %s is not usable: %s\n", o->data_dir, cn_strerror(rc));
        return rc;
    }
    o->app.counter.data_dir = o->data_dir;
    o->app.limiter.max_requests = (uint32_t)o->max_requests;
    o->app.limiter.window_ms = o->window_ms;
    o->app.limiter.data_dir = o->data_dir;
    return 0;
}

static void print_ready(sup_app *app)
{
    cn_node *node = sup_app_node(app);
    printf("READY %s %u\n", cn_node_name(node), cn_node_port(node));
    fflush(stdout);
}

/* Listens, registers and connects; on failure the app stops with status 1 (2 for a bad --connect). */
static void start(sup_app *app, const options *o)
{
    int rc = sup_app_start(app);
    if (rc < 0) {
        if (rc == UV_EADDRINUSE)
            fprintf(stderr, "cnode: port %u is already in use\n", (unsigned)o->app.node.port);
        else
            fprintf(stderr, "cnode: cannot start: %s\n", cn_strerror(rc));
        sup_app_stop(app, 1);
        return;
    }
    for (int i = 0; i < o->nconnect; i++) {
        if (cn_node_connect(sup_app_node(app), o->connect[i]) < 0) {
            fprintf(stderr, "cnode: bad --connect node name '%s'\n", o->connect[i]);
            sup_app_stop(app, 2);
            return;
        }
    }
}

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o) < 0)
        return 2;
    if (o.help) {
        usage(stdout);
        return 0;
    }
    if (check_name(o.app.node.name) < 0)
        return 2;
    if (complete_config(&o) < 0)
        return 1;
    o.app.ready_cb = print_ready;

    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    sup_app *app;
    int rc = sup_app_new(loop, &o.app, &app);
    if (rc < 0) {
        fprintf(stderr, "cnode: bad node name '%s': %s\n", o.app.node.name, cn_strerror(rc));
        return 2;
    }
    start(app, &o);
    uv_run(loop, UV_RUN_DEFAULT);
    int status = sup_app_status(app);
    if (sup_app_free(app) == 0)
        uv_loop_close(loop);
    return status;
}

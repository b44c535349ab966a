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
 *
 * With --stop-on-stdin-eof the node also stops as on SIGTERM when stdin
 * reaches its end: run as a BEAM's port, it never outlives its owner.
 *
 * With --metrics-listen HOST:PORT it serves Prometheus metrics there
 * (cnode/metrics_http.h), on the node's own loop.
 *
 * With --heart the process becomes a watchdog (supervisor/heart.h) once the
 * flags, cookie and data dir are checked, and the node runs in a child it
 * restarts; the child reports to it from its loop (supervisor/heart_beat.h).
 *
 * --proto-dist inet_tls runs every distribution connection over TLS, with the
 * --tls-* options named after the ssl options of erl's -ssl_dist_optfile
 * (cnode/tls.h); a TLS configuration that cannot work (a missing file, a key
 * that does not match, an expired certificate) is one line and exit 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/node.h"
#include "cnode/tls.h"
#include "cnode/tls_optfile.h"
#include "genserver/journal.h"
#include "genserver/rl_table.h"
#include "genserver/statefile.h"
#include "supervisor/app.h"
#include "supervisor/heart.h"
#include "supervisor/heart_beat.h"

#define MAX_CONNECT 64

/* What the flags say. */
typedef struct options {
    sup_app_config app;
    const char *data_dir;
    long long max_requests, window_ms;
    const char *connect[MAX_CONNECT];
    int nconnect;
    int help;
    int heart;
    int sched_normal;               /* --sched normal: keep SCHED_OTHER */
    long long heart_timeout_s; /* 0: not given */
    char cookie[256];
    int proto_tls;                  /* --proto-dist inet_tls */
    int tls_flags;                  /* a --tls-* flag was given */
    int tls_verify_set, tls_fail_set; /* ... and these: the optfile does not override them */
    const char *optfile;            /* --ssl-dist-optfile */
    cn_tls_optfile opt;
    cn_tls_config tls;
} options;

/* Flags without a one-letter code. */
enum {
    OPT_PROTO_DIST = 256,
    OPT_TLS_CERTFILE,
    OPT_TLS_KEYFILE,
    OPT_TLS_CACERTFILE,
    OPT_TLS_VERIFY,
    OPT_TLS_FAIL,
    OPT_TLS_NO_FAIL,
    OPT_SSL_DIST_OPTFILE,
    OPT_SCHED,
    OPT_BUSY_POLL_WHEN,
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cnode --name NAME@HOST [--cookie C] [--data-dir DIR] [--port N]\n"
            "             [--connect NODE]... [--max-requests N] [--window-ms MS]\n"
            "             [--log-level debug|info|warning|error] [--net-ticktime S]\n"
            "             [--handshake-timeout-ms MS] [--counter-initial N] [--coalesce-us US]\n"
            "             [--cast-pause-us US] [--busy-poll-us US] [--heart [--heart-timeout S]]\n"
            "             [--proto-dist inet_tcp|inet6_tcp|inet_tls|inet6_tls]\n"
            "             [--tls-certfile F] [--tls-keyfile F] [--tls-cacertfile F]\n"
            "             [--tls-verify verify_peer|verify_none]\n"
            "             [--tls-fail-if-no-peer-cert | --no-tls-fail-if-no-peer-cert]\n"
            "             [--ssl-dist-optfile F] [--stop-on-stdin-eof]\n"
            "             [--durability terminate|crash|power] [--snapshot-bytes N]\n"
            "             [--metrics-listen HOST:PORT] [--sched batch|normal]\n"
            "             [--busy-poll-when spare-core|always]\n");
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

/*
 * --proto-dist, named as erl's -proto_dist: the address family of the node
 * (inet: IPv4, inet6: IPv6) and whether the distribution runs over TLS.
 */
static int set_proto_dist(options *o, const char *s)
{
    static const struct {
        const char *name;
        int family, tls;
    } protos[] = {
        {"inet_tcp", AF_INET, 0}, {"inet6_tcp", AF_INET6, 0},
        {"inet_tls", AF_INET, 1}, {"inet6_tls", AF_INET6, 1},
    };
    for (size_t i = 0; i < sizeof protos / sizeof protos[0]; i++) {
        if (strcmp(s, protos[i].name) == 0) {
            o->app.node.family = protos[i].family;
            o->proto_tls = protos[i].tls;
            return 0;
        }
    }
    fprintf(stderr, "cnode: --proto-dist takes inet_tcp, inet6_tcp, inet_tls or inet6_tls, not '%s'\n", s);
    return -EINVAL;
}

static int set_tls_verify(options *o, const char *s)
{
    o->tls_flags = o->tls_verify_set = 1;
    if (strcmp(s, "verify_peer") == 0 || strcmp(s, "verify_none") == 0) {
        o->tls.verify_none = strcmp(s, "verify_none") == 0;
        return 0;
    }
    fprintf(stderr, "cnode: --tls-verify takes verify_peer or verify_none, not '%s'\n", s);
    return -EINVAL;
}

/* A --tls-* flag that names a file or switches fail_if_no_peer_cert. */
static int set_tls(options *o, int ch, const char *arg)
{
    o->tls_flags = 1;
    if (ch == OPT_TLS_CERTFILE)
        o->tls.certfile = arg;
    else if (ch == OPT_TLS_KEYFILE)
        o->tls.keyfile = arg;
    else if (ch == OPT_TLS_CACERTFILE)
        o->tls.cacertfile = arg;
    else if (ch == OPT_SSL_DIST_OPTFILE)
        o->optfile = arg;
    else {
        o->tls_fail_set = 1;
        o->tls.no_fail_if_no_peer_cert = ch == OPT_TLS_NO_FAIL;
    }
    return 0;
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

static int set_sched(options *o, const char *arg)
{
    if (strcmp(arg, "batch") != 0 && strcmp(arg, "normal") != 0) {
        fprintf(stderr, "cnode: --sched takes batch or normal, not '%s'\n", arg);
        return -EINVAL;
    }
    o->sched_normal = arg[0] == 'n';
    return 0;
}

static int set_busy_poll_when(options *o, const char *arg)
{
    if (strcmp(arg, "spare-core") == 0)
        o->app.node.cpu_stat_path = "/proc/stat";
    else if (strcmp(arg, "always") == 0)
        o->app.node.cpu_stat_path = NULL;
    else {
        fprintf(stderr, "cnode: --busy-poll-when takes spare-core or always, not '%s'\n", arg);
        return -EINVAL;
    }
    return 0;
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
    case 'w': return parse_long("--window-ms", arg, 1, RL_MAX_WINDOW_MS, &o->window_ms);
    case 'l': return set_log_level(arg);
    case 't': return parse_unsigned("--net-ticktime", arg, 1, 86400, &node->net_ticktime);
    case 'H': return parse_unsigned("--handshake-timeout-ms", arg, 1, 3600000, &node->handshake_timeout_ms);
    case 'i': return parse_long("--counter-initial", arg, INT64_MIN, INT64_MAX, &o->app.counter.initial);
    case 'u': return parse_unsigned("--coalesce-us", arg, 0, 1000, &node->coalesce_us);
    case 'b': return parse_unsigned("--busy-poll-us", arg, 0, 1000, &node->busy_poll_us);
    case 'P': return parse_unsigned("--cast-pause-us", arg, 0, 1000, &node->cast_pause_us);
    case 'X': o->heart = 1; return 0;
    case 'T': return parse_long("--heart-timeout", arg, 1, 86400, &o->heart_timeout_s);
    case 'E': o->app.stop_on_stdin_eof = 1; return 0;
    case 'D': return set_durability(o, arg);
    case 'S': return set_snapshot_bytes(o, arg);
    case 'M': o->app.metrics_listen = arg; return 0;
    case 'h': o->help = 1; return 0;
    case OPT_PROTO_DIST: return set_proto_dist(o, arg);
    case OPT_SCHED: return set_sched(o, arg);
    case OPT_BUSY_POLL_WHEN: return set_busy_poll_when(o, arg);
    case OPT_TLS_VERIFY: return set_tls_verify(o, arg);
    case OPT_TLS_CERTFILE: case OPT_TLS_KEYFILE: case OPT_TLS_CACERTFILE:
    case OPT_TLS_FAIL: case OPT_TLS_NO_FAIL: case OPT_SSL_DIST_OPTFILE: return set_tls(o, ch, arg);
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
        {"cast-pause-us", required_argument, 0, 'P'},
        {"heart", no_argument, 0, 'X'}, {"heart-timeout", required_argument, 0, 'T'},
        {"proto-dist", required_argument, 0, OPT_PROTO_DIST},
        {"tls-certfile", required_argument, 0, OPT_TLS_CERTFILE},
        {"tls-keyfile", required_argument, 0, OPT_TLS_KEYFILE},
        {"tls-cacertfile", required_argument, 0, OPT_TLS_CACERTFILE},
        {"tls-verify", required_argument, 0, OPT_TLS_VERIFY},
        {"tls-fail-if-no-peer-cert", no_argument, 0, OPT_TLS_FAIL},
        {"no-tls-fail-if-no-peer-cert", no_argument, 0, OPT_TLS_NO_FAIL},
        {"ssl-dist-optfile", required_argument, 0, OPT_SSL_DIST_OPTFILE},
        {"stop-on-stdin-eof", no_argument, 0, 'E'},
        {"durability", required_argument, 0, 'D'}, {"snapshot-bytes", required_argument, 0, 'S'},
        {"metrics-listen", required_argument, 0, 'M'},
        {"sched", required_argument, 0, OPT_SCHED},
        {"busy-poll-when", required_argument, 0, OPT_BUSY_POLL_WHEN},
        {0, 0, 0, 0},
    };
    memset(o, 0, sizeof *o);
    o->app.node.coalesce_us = 150;
    o->app.node.cast_pause_us = 500;
    o->app.node.busy_poll_us = 200;
    o->app.node.cpu_stat_path = "/proc/stat";
    o->app.node.family = AF_INET;
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
    if (o->heart_timeout_s && !o->heart) {
        fprintf(stderr, "cnode: --heart-timeout needs --heart\n");
        return -EINVAL;
    }
    if (o->tls_flags && !o->proto_tls) {
        fprintf(stderr, "cnode: the --tls-* flags and --ssl-dist-optfile need --proto-dist inet_tls or inet6_tls\n");
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

/*
 * With TLS, the files are loaded and checked now, so
 * a configuration that cannot work is one line at start-up, not a refusal of
 * every peer later. 0, or < 0 after that line.
 */
static int check_tls(options *o)
{
    if (!o->proto_tls)
        return 0;
    char why[512];
    /* erl's optfile fills what the --tls-* flags leave unset. */
    if (o->optfile != NULL) {
        if (cn_tls_optfile_read(o->optfile, &o->opt, why, sizeof why) < 0) {
            fprintf(stderr, "cnode: --ssl-dist-optfile %s\n", why);
            return CN_ETLS;
        }
        cn_tls_optfile_apply(&o->opt, &o->tls, o->tls_verify_set, o->tls_fail_set);
    }
    cn_tls_ctx *ctx;
    int rc = cn_tls_ctx_new(&o->tls, &ctx, why, sizeof why);
    if (rc < 0) {
        fprintf(stderr, "cnode: TLS: %s\n", why);
        return rc;
    }
    cn_tls_ctx_free(ctx);
    o->app.node.tls = &o->tls;
    return 0;
}

/* The cookie (from ~/.erlang.cookie unless given), the data dir and the servers' config. 0 or < 0. */
static int complete_config(options *o)
{
    if (check_tls(o) < 0)
        return -EINVAL;
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

/* The watchdog lost: stop the way SIGTERM does, so every server saves, but with status 1. */
static void heart_lost(void *data)
{
    sup_app_stop(data, 1);
}

/* Beats to the watchdog when beat_fd >= 0. 0, or a libuv error (then the app stops). */
static int start_beat(uv_loop_t *loop, sup_app *app, const options *o, int beat_fd, sup_heart_beat **out)
{
    *out = NULL;
    if (beat_fd < 0)
        return 0;
    /* The node's SIGTERM handlers exist now: a forwarded SIGTERM held until here finds them. */
    sup_heart_unblock_signals();
    unsigned interval = sup_heart_beat_interval_ms((unsigned)o->heart_timeout_s);
    int rc = sup_heart_beat_start(loop, beat_fd, interval, heart_lost, app, out);
    if (rc < 0)
        fprintf(stderr, "cnode: cannot beat to the watchdog: %s\n", cn_strerror(rc));
    return rc;
}

/*
 * The node's threads run under SCHED_BATCH unless --sched normal: when a
 * request wakes the node, it does not preempt the thread that was running on
 * that core. Where the node shares its cores with the BEAM nodes that call it,
 * that thread is often the caller's scheduler, in the middle of writing the
 * caller's next requests to us (its distribution port's writes), and taking
 * its core away then slowed the caller more than it sped us up (README, "The
 * fifth session of 2 December", in Benchmark). On an idle core nothing changes: a woken
 * thread runs at once under either policy. Set before the loop's thread pool
 * exists, so its threads inherit it; the watchdog of --heart keeps its own.
 * Any thread may choose SCHED_BATCH; a refusal (a sandbox's filter) is a
 * warning, and the node runs on as it was.
 */
static void set_sched_policy(const options *o)
{
    if (o->sched_normal)
        return;
    struct sched_param param = {.sched_priority = 0};
    if (sched_setscheduler(0, SCHED_BATCH, &param) < 0)
        CN_WARN("node", "cannot run under SCHED_BATCH (%s); running under the default policy", strerror(errno));
}

/* The node itself, with or without a watchdog above it: its exit status. */
static int run_node(options *o, int beat_fd)
{
    signal(SIGPIPE, SIG_IGN);
    set_sched_policy(o);
    uv_loop_t *loop = uv_default_loop();
    sup_app *app;
    int rc = sup_app_new(loop, &o->app, &app);
    if (rc < 0) {
        fprintf(stderr, "cnode: bad node name '%s': %s\n", o->app.node.name, cn_strerror(rc));
        return 2;
    }
    sup_heart_beat *beat;
    if (start_beat(loop, app, o, beat_fd, &beat) < 0)
        sup_app_stop(app, 1);
    else
        start(app, o);
    uv_run(loop, UV_RUN_DEFAULT);
    int status = sup_app_status(app);
    /* The beats went on through the whole stop; the heart's handles close last. */
    sup_heart_beat_close(beat);
    uv_run(loop, UV_RUN_DEFAULT);
    if (sup_app_free(app) == 0)
        uv_loop_close(loop);
    return status;
}

/*
 * --heart: becomes the watchdog. Returns 1 in the watchdog once it is done
 * (its status in *status), 0 in a node (its heartbeat socket in *beat_fd).
 */
static int become_watchdog(options *o, int *beat_fd, int *status)
{
    if (o->heart_timeout_s == 0)
        o->heart_timeout_s = SUP_HEART_DEFAULT_TIMEOUT_S;
    sup_heart_config hc = {.timeout_s = (unsigned)o->heart_timeout_s, .name = o->app.node.name};
    int rc = sup_heart_run(&hc, beat_fd, status);
    if (rc < 0) {
        fprintf(stderr, "cnode: cannot start the heart watchdog: %s\n", cn_strerror(rc));
        *status = 1;
        return 1;
    }
    return rc == SUP_HEART_DONE;
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
    o.app.ready_cb = sup_app_print_ready;
    int beat_fd = -1, status;
    if (o.heart && become_watchdog(&o, &beat_fd, &status))
        return status;
    return run_node(&o, beat_fd);
}

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "load/args.h"

const char ld_usage[] =
    "usage: cnode-load --target NODE [--cookie C] [--request increment|check_rate|cast]\n"
    "                  [--nodes K] [--inflight M] [--rate R] [--duration S] [--warmup S]\n"
    "                  [--ids N] [--timeout-ms MS] [--drain-ms MS] [--server-pid PID]\n"
    "                  [--name PREFIX] [--host HOST] [--busy-poll-us US] [--coalesce-us US]\n"
    "                  [--batch-us US] [--label TEXT]\n"
    "Closed loop (M calls in flight per node) without --rate; open loop at R calls/s\n"
    "in total with it (at most M in flight per node, latency from each call's due time).\n";

void ld_config_default(ld_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->request = LD_INCREMENT;
    cfg->nodes = 1;
    cfg->duration_s = 5;
    cfg->warmup_s = 1;
    cfg->ids = 1000;
    cfg->timeout_ms = 5000;
    cfg->drain_ms = 2000;
    cfg->host = "127.0.0.1";
    cfg->coalesce_us = 0;
    cfg->batch_us = 100;
}

const char *ld_request_name(ld_request r)
{
    switch (r) {
    case LD_INCREMENT: return "increment";
    case LD_CHECK_RATE: return "check_rate";
    case LD_CAST: return "cast";
    }
    return "?";
}

static int parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    if (*s == '\0' || *s == '-' || *s == '+')
        return -1;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double min, double max, double *out)
{
    char *end;
    errno = 0;
    if (*s == '\0')
        return -1;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !(v >= min && v <= max))
        return -1;
    *out = v;
    return 0;
}

static int parse_request(const char *s, ld_request *r)
{
    for (int k = LD_INCREMENT; k <= LD_CAST; k++)
        if (strcmp(s, ld_request_name((ld_request)k)) == 0) {
            *r = (ld_request)k;
            return 0;
        }
    return -1;
}

/* The unsigned flags: name, bounds, and where the value goes. */
typedef struct uflag {
    const char *name;
    unsigned long min, max;
    size_t offset;
} uflag;

static const uflag uflags[] = {
    {"--nodes", 1, 4096, offsetof(ld_config, nodes)},
    {"--inflight", 1, 1u << 20, offsetof(ld_config, inflight)},
    {"--ids", 1, 100000000, offsetof(ld_config, ids)},
    {"--timeout-ms", 1, 3600000, offsetof(ld_config, timeout_ms)},
    {"--drain-ms", 0, 3600000, offsetof(ld_config, drain_ms)},
    {"--busy-poll-us", 0, 1000, offsetof(ld_config, busy_poll_us)},
    {"--coalesce-us", 0, 1000, offsetof(ld_config, coalesce_us)},
    {"--batch-us", 0, 10000, offsetof(ld_config, batch_us)},
};

/* One "--flag value" pair into cfg: 0, or -1 for an unknown flag or a bad value. */
static int parse_pair(const char *flag, const char *val, ld_config *cfg)
{
    for (size_t k = 0; k < sizeof uflags / sizeof uflags[0]; k++)
        if (strcmp(flag, uflags[k].name) == 0) {
            unsigned long v;
            if (parse_uint(val, uflags[k].min, uflags[k].max, &v) < 0)
                return -1;
            *(unsigned *)((char *)cfg + uflags[k].offset) = (unsigned)v;
            return 0;
        }
    unsigned long pid;
    if (strcmp(flag, "--target") == 0)
        cfg->target = val;
    else if (strcmp(flag, "--cookie") == 0)
        cfg->cookie = val;
    else if (strcmp(flag, "--name") == 0)
        cfg->name = val;
    else if (strcmp(flag, "--host") == 0)
        cfg->host = val;
    else if (strcmp(flag, "--label") == 0)
        cfg->label = val;
    else if (strcmp(flag, "--request") == 0)
        return parse_request(val, &cfg->request);
    else if (strcmp(flag, "--rate") == 0)
        return parse_double(val, 0, 1e9, &cfg->rate);
    else if (strcmp(flag, "--duration") == 0)
        return parse_double(val, 0.01, 86400, &cfg->duration_s);
    else if (strcmp(flag, "--warmup") == 0)
        return parse_double(val, 0, 86400, &cfg->warmup_s);
    else if (strcmp(flag, "--server-pid") == 0) {
        if (parse_uint(val, 1, 1ul << 22, &pid) < 0)
            return -1;
        cfg->server_pid = (long)pid;
    } else
        return -1;
    return 0;
}

static int fail(char *err, size_t errlen, const char *fmt, const char *what)
{
    snprintf(err, errlen, fmt, what);
    return -1;
}

int ld_args_parse(int argc, char **argv, ld_config *cfg, char *err, size_t errlen)
{
    ld_config_default(cfg);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
        if (i + 1 >= argc)
            return fail(err, errlen, "%s needs a value", argv[i]);
        if (parse_pair(argv[i], argv[i + 1], cfg) < 0)
            return fail(err, errlen, "bad flag or value: %s", argv[i]);
        i++;
    }
    if (cfg->target == NULL || strchr(cfg->target, '@') == NULL)
        return fail(err, errlen, "%s", "--target NAME@HOST is required");
    if (cfg->inflight == 0)
        cfg->inflight = cfg->rate > 0 ? 1024 : 1;
    if (cfg->request == LD_CAST && cfg->rate <= 0)
        return fail(err, errlen, "%s", "--request cast needs --rate (casts have no replies to close a loop)");
    return 0;
}

/*
 * The load generator's command line, parsed into an ld_config. Pure (no I/O,
 * no global state such as getopt's), so the tests can parse many lines.
 *
 *   cnode-load --target NODE [--cookie C] [--request increment|check_rate|cast]
 *              [--nodes K] [--inflight M] [--rate R] [--duration S] [--warmup S]
 *              [--ids N] [--timeout-ms MS] [--drain-ms MS] [--server-pid PID]
 *              [--name PREFIX] [--host HOST] [--busy-poll-us US] [--coalesce-us US]
 *              [--batch-us US] [--label TEXT]
 */
#ifndef LD_ARGS_H
#define LD_ARGS_H

#include <stddef.h>

typedef enum ld_request { LD_INCREMENT = 0, LD_CHECK_RATE, LD_CAST } ld_request;

typedef struct ld_config {
    const char *target;         /* the node under test, "name@host"; required */
    const char *cookie;         /* NULL: ~/.erlang.cookie */
    ld_request request;
    unsigned nodes;             /* K: simulated caller nodes, each its own connection */
    unsigned inflight;          /* M per node: exactly (closed loop) or at most (open loop) */
    double rate;                /* calls/s offered over all nodes; 0: closed loop */
    double duration_s;          /* the measured window */
    double warmup_s;            /* load before the window, not measured */
    unsigned ids;               /* check_rate ids "client-0" .. round-robin */
    unsigned timeout_ms;        /* a call unanswered this long is a timeout, as gen:call's */
    unsigned drain_ms;          /* after the window, how long calls due in it may finish */
    long server_pid;            /* 0, or the server's OS pid: its CPU over the window */
    const char *name;           /* node name prefix: NAME_<i>@HOST; NULL: load<pid> */
    const char *host;
    unsigned busy_poll_us;      /* the generator nodes' own busy polling (0: they sleep) */
    unsigned coalesce_us;       /* pause after a turn of many replies (0: never), as the C node */
    unsigned batch_us;          /* open loop: sends at most once per batch_us (0: each at its time) */
    const char *label;          /* copied into the result line */
} ld_config;

/*
 * The defaults: closed loop, 1 node, 1 in flight, :increment, 5 s after 1 s of
 * warm-up, no coalescing pause, open-loop sends batched over 100 us.
 */
void ld_config_default(ld_config *cfg);
/*
 * Parses argv[1..argc) into cfg (strings are borrowed from argv). Returns 0,
 * 1 for --help, or -1 with a one-line reason in err. An open loop (--rate)
 * without --inflight allows 1024 calls in flight per node.
 */
int ld_args_parse(int argc, char **argv, ld_config *cfg, char *err, size_t errlen);
const char *ld_request_name(ld_request r);
extern const char ld_usage[];

#endif

/*
 * build/cnode-load: calls a node's counter or rate_limiter as K caller nodes
 * would, and prints what it measured as one machine-readable line (RESULT
 * key=value ...) and one line for people. See load/args.h for the flags and
 * README.md (Load generator) for what it measures.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnode/log.h"
#include "cnode/mem.h"
#include "load/args.h"
#include "load/load.h"

/* ~/.erlang.cookie, as erl reads it; NULL when there is none. */
static char *read_cookie(void)
{
    const char *home = getenv("HOME");
    char path[4096], buf[256];
    if (home == NULL)
        return NULL;
    snprintf(path, sizeof path, "%s/.erlang.cookie", home);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    buf[n] = '\0';
    return n > 0 ? cn_strdup(buf) : NULL;
}

static double us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

static void print_result(const ld_config *cfg, const ld_result *r)
{
    const ld_hist *h = r->hist;
    const char *mode = cfg->rate > 0 ? "open" : "closed";
    printf("RESULT label=%s request=%s mode=%s nodes=%u inflight=%u offered=%.0f achieved=%.1f calls=%llu "
           "window_s=%.3f p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f "
           "errors=%llu timeouts=%llu rejected=%llu unfinished=%llu peak_inflight=%llu "
           "gen_cpu_us_per_call=%.3f server_cpu_us_per_call=%.3f server_cores=%.3f gen_cores=%.3f "
           "server_core_busy=%.3f gen_core_busy=%.3f\n",
           cfg->label ? cfg->label : "-", ld_request_name(cfg->request), mode, cfg->nodes, cfg->inflight,
           cfg->rate, r->achieved, (unsigned long long)r->calls, r->window_s, us(ld_hist_quantile(h, 0.5)),
           us(ld_hist_quantile(h, 0.9)), us(ld_hist_quantile(h, 0.99)), us(ld_hist_quantile(h, 0.999)),
           us(h->max == 0 ? 0 : h->max), us((uint64_t)ld_hist_mean(h)), (unsigned long long)r->errors,
           (unsigned long long)r->timeouts, (unsigned long long)r->rejected, (unsigned long long)r->unfinished,
           (unsigned long long)r->peak_inflight, r->gen_cpu_us_per_call, r->server_cpu_us_per_call,
           r->server_cpu_share, r->gen_cpu_share, r->server_core_busy, r->gen_core_busy);
    printf("# %s %s, %s loop, %u node(s) x %u in flight: %.0f calls/s", cfg->target, ld_request_name(cfg->request),
           mode, cfg->nodes, cfg->inflight, r->achieved);
    if (cfg->rate > 0)
        printf(" of %.0f offered", cfg->rate);
    printf(", p50 %.0f us, p99 %.0f us, p99.9 %.0f us; generator %.2f us CPU/call", us(ld_hist_quantile(h, 0.5)),
           us(ld_hist_quantile(h, 0.99)), us(ld_hist_quantile(h, 0.999)), r->gen_cpu_us_per_call);
    if (r->server_cpu_us_per_call >= 0)
        printf(", server %.2f us CPU/call", r->server_cpu_us_per_call);
    if (r->errors || r->timeouts || r->unfinished)
        printf("; %llu errors, %llu timeouts, %llu unfinished", (unsigned long long)r->errors,
               (unsigned long long)r->timeouts, (unsigned long long)r->unfinished);
    printf("\n");
}

int main(int argc, char **argv)
{
    ld_config cfg;
    char err[256];
    int rc = ld_args_parse(argc, argv, &cfg, err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "cnode-load: %s\n", err);
        fputs(ld_usage, rc < 0 ? stderr : stdout);
        return rc < 0 ? 2 : 0;
    }
    char *cookie = NULL;
    if (cfg.cookie == NULL && (cfg.cookie = cookie = read_cookie()) == NULL) {
        fprintf(stderr, "cnode-load: no --cookie and no ~/.erlang.cookie\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    cn_log_threshold = CN_LOG_WARNING;
    ld_result res;
    res.hist = cn_malloc(sizeof *res.hist);
    rc = ld_run(&cfg, &res);
    if (rc == 0)
        print_result(&cfg, &res);
    free(res.hist);
    free(cookie);
    return rc == 0 ? 0 : 1;
}

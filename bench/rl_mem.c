/*
 * rl-mem: the rate limiter's table alone, without the network: RSS per client
 * and rl_check calls/s at 1,000 clients and at N clients (default 10,000,000),
 * with ids shaped like make bench's memory fill ("client-" <> 1000000000 + k as
 * a binary) and its limits (max_requests 1000000, window 600000 ms).
 *
 *   build/rl-mem [clients] [calls per timing]
 *
 * Three timings of rl_check, each over `calls` requests with a clock that does
 * not move (nothing expires): a table of 1,000 clients (then freed); 1,000 hot
 * clients in the table of N; and uniformly random clients of the N (about every
 * call a cache miss, and the client's second stamp moves it to a ring: the worst
 * case). RSS is VmRSS from /proc/self/statm before the big table and after its
 * fill, one request per client. The
 * numbers are for one process on whatever else the machine is doing.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ei.h>

#include "cnode/buf.h"
#include "genserver/rl_table.h"

#define MAX_REQUESTS 1000000
#define WINDOW_MS 600000

static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (f != NULL) {
        if (fscanf(f, "%lu %lu", &size, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The id of client k as BINARY_EXT; returns its length. */
static int id_of(uint64_t k, char *b)
{
    int n = snprintf(b + 5, 32, "client-%" PRIu64, 1000000000u + k);
    b[0] = ERL_BINARY_EXT;
    cn_set_u32(b + 1, (uint32_t)n);
    return 5 + n;
}

static void request(rl_table *t, uint64_t k, int64_t now)
{
    char b[40];
    uint32_t remaining;
    id_of(k, b);
    if (rl_check(t, b, 0, now, &remaining) != 1) {
        fprintf(stderr, "client %" PRIu64 " refused\n", k);
        exit(1);
    }
}

static uint64_t rng = 88172645463325252u;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* calls/s of `calls` requests for clients drawn from [0, span). */
static double timing(rl_table *t, uint64_t span, uint64_t calls, int random)
{
    double t0 = now_s();
    for (uint64_t i = 0; i < calls; i++)
        request(t, random ? next_rand() % span : i % span, 1);
    return (double)calls / (now_s() - t0);
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 10000000;
    uint64_t calls = argc > 2 ? strtoull(argv[2], NULL, 10) : 2000000;
    if (n < 1000)
        n = 1000;
    /* The small table is timed and freed first, so its grown rings are not in
     * the big table's RSS. */
    rl_table *t = rl_table_new(MAX_REQUESTS, WINDOW_MS);
    for (uint64_t k = 0; k < 1000; k++)
        request(t, k, 0);
    double small = timing(t, 1000, calls, 0);
    rl_table_free(t);
    size_t rss0 = rss_bytes();
    t = rl_table_new(MAX_REQUESTS, WINDOW_MS);
    double t0 = now_s();
    for (uint64_t k = 0; k < n; k++)
        request(t, k, 0);
    double fill = (double)n / (now_s() - t0);
    size_t rss1 = rss_bytes();
    double hot = timing(t, 1000, calls, 0);
    double cold = timing(t, n, calls, 1);
    printf("clients %" PRIu64 ": RSS %.1f MiB -> %.1f MiB, %.1f bytes/client; fill %.0f calls/s\n",
           n, rss0 / 1048576.0, rss1 / 1048576.0, (double)(rss1 - rss0) / (double)n, fill);
    printf("rl_check calls/s: 1000 clients %.0f; 1000 hot of %" PRIu64 " %.0f (%.2fx); "
           "random of %" PRIu64 " %.0f (%.2fx)\n",
           small, n, hot, hot / small, n, cold, cold / small);
    rl_table_free(t);
    return 0;
}

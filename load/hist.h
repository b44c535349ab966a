/*
 * A latency histogram with log-spaced buckets, as HdrHistogram lays them out:
 * exact below 128, then 64 buckets per power of two, so a recorded value is
 * known within 1/64 of itself (a reported quantile, the bucket's middle, within
 * 1/128) from nanoseconds to centuries, in a fixed 30 KiB and with no
 * allocation. Recording is an index computation and an increment.
 *
 * Pure: no clock, no I/O. The caller allocates the struct (it is large: keep
 * it off small stacks) and ld_hist_reset()s it before use.
 */
#ifndef LD_HIST_H
#define LD_HIST_H

#include <stdint.h>

#define LD_HIST_SUB_BITS 6
#define LD_HIST_HALF (1u << LD_HIST_SUB_BITS)                  /* 64 */
#define LD_HIST_BUCKETS ((64 - LD_HIST_SUB_BITS) * LD_HIST_HALF + LD_HIST_HALF) /* every uint64_t */

typedef struct ld_hist {
    uint64_t count;
    uint64_t min, max;          /* exact; min is UINT64_MAX while empty */
    long double sum;            /* for the mean */
    uint64_t b[LD_HIST_BUCKETS];
} ld_hist;

void ld_hist_reset(ld_hist *h);
void ld_hist_record(ld_hist *h, uint64_t v);
/* Adds every value of src to dst. */
void ld_hist_merge(ld_hist *dst, const ld_hist *src);
/*
 * The q-quantile (0 <= q <= 1): the middle of the bucket that holds the value
 * of rank ceil(q * count), clamped to [min, max]. 0 for an empty histogram.
 */
uint64_t ld_hist_quantile(const ld_hist *h, double q);
double ld_hist_mean(const ld_hist *h);

/* The bucket a value falls in, and a bucket's lowest value and width (tests, and the walk above). */
unsigned ld_hist_index(uint64_t v);
uint64_t ld_hist_bucket_low(unsigned idx);
uint64_t ld_hist_bucket_width(unsigned idx);

#endif

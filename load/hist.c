/*
 * The bucket layout: a value below 2 * HALF (128) is its own bucket. Above, a
 * value v with its highest bit at e (2^e <= v < 2^(e+1)) is shifted right by
 * s = e - SUB_BITS, leaving a mantissa m in [HALF, 2 * HALF); its bucket is
 * s * HALF + m, which continues the exact range without a gap (s = 1, m = 64
 * is bucket 128, the value 128). Every bucket of shift s is 2^s wide.
 */
#include <string.h>

#include "load/hist.h"

void ld_hist_reset(ld_hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

unsigned ld_hist_index(uint64_t v)
{
    if (v < 2 * LD_HIST_HALF)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned s = e - LD_HIST_SUB_BITS;
    return s * LD_HIST_HALF + (unsigned)(v >> s);
}

uint64_t ld_hist_bucket_low(unsigned idx)
{
    if (idx < 2 * LD_HIST_HALF)
        return idx;
    unsigned s = idx / LD_HIST_HALF - 1;
    uint64_t m = idx % LD_HIST_HALF + LD_HIST_HALF;
    return m << s;
}

uint64_t ld_hist_bucket_width(unsigned idx)
{
    if (idx < 2 * LD_HIST_HALF)
        return 1;
    return (uint64_t)1 << (idx / LD_HIST_HALF - 1);
}

void ld_hist_record(ld_hist *h, uint64_t v)
{
    h->b[ld_hist_index(v)]++;
    h->count++;
    h->sum += (long double)v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void ld_hist_merge(ld_hist *dst, const ld_hist *src)
{
    for (unsigned i = 0; i < LD_HIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t ld_hist_quantile(const ld_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    long double x = (long double)q * (long double)h->count;
    uint64_t rank = (uint64_t)x;
    if ((long double)rank < x)
        rank++;
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    unsigned i = 0;
    for (; i < LD_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank)
            break;
    }
    uint64_t v = ld_hist_bucket_low(i) + (ld_hist_bucket_width(i) - 1) / 2;
    if (v < h->min)
        v = h->min;
    if (v > h->max)
        v = h->max;
    return v;
}

double ld_hist_mean(const ld_hist *h)
{
    return h->count == 0 ? 0.0 : (double)(h->sum / (long double)h->count);
}

/*
 * Metrics: counters, gauges and histograms, rendered as Prometheus text
 * (exposition format 0.0.4) or encoded as an Erlang map.
 *
 * The registry is the process's, as Prometheus client libraries keep a default
 * one: the node has one loop thread, and every figure is written and read on it,
 * so an increment is a plain add with no lock and no allocation. Registering a
 * series allocates; do it once (at a server's start) and keep the pointer.
 *
 * A series is a family name (e.g. "cnode_calls_total") plus up to two label
 * pairs. Registering the same name and labels again returns the same series, so
 * a restarted server goes on counting where its predecessor stopped, as a
 * Prometheus counter should.
 *
 * The runtime's own figures (connections, refusals, bytes) are a fixed array,
 * counted with CN_METRIC_INC/ADD from cnode/ without any registration.
 */
#ifndef CN_METRICS_H
#define CN_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <ei.h>

/* The runtime's fixed counters; their names and help are in metrics.c. */
typedef enum cn_metric_id {
    CN_MET_ACCEPTED,            /* connections accepted on the listener */
    CN_MET_DIALED,              /* connections dialed to other nodes */
    CN_MET_REFUSED_COOKIE,      /* handshake refused: the digest did not match the cookie */
    CN_MET_REFUSED_MALFORMED,   /* handshake refused: a message broke the protocol */
    CN_MET_REFUSED_STATUS,      /* handshake refused by a status (not_allowed, alive, ...) */
    CN_MET_REFUSED_TIMEOUT,     /* handshake not completed in time */
    CN_MET_REFUSED_TLS,         /* TLS handshake failed */
    CN_MET_BYTES_IN,            /* bytes read from distribution transports */
    CN_MET_BYTES_OUT,           /* bytes handed to distribution transports */
    CN_MET_COUNT
} cn_metric_id;

extern uint64_t cn_metrics_fixed[CN_MET_COUNT];
#define CN_METRIC_INC(id) (cn_metrics_fixed[(id)]++)
#define CN_METRIC_ADD(id, n) (cn_metrics_fixed[(id)] += (uint64_t)(n))

/* A handshake failure code (cn_hs's error: CN_ECOOKIE, CN_EPROTO, ...) counted by cause. */
void cn_metrics_refused(int code);

typedef struct cn_metrics cn_metrics;
typedef struct cn_series cn_series;

typedef struct cn_counter {
    uint64_t v;
} cn_counter;
#define cn_counter_inc(c) ((c)->v++)

/* Fixed log buckets (upper bounds in seconds, 1-2.5-5 per decade from 10 us to 10 s), then +Inf. */
#define CN_HIST_BUCKETS 19
typedef struct cn_histogram {
    uint64_t bucket[CN_HIST_BUCKETS + 1]; /* not cumulative; the last is +Inf */
    uint64_t count;
    uint64_t sum_ns;
} cn_histogram;

typedef double (*cn_gauge_fn)(void *arg);

/* Label pairs: {key1, value1, key2, value2}; unused entries NULL. */
typedef struct cn_labels {
    const char *kv[4];
} cn_labels;

/* The process's registry, made on first use with the fixed series in it. */
cn_metrics *cn_metrics_default(void);

/* A registry of one's own (tests). Free with cn_metrics_free. */
cn_metrics *cn_metrics_new(void);
void cn_metrics_free(cn_metrics *m);

/*
 * Registers (or finds) a series. name and help are copied, as are the labels;
 * help is that of the family's first series. The pointers returned stay valid
 * until cn_metrics_free, also across restarts of what counts into them.
 */
cn_counter *cn_metrics_counter(cn_metrics *m, const char *name, const char *help, const cn_labels *l);
cn_histogram *cn_metrics_histogram(cn_metrics *m, const char *name, const char *help, const cn_labels *l);
/*
 * A gauge read by fn(arg) at each scrape. A second registration of the same
 * series takes it over (the new fn and arg). Remove it before arg goes away:
 * cn_metrics_gauge_remove(m, the series) does nothing if another arg owns it now.
 */
cn_series *cn_metrics_gauge(cn_metrics *m, const char *name, const char *help, const cn_labels *l,
                            cn_gauge_fn fn, void *arg);
void cn_metrics_gauge_remove(cn_metrics *m, cn_series *s, void *arg);

/*
 * Journal sync latency, in the process's registry: the journal calls
 * cn_metrics_observe(&cn_metrics_journal_sync, ns) around each sync.
 */
extern cn_histogram cn_metrics_journal_sync;

/* One observation of a duration in nanoseconds (uv_hrtime differences). */
void cn_metrics_observe(cn_histogram *h, uint64_t ns);
/* The bucket bounds in seconds, i < CN_HIST_BUCKETS. */
double cn_metrics_bucket_le(int i);

/*
 * Renders the registry as Prometheus text into a new NUL-terminated string the
 * caller frees; *len is its length. Families in registration order.
 */
char *cn_metrics_render(cn_metrics *m, size_t *len);

/*
 * Encodes the registry as an Erlang map (no version byte) into x:
 *   #{Family (atom, without the "cnode_" prefix) => Value}
 * where Value is, for a family without labels, the figure itself (an integer,
 * a float for a gauge, a histogram map), and otherwise a map from the labels
 * (#{key atom => binary}) to the figure. A histogram is
 *   #{count => N, sum => Seconds, buckets => [{Le, CumulativeCount}], Le a float or infinity}.
 */
void cn_metrics_encode(cn_metrics *m, ei_x_buff *x);

#endif

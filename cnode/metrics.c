/*
 * The metrics registry: families of series in registration order, each a list
 * (a scrape walks them all; registration is rare and lookups happen only then).
 */
#include "cnode/metrics.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnode/error.h"
#include "cnode/mem.h"

uint64_t cn_metrics_fixed[CN_MET_COUNT];

enum kind { K_COUNTER, K_GAUGE, K_HIST };

struct cn_series {
    char *kv[4];
    uint64_t *cv;           /* the counter's value: own_c or a fixed slot */
    cn_histogram *hv;       /* the histogram: own_h */
    cn_gauge_fn fn;
    void *arg;
    cn_counter own_c;
    cn_histogram own_h;
    struct cn_series *next;
};

typedef struct family {
    char *name, *help;
    enum kind kind;
    cn_series *head, *tail;
    struct family *next;
} family;

struct cn_metrics {
    family *head, *tail;
};

static const uint64_t bucket_ns[CN_HIST_BUCKETS] = {
    10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000, 25000000, 50000000,
    100000000, 250000000, 500000000, 1000000000, 2500000000u, 5000000000u, 10000000000u,
};

double cn_metrics_bucket_le(int i)
{
    return (double)bucket_ns[i] / 1e9;
}

void cn_metrics_observe(cn_histogram *h, uint64_t ns)
{
    int i = 0;
    while (i < CN_HIST_BUCKETS && ns > bucket_ns[i])
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum_ns += ns;
}

/* ---- Registration ---- */

cn_metrics *cn_metrics_new(void)
{
    return cn_calloc(1, sizeof(cn_metrics));
}

void cn_metrics_free(cn_metrics *m)
{
    family *f = m->head;
    while (f) {
        family *fn = f->next;
        cn_series *s = f->head;
        while (s) {
            cn_series *sn = s->next;
            for (int i = 0; i < 4; i++)
                free(s->kv[i]);
            free(s);
            s = sn;
        }
        free(f->name);
        free(f->help);
        free(f);
        f = fn;
    }
    free(m);
}

static family *family_get(cn_metrics *m, const char *name, const char *help, enum kind kind)
{
    for (family *f = m->head; f; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            assert(f->kind == kind); /* one name, one type: a second type is a programming error */
            return f;
        }
    }
    family *f = cn_calloc(1, sizeof *f);
    f->name = cn_strdup(name);
    f->help = cn_strdup(help);
    f->kind = kind;
    if (m->tail)
        m->tail->next = f;
    else
        m->head = f;
    m->tail = f;
    return f;
}

static int same_labels(const cn_series *s, const cn_labels *l)
{
    for (int i = 0; i < 4; i++) {
        const char *a = s->kv[i], *b = l ? l->kv[i] : NULL;
        if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0))
            return 0;
    }
    return 1;
}

static cn_series *series_get(cn_metrics *m, const char *name, const char *help, enum kind kind,
                             const cn_labels *l)
{
    family *f = family_get(m, name, help, kind);
    for (cn_series *s = f->head; s; s = s->next)
        if (same_labels(s, l))
            return s;
    cn_series *s = cn_calloc(1, sizeof *s);
    for (int i = 0; i < 4 && l; i++)
        s->kv[i] = l->kv[i] ? cn_strdup(l->kv[i]) : NULL;
    s->cv = &s->own_c.v;
    s->hv = &s->own_h;
    if (f->tail)
        f->tail->next = s;
    else
        f->head = s;
    f->tail = s;
    return s;
}

cn_counter *cn_metrics_counter(cn_metrics *m, const char *name, const char *help, const cn_labels *l)
{
    return &series_get(m, name, help, K_COUNTER, l)->own_c;
}

cn_histogram *cn_metrics_histogram(cn_metrics *m, const char *name, const char *help, const cn_labels *l)
{
    return series_get(m, name, help, K_HIST, l)->hv;
}

cn_series *cn_metrics_gauge(cn_metrics *m, const char *name, const char *help, const cn_labels *l,
                            cn_gauge_fn fn, void *arg)
{
    cn_series *s = series_get(m, name, help, K_GAUGE, l);
    s->fn = fn;
    s->arg = arg;
    return s;
}

void cn_metrics_gauge_remove(cn_metrics *m, cn_series *s, void *arg)
{
    (void)m;
    /* The series stays (it reads 0): a restarted owner registers it again. */
    if (s && s->arg == arg) {
        s->fn = NULL;
        s->arg = NULL;
    }
}

static double gauge_value(const cn_series *s)
{
    return s->fn ? s->fn(s->arg) : 0.0;
}

/* ---- The process's registry ---- */

static cn_metrics *default_registry;
cn_histogram cn_metrics_journal_sync;

static void fixed(cn_metrics *m, const char *name, const char *help, const char *key, const char *val,
                  cn_metric_id id)
{
    cn_labels l = {{key, val, NULL, NULL}};
    series_get(m, name, help, K_COUNTER, key ? &l : NULL)->cv = &cn_metrics_fixed[id];
}

static void register_fixed(cn_metrics *m)
{
    static const char refused[] = "Handshakes refused, by cause.";
    fixed(m, "cnode_connections_accepted_total", "Distribution connections accepted.", NULL, NULL,
          CN_MET_ACCEPTED);
    fixed(m, "cnode_connections_dialed_total", "Distribution connections dialed.", NULL, NULL, CN_MET_DIALED);
    fixed(m, "cnode_handshake_refusals_total", refused, "cause", "bad_cookie", CN_MET_REFUSED_COOKIE);
    fixed(m, "cnode_handshake_refusals_total", refused, "cause", "malformed", CN_MET_REFUSED_MALFORMED);
    fixed(m, "cnode_handshake_refusals_total", refused, "cause", "status", CN_MET_REFUSED_STATUS);
    fixed(m, "cnode_handshake_refusals_total", refused, "cause", "timeout", CN_MET_REFUSED_TIMEOUT);
    fixed(m, "cnode_handshake_refusals_total", refused, "cause", "tls", CN_MET_REFUSED_TLS);
    fixed(m, "cnode_received_bytes_total", "Bytes read from distribution transports.", NULL, NULL,
          CN_MET_BYTES_IN);
    fixed(m, "cnode_sent_bytes_total", "Bytes handed to distribution transports.", NULL, NULL, CN_MET_BYTES_OUT);
    series_get(m, "cnode_journal_sync_seconds", "Journal sync latency.", K_HIST, NULL)->hv =
        &cn_metrics_journal_sync;
}

cn_metrics *cn_metrics_default(void)
{
    if (default_registry == NULL) {
        default_registry = cn_metrics_new();
        register_fixed(default_registry);
    }
    return default_registry;
}

void cn_metrics_refused(int code)
{
    switch (code) {
    case CN_ECOOKIE: CN_METRIC_INC(CN_MET_REFUSED_COOKIE); break;
    case CN_ENOTALIVE: CN_METRIC_INC(CN_MET_REFUSED_STATUS); break;
    default: CN_METRIC_INC(CN_MET_REFUSED_MALFORMED); break;
    }
}

/* ---- Prometheus text ---- */

typedef struct out {
    char *p;
    size_t len, cap;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        assert(n >= 0);
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        o->cap = o->cap * 2 + (size_t)n;
        o->p = cn_realloc(o->p, o->cap);
    }
}

/* A label value with backslash, double quote and newline escaped, as the format asks. */
static void put_value(out *o, const char *v)
{
    if (strpbrk(v, "\\\"\n") == NULL) {
        put(o, "%s", v);
        return;
    }
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            put(o, "\\%c", *v);
        else if (*v == '\n')
            put(o, "\\n");
        else
            put(o, "%c", *v);
    }
}

/* {k="v",...,extra} or nothing; extra is a pre-rendered pair (the le of a bucket). */
static void put_labels(out *o, const cn_series *s, const char *extra)
{
    if (s->kv[0] == NULL && extra == NULL)
        return;
    put(o, "{");
    const char *sep = "";
    for (int i = 0; i < 4 && s->kv[i]; i += 2) {
        put(o, "%s%s=\"", sep, s->kv[i]);
        put_value(o, s->kv[i + 1] ? s->kv[i + 1] : "");
        put(o, "\"");
        sep = ",";
    }
    if (extra)
        put(o, "%s%s", sep, extra);
    put(o, "}");
}

static void put_hist(out *o, const char *name, const cn_series *s)
{
    const cn_histogram *h = s->hv;
    uint64_t cum = 0;
    char le[40];
    for (int i = 0; i <= CN_HIST_BUCKETS; i++) {
        cum += h->bucket[i];
        if (i < CN_HIST_BUCKETS)
            snprintf(le, sizeof le, "le=\"%g\"", cn_metrics_bucket_le(i));
        else
            snprintf(le, sizeof le, "le=\"+Inf\"");
        put(o, "%s_bucket", name);
        put_labels(o, s, le);
        put(o, " %llu\n", (unsigned long long)cum);
    }
    put(o, "%s_sum", name);
    put_labels(o, s, NULL);
    put(o, " %.9g\n", (double)h->sum_ns / 1e9);
    put(o, "%s_count", name);
    put_labels(o, s, NULL);
    put(o, " %llu\n", (unsigned long long)h->count);
}

static void put_series(out *o, const family *f, const cn_series *s)
{
    if (f->kind == K_HIST) {
        put_hist(o, f->name, s);
        return;
    }
    put(o, "%s", f->name);
    put_labels(o, s, NULL);
    if (f->kind == K_COUNTER)
        put(o, " %llu\n", (unsigned long long)*s->cv);
    else
        put(o, " %.15g\n", gauge_value(s));
}

char *cn_metrics_render(cn_metrics *m, size_t *len)
{
    static const char *const type[] = {"counter", "gauge", "histogram"};
    out o = {cn_malloc(4096), 0, 4096};
    o.p[0] = '\0';
    for (const family *f = m->head; f; f = f->next) {
        put(&o, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, type[f->kind]);
        for (const cn_series *s = f->head; s; s = s->next)
            put_series(&o, f, s);
    }
    *len = o.len;
    return o.p;
}

/* ---- Erlang map ---- */

static void encode_hist(ei_x_buff *x, const cn_histogram *h)
{
    ei_x_encode_map_header(x, 3);
    ei_x_encode_atom(x, "count");
    ei_x_encode_ulonglong(x, h->count);
    ei_x_encode_atom(x, "sum");
    ei_x_encode_double(x, (double)h->sum_ns / 1e9);
    ei_x_encode_atom(x, "buckets");
    ei_x_encode_list_header(x, CN_HIST_BUCKETS + 1);
    uint64_t cum = 0;
    for (int i = 0; i <= CN_HIST_BUCKETS; i++) {
        cum += h->bucket[i];
        ei_x_encode_tuple_header(x, 2);
        if (i < CN_HIST_BUCKETS)
            ei_x_encode_double(x, cn_metrics_bucket_le(i));
        else
            ei_x_encode_atom(x, "infinity");
        ei_x_encode_ulonglong(x, cum);
    }
    ei_x_encode_empty_list(x);
}

static void encode_value(ei_x_buff *x, const family *f, const cn_series *s)
{
    if (f->kind == K_COUNTER)
        ei_x_encode_ulonglong(x, *s->cv);
    else if (f->kind == K_GAUGE)
        ei_x_encode_double(x, gauge_value(s));
    else
        encode_hist(x, s->hv);
}

static void encode_labels(ei_x_buff *x, const cn_series *s)
{
    int n = s->kv[0] ? (s->kv[2] ? 2 : 1) : 0;
    ei_x_encode_map_header(x, n);
    for (int i = 0; i < 2 * n; i += 2) {
        ei_x_encode_atom(x, s->kv[i]);
        const char *v = s->kv[i + 1] ? s->kv[i + 1] : "";
        ei_x_encode_binary(x, v, (long)strlen(v));
    }
}

static void encode_family(ei_x_buff *x, const family *f)
{
    const char *key = strncmp(f->name, "cnode_", 6) == 0 ? f->name + 6 : f->name;
    ei_x_encode_atom(x, key);
    if (f->head && f->head->next == NULL && f->head->kv[0] == NULL) {
        encode_value(x, f, f->head);
        return;
    }
    int n = 0;
    for (const cn_series *s = f->head; s; s = s->next)
        n++;
    ei_x_encode_map_header(x, n);
    for (const cn_series *s = f->head; s; s = s->next) {
        encode_labels(x, s);
        encode_value(x, f, s);
    }
}

void cn_metrics_encode(cn_metrics *m, ei_x_buff *x)
{
    int n = 0;
    for (const family *f = m->head; f; f = f->next)
        n++;
    ei_x_encode_map_header(x, n);
    for (const family *f = m->head; f; f = f->next)
        encode_family(x, f);
}

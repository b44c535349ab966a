/*
 * The Counter server (genserver/counter.h): a 128-bit value, the wire contract
 * of the Elixir Counter, and its state file (saved in terminate, loaded in init).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cnode/buf.h"
#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "genserver/counter.h"
#include "genserver/statefile.h"

/*
 * The state file's payload: the value in two's complement, big endian, as 8 bytes
 * when it fits in 64 bits and as 16 bytes past that (files of earlier versions
 * all hold 8). Schema 2 puts the journal's lineage and generation before it
 * (genserver/journal.h); schema 1 files are still read. Bump on any other change.
 */
#define COUNTER_SCHEMA 2
#define COUNTER_LEGACY_SCHEMA 1

/* Journal records: one byte, or 'S' and the value as 16 bytes. */
#define REC_INC '+'
#define REC_DEC '-'
#define REC_SET 'S'

/*
 * The value is a 128-bit integer, so that a counter pushed past 2^63 (by
 * --counter-initial and increments, or by :sys.replace_state) goes on exactly as
 * an Elixir integer would, a bignum on the wire, instead of overflowing.
 */
__extension__ typedef __int128 cval;
__extension__ typedef unsigned __int128 ucval;
#define CVAL_MAX ((cval)(~(ucval)0 >> 1))
#define CVAL_MIN (-CVAL_MAX - 1)

typedef struct counter {
    const counter_config *cfg;
    char name[256];
    cval value;
    gs_journal *journal;    /* with a data directory */
} counter;

static int fits_64(cval v)
{
    return v >= LLONG_MIN && v <= LLONG_MAX;
}

/* An integer term: as ei encodes a long long, or a SMALL_BIG_EXT past 64 bits. 0 or CN_EDECODE. */
static int encode_value(ei_x_buff *x, cval v)
{
    if (fits_64(v))
        return ei_x_encode_longlong(x, (long long)v) < 0 ? CN_EDECODE : 0;
    ucval mag = v < 0 ? -(ucval)v : (ucval)v;
    char b[3 + 16];
    int n = 0;
    for (; mag != 0; mag >>= 8)
        b[3 + n++] = (char)(mag & 0xff);
    b[0] = (char)ERL_SMALL_BIG_EXT;
    b[1] = (char)n;
    b[2] = v < 0;
    return ei_x_append_buf(x, b, 3 + n) < 0 ? CN_EDECODE : 0;
}

/*
 * Decodes an integer term that fits in 128 bits. The term has been walked with
 * bounds checks already (gs_term), so a SMALL_BIG_EXT holds all its digits.
 * CN_EDECODE for anything else, index untouched.
 */
static int decode_value(const char *buf, int *index, cval *out)
{
    long long ll;
    int i = *index;
    if (ei_decode_longlong(buf, &i, &ll) == 0) {
        *out = ll;
        *index = i;
        return 0;
    }
    int type, size;
    i = *index;
    if (ei_get_type(buf, &i, &type, &size) < 0 || type != ERL_SMALL_BIG_EXT || size > 16)
        return CN_EDECODE;
    const unsigned char *p = (const unsigned char *)buf + i;
    ucval mag = 0;
    for (int k = size - 1; k >= 0; k--)
        mag = mag << 8 | p[3 + k];
    int neg = p[2] != 0;
    if (mag > (ucval)CVAL_MAX + (neg ? 1 : 0))
        return CN_EDECODE;
    *out = neg ? (cval)(0 - mag) : (cval)mag;
    if (ei_skip_term(buf, &i) < 0)
        return CN_EDECODE;
    *index = i;
    return 0;
}

/* For log lines: the value in decimal. buf holds at least 41 bytes. */
static const char *value_text(cval v, char *buf, size_t size)
{
    char *e = buf + size - 1, *q = e;
    *q = '\0';
    ucval mag = v < 0 ? -(ucval)v : (ucval)v;
    do {
        *--q = (char)('0' + (int)(mag % 10));
        mag /= 10;
    } while (mag != 0 && q > buf + 1);
    if (v < 0)
        *--q = '-';
    return q;
}

/* The value as 8 bytes when it fits in 64 bits, else 16, two's complement, big endian. */
static size_t value_image(cval v, unsigned char *out)
{
    size_t n = fits_64(v) ? 8 : 16;
    ucval u = (ucval)v;
    for (size_t i = 0; i < n; i++)
        out[n - 1 - i] = (unsigned char)(u >> (8 * i));
    return n;
}

static int image_value(const unsigned char *p, size_t len, cval *out)
{
    if (len != 8 && len != 16)
        return CN_ECORRUPT;
    ucval u = (p[0] & 0x80) ? ~(ucval)0 : 0; /* sign-extended */
    for (size_t i = 0; i < len; i++)
        u = u << 8 | p[i];
    *out = (cval)u;
    return 0;
}

static int counter_save(void *data, cn_buf *out)
{
    counter *c = data;
    unsigned char v[16];
    return cn_buf_append(out, v, value_image(c->value, v));
}

static int counter_load(void *data, const char *image, size_t len, int legacy)
{
    (void)legacy;
    counter *c = data;
    char text[48];
    if (image_value((const unsigned char *)image, len, &c->value) < 0) {
        CN_WARN("counter", "%s: saved state has %zu bytes, not 8 or 16; starting from %s", c->name, len,
                value_text(c->value, text, sizeof text));
        return CN_ECORRUPT;
    }
    CN_INFO("counter", "%s: restored value %s", c->name, value_text(c->value, text, sizeof text));
    return 0;
}

/* Replays as the calls did: an increment past 128 bits was refused then and is skipped now. */
static int counter_replay(void *data, const char *rec, size_t len)
{
    counter *c = data;
    if (len == 1 && (rec[0] == REC_INC || rec[0] == REC_DEC)) {
        cval lim = rec[0] == REC_INC ? CVAL_MAX : CVAL_MIN;
        if (c->value == lim)
            return -ERANGE;
        c->value += rec[0] == REC_INC ? 1 : -1;
        return 0;
    }
    if (len == 17 && rec[0] == REC_SET)
        return image_value((const unsigned char *)rec + 1, 16, &c->value);
    return CN_ECORRUPT;
}

static const gs_journal_ops counter_journal_ops = {
    .schema = COUNTER_SCHEMA,
    .legacy_schema = COUNTER_LEGACY_SCHEMA,
    .save = counter_save,
    .load = counter_load,
    .replay = counter_replay,
};

/* The journal recovers the value (a saved value wins over the configured initial one). */
static gs_ret counter_init(gs_server *s, const gs_term *arg, gs_result *res)
{
    (void)arg;
    (void)res;
    counter *c = gs_data(s);
    c->value = c->cfg->initial;
    if (c->cfg->data_dir == NULL)
        return GS_OK;
    gs_journal_config jc = {.dir = c->cfg->data_dir, .name = c->name, .mode = c->cfg->durability,
                            .snapshot_bytes = c->cfg->snapshot_bytes, .handover = c->cfg->handover};
    if (gs_journal_open(cn_node_loop(gs_node(s)), &jc, &counter_journal_ops, c, &c->journal) < 0)
        return GS_STOP;
    gs_set_journal(s, c->journal);
    return GS_OK;
}

/* The final snapshot; when it fails the journal hands the value to the next incarnation. */
static void counter_terminate(gs_server *s, const gs_term *reason)
{
    (void)reason;
    counter *c = gs_data(s);
    if (c == NULL || c->journal == NULL)
        return;
    gs_set_journal(s, NULL);
    int rc = gs_journal_close(c->journal, 1);
    c->journal = NULL;
    if (rc < 0)
        CN_ERROR("counter", "%s: cannot save state in %s: %s", c->name, c->cfg->data_dir, cn_strerror(rc));
}

static void append_record(counter *c, char kind, cval v)
{
    if (c->journal == NULL)
        return;
    unsigned char rec[17];
    rec[0] = (unsigned char)kind;
    size_t n = 1;
    if (kind == REC_SET) {
        ucval u = (ucval)v;
        for (int i = 0; i < 16; i++)
            rec[16 - i] = (unsigned char)(u >> (8 * i));
        n = 17;
    }
    gs_journal_append(c->journal, rec, n);
}

/* value + by: 0, or -ERANGE (value unchanged) when it would leave 128 bits (2^64 times further than int64). */
static int step(counter *c, int by)
{
    if ((by > 0 && c->value == CVAL_MAX) || (by < 0 && c->value == CVAL_MIN)) {
        CN_ERROR("counter", "%s: the value would leave 128 bits; unchanged", c->name);
        return -ERANGE;
    }
    c->value += by;
    return 0;
}

static gs_ret counter_call(gs_server *s, const gs_term *req, const gs_from *from, gs_result *res)
{
    (void)from;
    counter *c = gs_data(s);
    int by = 0;
    if (gs_term_is_atom(req, "increment"))
        by = 1;
    else if (gs_term_is_atom(req, "decrement"))
        by = -1;
    else if (!gs_term_is_atom(req, "get_value"))
        return GS_UNKNOWN;
    const char *refusal = NULL;
    if (by != 0 && c->journal != NULL && gs_journal_ready(c->journal) < 0)
        refusal = GS_NOT_DURABLE;
    else if (by != 0 && step(c, by) < 0)
        refusal = "overflow";
    if (refusal != NULL) {
        ei_x_encode_tuple_header(res->reply, 2);
        ei_x_encode_atom(res->reply, "error");
        ei_x_encode_atom(res->reply, refusal);
        return GS_REPLY;
    }
    if (by != 0)
        append_record(c, by > 0 ? REC_INC : REC_DEC, 0);
    encode_value(res->reply, c->value);
    return GS_REPLY;
}

static gs_ret counter_cast(gs_server *s, const gs_term *req, gs_result *res)
{
    (void)res;
    counter *c = gs_data(s);
    if (!gs_term_is_atom(req, "increment"))
        return GS_UNKNOWN;
    if (step(c, 1) == 0)
        append_record(c, REC_INC, 0);
    return GS_NOREPLY;
}

/* After a kill (no terminate): what is not durable yet goes to the handover. */
static void counter_cleanup(gs_server *s)
{
    counter *c = gs_data(s);
    if (c != NULL && c->journal != NULL)
        gs_journal_close(c->journal, 0);
    free(c);
}

static int counter_get_state(gs_server *s, ei_x_buff *out)
{
    counter *c = gs_data(s);
    return encode_value(out, c->value);
}

/* Any integer that fits in 128 bits; anything else is refused, the value unchanged. */
static int counter_put_state(gs_server *s, const gs_term *state)
{
    counter *c = gs_data(s);
    cval v;
    int i = state->index;
    int rc = decode_value(state->buf, &i, &v);
    if (rc < 0)
        return rc;
    if (c->journal != NULL && (rc = gs_journal_ready(c->journal)) < 0)
        return rc;
    c->value = v;
    append_record(c, REC_SET, v);
    return 0;
}

const gs_callbacks counter_callbacks = {
    .module = "Elixir.Counter",
    .init = counter_init,
    .handle_call = counter_call,
    .handle_cast = counter_cast,
    .terminate = counter_terminate,
    .cleanup = counter_cleanup,
    .get_state = counter_get_state,
    .put_state = counter_put_state,
};

int counter_start(cn_node *node, const counter_config *cfg, const char *name, cn_proc *parent, gs_server **out)
{
    counter *c = cn_calloc(1, sizeof *c);
    c->cfg = cfg;
    snprintf(c->name, sizeof c->name, "%s", name ? name : "counter");
    gs_options opt = {.name = name, .parent = parent};
    return gs_start(node, &counter_callbacks, c, &opt, out);
}

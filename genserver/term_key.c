#include "genserver/term_key.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ei.h>

#include "cnode/error.h"
#include "cnode/mem.h"
#include "cnode/term.h"

/* Tag values come from ei.h; the erts External Term Format chapter agrees. ei.h
 * names NEW_FLOAT_EXT without the ERL_ prefix. */

/* Most words a reference may carry in OTP 25; the BEAM refuses six. */
#define MAX_REF_WORDS 5
/* An atom holds at most 255 characters, each up to four UTF-8 bytes. */
#define MAX_ATOM_CHARS 255
/* FLOAT_EXT is a fixed 31-byte field holding "%.20e" text padded with NULs. */
#define OLD_FLOAT_LEN 31

#define TRY(expr)                  \
    do {                           \
        int try_rc_ = (expr);      \
        if (try_rc_ < 0)           \
            return try_rc_;        \
    } while (0)

/* No piece follows: the end of a chain of pieces. */
#define NO_PIECE SIZE_MAX

/*
 * A run of canonical bytes, out->data[at, at + len), and the piece that follows it
 * in the term's order. Bytes are written to the output once, in the order the
 * input gives them; a map whose pairs must be reordered is cut into pieces at its
 * pair boundaries and relinked instead of being moved (see map_pairs).
 */
typedef struct piece {
    size_t at;
    size_t len;
    size_t next;
} piece;

/*
 * The decoder's state: a borrowed input buffer, the read position and the first byte
 * not to read; then the pieces made so far (none unless a map has two pairs or
 * more), the first and last piece in the term's order, where the bytes not yet in a
 * piece begin, whether any pairs were relinked, and the work done so far.
 */
typedef struct tk_in {
    const unsigned char *p;
    size_t pos;
    size_t end;
    piece *pc;
    size_t npc, cap;
    size_t head, tail;
    size_t open_at;
    int relinked;
    uint64_t work;
} tk_in;

static int term(tk_in *in, cn_buf *out, int depth);

static int need(const tk_in *in, size_t n)
{
    return in->end - in->pos >= n ? 0 : CN_EDECODE;
}

/* The get_* helpers read after need() has vouched for the bytes. */
static unsigned get_u8(tk_in *in)
{
    return in->p[in->pos++];
}

static uint32_t get_u16(tk_in *in)
{
    uint32_t v = cn_get_u16(in->p + in->pos);
    in->pos += 2;
    return v;
}

static uint32_t get_u32(tk_in *in)
{
    uint32_t v = cn_get_u32(in->p + in->pos);
    in->pos += 4;
    return v;
}

static uint64_t get_u64(tk_in *in)
{
    uint64_t v = cn_get_u64(in->p + in->pos);
    in->pos += 8;
    return v;
}

/* Rewrites a big-endian u32 already in the output, for counts known only at the end. */
static void patch_u32(cn_buf *out, size_t at, uint32_t v)
{
    cn_set_u32(out->data + at, v);
}

/* ---- atoms ---- */

/* Counts the characters of strict UTF-8 (no overlong forms, surrogates or values past
 * U+10FFFF, which the BEAM refuses), or returns -1 when the bytes are not UTF-8. */
static long utf8_chars(const unsigned char *s, size_t n)
{
    long chars = 0;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            chars++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return -1;
        }
        if (n - i <= k)
            return -1;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return -1;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return -1;
        i += k + 1;
        chars++;
    }
    return chars;
}

static int emit_atom(cn_buf *out, const unsigned char *utf8, size_t n)
{
    if (n <= 255) {
        TRY(cn_buf_put_u8(out, ERL_SMALL_ATOM_UTF8_EXT));
        TRY(cn_buf_put_u8(out, (uint8_t)n));
    } else {
        TRY(cn_buf_put_u8(out, ERL_ATOM_UTF8_EXT));
        TRY(cn_buf_put_u16(out, (uint16_t)n));
    }
    return cn_buf_append(out, utf8, n);
}

/* Latin-1 atoms become UTF-8, so 'é' sent as ATOM_EXT or as ATOM_UTF8_EXT is one key. */
static int atom_latin1(tk_in *in, cn_buf *out, size_t n)
{
    unsigned char utf8[2 * MAX_ATOM_CHARS];
    size_t len = 0;
    if (n > MAX_ATOM_CHARS)
        return CN_EDECODE;
    TRY(need(in, n));
    for (size_t i = 0; i < n; i++) {
        unsigned c = get_u8(in);
        if (c < 0x80) {
            utf8[len++] = (unsigned char)c;
        } else {
            utf8[len++] = (unsigned char)(0xC0 | (c >> 6));
            utf8[len++] = (unsigned char)(0x80 | (c & 0x3F));
        }
    }
    return emit_atom(out, utf8, len);
}

static int atom_utf8(tk_in *in, cn_buf *out, size_t n)
{
    TRY(need(in, n));
    long chars = utf8_chars(in->p + in->pos, n);
    if (chars < 0 || chars > MAX_ATOM_CHARS)
        return CN_EDECODE;
    const unsigned char *s = in->p + in->pos;
    in->pos += n;
    return emit_atom(out, s, n);
}

/* Reads an atom of any encoding, tag included. Nodes and modules are atoms. */
static int atom(tk_in *in, cn_buf *out)
{
    TRY(need(in, 1));
    switch (get_u8(in)) {
    case ERL_ATOM_EXT:
        TRY(need(in, 2));
        return atom_latin1(in, out, get_u16(in));
    case ERL_SMALL_ATOM_EXT:
        TRY(need(in, 1));
        return atom_latin1(in, out, get_u8(in));
    case ERL_ATOM_UTF8_EXT:
        TRY(need(in, 2));
        return atom_utf8(in, out, get_u16(in));
    case ERL_SMALL_ATOM_UTF8_EXT:
        TRY(need(in, 1));
        return atom_utf8(in, out, get_u8(in));
    default:
        return CN_EDECODE;
    }
}

/* ---- integers ---- */

/* Emits sign and magnitude (n little-endian bytes) in the smallest form OTP would
 * use, so 5 as SMALL_INTEGER_EXT, INTEGER_EXT or a zero-padded big is one key. */
static int emit_integer(cn_buf *out, int negative, const unsigned char *mag, size_t n)
{
    while (n > 0 && mag[n - 1] == 0)
        n--;
    if (n <= 4) {
        uint64_t v = 0;
        for (size_t i = n; i-- > 0;)
            v = (v << 8) | mag[i];
        if (v == 0 || (!negative && v <= 255)) {
            TRY(cn_buf_put_u8(out, ERL_SMALL_INTEGER_EXT));
            return cn_buf_put_u8(out, (uint8_t)v);
        }
        if (v <= (negative ? (uint64_t)1 << 31 : (uint64_t)INT32_MAX)) {
            TRY(cn_buf_put_u8(out, ERL_INTEGER_EXT));
            return cn_buf_put_u32(out, negative ? (uint32_t)(0 - v) : (uint32_t)v);
        }
    }
    if (n <= 255) {
        TRY(cn_buf_put_u8(out, ERL_SMALL_BIG_EXT));
        TRY(cn_buf_put_u8(out, (uint8_t)n));
    } else {
        if (n > UINT32_MAX)
            return CN_EDECODE;
        TRY(cn_buf_put_u8(out, ERL_LARGE_BIG_EXT));
        TRY(cn_buf_put_u32(out, (uint32_t)n));
    }
    TRY(cn_buf_put_u8(out, negative ? 1 : 0));
    return cn_buf_append(out, mag, n);
}

static int small_or_int32(cn_buf *out, int64_t v)
{
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    unsigned char mag[8];
    for (int i = 0; i < 8; i++)
        mag[i] = (unsigned char)(m >> (8 * i));
    return emit_integer(out, v < 0, mag, sizeof mag);
}

/* A big's sign byte is 0 for positive; the BEAM reads any other value as negative. */
static int big(tk_in *in, cn_buf *out, size_t n)
{
    TRY(need(in, 1));
    int negative = get_u8(in) != 0;
    TRY(need(in, n));
    const unsigned char *mag = in->p + in->pos;
    in->pos += n;
    return emit_integer(out, negative, mag, n);
}

/* The integer whose tag has just been read. */
static int integer_body(tk_in *in, cn_buf *out, unsigned tag)
{
    switch (tag) {
    case ERL_SMALL_INTEGER_EXT:
        TRY(need(in, 1));
        return small_or_int32(out, get_u8(in));
    case ERL_INTEGER_EXT:
        TRY(need(in, 4));
        return small_or_int32(out, (int32_t)get_u32(in));
    case ERL_SMALL_BIG_EXT:
        TRY(need(in, 1));
        return big(in, out, get_u8(in));
    case ERL_LARGE_BIG_EXT:
        TRY(need(in, 4));
        return big(in, out, get_u32(in));
    default:
        return CN_EDECODE;
    }
}

/* Reads an integer, tag included, for the fields of funs that must be integers. */
static int integer(tk_in *in, cn_buf *out)
{
    TRY(need(in, 1));
    return integer_body(in, out, get_u8(in));
}

/* ---- floats ---- */

_Static_assert(sizeof(double) == sizeof(uint64_t), "IEEE double expected");

static int emit_float_bits(cn_buf *out, uint64_t bits)
{
    /* NaN and the infinities are not Erlang terms. */
    if (((bits >> 52) & 0x7FF) == 0x7FF)
        return CN_EDECODE;
    /* OTP 25 takes 0.0 and -0.0 as one map key, so they are one client. */
    if (bits == (uint64_t)1 << 63)
        bits = 0;
    TRY(cn_buf_put_u8(out, NEW_FLOAT_EXT));
    return cn_buf_put_u64(out, bits);
}

/* Accepts the shape OTP writes and reads, digits '.' digits with an optional
 * exponent (the BEAM refuses "15", ".5", "0x1p3" and "inf" here). Returns the
 * length of the text, or 0 when it is not a float. */
static size_t float_text_len(const char *s)
{
    size_t i = 0, d;
    if (s[i] == '+' || s[i] == '-')
        i++;
    for (d = i; s[i] >= '0' && s[i] <= '9'; i++)
        ;
    if (i == d || s[i++] != '.')
        return 0;
    for (d = i; s[i] >= '0' && s[i] <= '9'; i++)
        ;
    if (i == d)
        return 0;
    if (s[i] == 'e' || s[i] == 'E') {
        i++;
        if (s[i] == '+' || s[i] == '-')
            i++;
        for (d = i; s[i] >= '0' && s[i] <= '9'; i++)
            ;
        if (i == d)
            return 0;
    }
    return i;
}

/* FLOAT_EXT (minor version 0) carries "%.20e" text, enough digits to give back the
 * exact double. strtod reads it in the C locale, which this program never changes. */
static int float_old(tk_in *in, cn_buf *out)
{
    char text[OLD_FLOAT_LEN + 1];
    TRY(need(in, OLD_FLOAT_LEN));
    memcpy(text, in->p + in->pos, OLD_FLOAT_LEN);
    text[OLD_FLOAT_LEN] = '\0';
    size_t n = float_text_len(text);
    if (n == 0)
        return CN_EDECODE;
    for (size_t i = n; i < OLD_FLOAT_LEN; i++)
        if (text[i] != '\0')
            return CN_EDECODE;
    double d = strtod(text, NULL);
    if (!isfinite(d))
        return CN_EDECODE;
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    in->pos += OLD_FLOAT_LEN;
    return emit_float_bits(out, bits);
}

/* ---- pids, ports, references ---- */

/* PID_EXT's one-byte creation is the same number as NEW_PID_EXT's four bytes. */
static int pid_body(tk_in *in, cn_buf *out, unsigned tag)
{
    TRY(cn_buf_put_u8(out, ERL_NEW_PID_EXT));
    TRY(atom(in, out));
    TRY(need(in, tag == ERL_PID_EXT ? 9 : 12));
    TRY(cn_buf_put_u32(out, get_u32(in)));
    TRY(cn_buf_put_u32(out, get_u32(in)));
    return cn_buf_put_u32(out, tag == ERL_PID_EXT ? get_u8(in) : get_u32(in));
}

static int pid(tk_in *in, cn_buf *out)
{
    TRY(need(in, 1));
    unsigned tag = get_u8(in);
    if (tag != ERL_PID_EXT && tag != ERL_NEW_PID_EXT)
        return CN_EDECODE;
    return pid_body(in, out, tag);
}

/* PORT_EXT, NEW_PORT_EXT and V4_PORT_EXT differ only in field widths; the port is
 * written as OTP 25 writes it, with a 32-bit id when it fits. The id follows the
 * node atom, so the tag is written as NEW_PORT_EXT and corrected afterwards. */
static int port_body(tk_in *in, cn_buf *out, unsigned tag)
{
    size_t tag_at = out->len;
    TRY(cn_buf_put_u8(out, ERL_NEW_PORT_EXT));
    TRY(atom(in, out));
    uint64_t id;
    uint32_t creation;
    if (tag == ERL_V4_PORT_EXT) {
        TRY(need(in, 12));
        id = get_u64(in);
        creation = get_u32(in);
    } else {
        TRY(need(in, tag == ERL_PORT_EXT ? 5 : 8));
        id = get_u32(in);
        creation = tag == ERL_PORT_EXT ? get_u8(in) : get_u32(in);
    }
    if (id > UINT32_MAX) {
        out->data[tag_at] = ERL_V4_PORT_EXT;
        TRY(cn_buf_put_u64(out, id));
    } else {
        TRY(cn_buf_put_u32(out, (uint32_t)id));
    }
    return cn_buf_put_u32(out, creation);
}

/* The three reference encodings become NEWER_REFERENCE_EXT. Trailing zero words
 * are dropped because the BEAM compares references as if they were not there. */
static int ref_body(tk_in *in, cn_buf *out, unsigned tag)
{
    uint32_t words = 1;
    if (tag != ERL_REFERENCE_EXT) {
        TRY(need(in, 2));
        words = get_u16(in);
        if (words > MAX_REF_WORDS)
            return CN_EDECODE;
    }
    TRY(cn_buf_put_u8(out, ERL_NEWER_REFERENCE_EXT));
    size_t len_at = out->len;
    TRY(cn_buf_put_u16(out, 0));
    TRY(atom(in, out));
    uint32_t id[MAX_REF_WORDS], creation;
    if (tag == ERL_REFERENCE_EXT) {
        TRY(need(in, 5));
        id[0] = get_u32(in);
        creation = get_u8(in);
    } else {
        TRY(need(in, (tag == ERL_NEW_REFERENCE_EXT ? 1 : 4) + 4 * (size_t)words));
        creation = tag == ERL_NEW_REFERENCE_EXT ? get_u8(in) : get_u32(in);
        for (uint32_t i = 0; i < words; i++)
            id[i] = get_u32(in);
    }
    while (words > 0 && id[words - 1] == 0)
        words--;
    out->data[len_at] = 0;
    out->data[len_at + 1] = (char)words;
    TRY(cn_buf_put_u32(out, creation));
    for (uint32_t i = 0; i < words; i++)
        TRY(cn_buf_put_u32(out, id[i]));
    return 0;
}

/* ---- binaries ---- */

static int binary(tk_in *in, cn_buf *out)
{
    TRY(need(in, 4));
    uint32_t n = get_u32(in);
    TRY(need(in, n));
    TRY(cn_buf_put_u8(out, ERL_BINARY_EXT));
    TRY(cn_buf_put_u32(out, n));
    TRY(cn_buf_append(out, in->p + in->pos, n));
    in->pos += n;
    return 0;
}

/* A bit string whose last byte is full is a binary. The bits past the end are not
 * part of the term, so they are cleared. */
static int bit_binary(tk_in *in, cn_buf *out)
{
    TRY(need(in, 5));
    uint32_t n = get_u32(in);
    unsigned bits = get_u8(in);
    if (bits > 8 || (n == 0) != (bits == 0))
        return CN_EDECODE;
    TRY(need(in, n));
    if (bits == 8 || n == 0) {
        TRY(cn_buf_put_u8(out, ERL_BINARY_EXT));
        TRY(cn_buf_put_u32(out, n));
        TRY(cn_buf_append(out, in->p + in->pos, n));
        in->pos += n;
        return 0;
    }
    TRY(cn_buf_put_u8(out, ERL_BIT_BINARY_EXT));
    TRY(cn_buf_put_u32(out, n));
    TRY(cn_buf_put_u8(out, (uint8_t)bits));
    TRY(cn_buf_append(out, in->p + in->pos, n - 1));
    TRY(cn_buf_put_u8(out, (uint8_t)(in->p[in->pos + n - 1] & (0xFF << (8 - bits)))));
    in->pos += n;
    return 0;
}

/* ---- compound terms ---- */

static int tuple(tk_in *in, cn_buf *out, size_t arity, int depth)
{
    /* Every element takes at least one byte: a bigger arity is a lie. */
    TRY(need(in, arity));
    if (arity <= 255) {
        TRY(cn_buf_put_u8(out, ERL_SMALL_TUPLE_EXT));
        TRY(cn_buf_put_u8(out, (uint8_t)arity));
    } else {
        TRY(cn_buf_put_u8(out, ERL_LARGE_TUPLE_EXT));
        TRY(cn_buf_put_u32(out, (uint32_t)arity));
    }
    for (size_t i = 0; i < arity; i++)
        TRY(term(in, out, depth + 1));
    return 0;
}

/*
 * Maps. Pairs are sorted by the canonical bytes of their keys, and keys may be maps
 * themselves, nested thousands deep. Sorting by moving bytes would copy the inner
 * pairs again at every level (depth x size: 25 MB of nested one-pair maps once took
 * 44 s). Instead every byte is written once: a map with two pairs or more closes the
 * current piece before each key, after each key and after each value, sorts its
 * pairs by comparing the keys piece by piece, and relinks the pairs' chains of
 * pieces in that order. The output is put in order by one copy at the end, and only
 * when some pair was relinked.
 *
 * Cost in the term's size n: writing and the final copy are O(n), pieces are O(n)
 * (at most three per pair). The merge sort compares O(m log m) pairs of keys for a
 * map of m pairs, each comparison costing the keys' common prefix plus one; a
 * comparison reads bytes of the smaller key only as far as the larger one repeats
 * them, so nested keys are compared again only when a sibling repeats them. That
 * is O(n log n) for realistic ids, and O(n log^2 n) for adversarial ones in theory;
 * the tests count the work (tk_canonical_measured).
 */

/* Closes the bytes written since the last cut into a piece that follows the tail. */
static void cut(tk_in *in, const cn_buf *out)
{
    if (out->len == in->open_at)
        return;
    if (in->npc == in->cap) {
        in->cap = in->cap ? 2 * in->cap : 64;
        in->pc = cn_realloc(in->pc, in->cap * sizeof *in->pc);
    }
    size_t k = in->npc++;
    in->pc[k] = (piece){in->open_at, out->len - in->open_at, NO_PIECE};
    if (in->tail == NO_PIECE)
        in->head = k;
    else
        in->pc[in->tail].next = k;
    in->tail = k;
    in->open_at = out->len;
}

/* One pair of a map: the chains of pieces of its key and of the whole pair. */
typedef struct map_pair {
    size_t first;       /* the key's first piece */
    size_t key_last;    /* the key's last piece */
    size_t last;        /* the value's last piece */
} map_pair;

/* A cursor over a key's chain of pieces. */
typedef struct key_cur {
    size_t k;           /* the current piece, NO_PIECE past the key's end */
    size_t off;         /* bytes of it already read */
    size_t last;
} key_cur;

/* Moves past exhausted pieces; returns how many bytes the current piece has left. */
static size_t cur_left(const tk_in *in, key_cur *c, uint64_t *work)
{
    while (c->k != NO_PIECE && c->off == in->pc[c->k].len) {
        c->k = c->k == c->last ? NO_PIECE : in->pc[c->k].next;
        c->off = 0;
        (*work)++;
    }
    return c->k == NO_PIECE ? 0 : in->pc[c->k].len - c->off;
}

/* Compares two keys as byte strings, a proper prefix first. Canonical encodings
 * are prefix-free, so only identical keys compare equal. */
static int key_cmp(tk_in *in, const char *data, const map_pair *a, const map_pair *b)
{
    key_cur ca = {a->first, 0, a->key_last}, cb = {b->first, 0, b->key_last};
    for (;;) {
        size_t na = cur_left(in, &ca, &in->work), nb = cur_left(in, &cb, &in->work);
        if (na == 0 || nb == 0)
            return (na != 0) - (nb != 0);
        size_t n = na < nb ? na : nb;
        int c = memcmp(data + in->pc[ca.k].at + ca.off, data + in->pc[cb.k].at + cb.off, n);
        in->work += n;
        if (c != 0)
            return c;
        ca.off += n;
        cb.off += n;
    }
}

/* Merges the sorted runs a[0, na) and b[0, nb) into to. A tie is a duplicate key. */
static int merge(tk_in *in, const char *data, const map_pair *a, size_t na, const map_pair *b,
                 size_t nb, map_pair *to)
{
    size_t i = 0, j = 0, k = 0;
    while (i < na && j < nb) {
        int c = key_cmp(in, data, &a[i], &b[j]);
        if (c == 0)
            return CN_EDECODE;
        to[k++] = c < 0 ? a[i++] : b[j++];
    }
    while (i < na)
        to[k++] = a[i++];
    while (j < nb)
        to[k++] = b[j++];
    return 0;
}

/* A bottom-up merge sort of the pairs by key: its O(m log m) comparisons hold for any
 * input, which qsort does not promise. Equal keys are CN_EDECODE, as the BEAM refuses
 * a map with a duplicate key. */
static int sort_pairs(tk_in *in, const char *data, map_pair *e, map_pair *tmp, size_t n)
{
    map_pair *from = e, *to = tmp;
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            TRY(merge(in, data, from + lo, mid - lo, from + mid, hi - mid, to + lo));
        }
        map_pair *t = from;
        from = to;
        to = t;
    }
    if (from != e)
        memcpy(e, from, n * sizeof *e);
    return 0;
}

/* Links the pairs after the map's header piece in their sorted order. Pairs that are
 * already in order (pieces are numbered in writing order) stay as they are. */
static void relink(tk_in *in, size_t header, const map_pair *e, size_t n)
{
    int in_order = 1;
    for (size_t k = 1; k < n && in_order; k++)
        in_order = e[k - 1].first < e[k].first;
    if (in_order)
        return;
    in->pc[header].next = e[0].first;
    for (size_t k = 1; k < n; k++)
        in->pc[e[k - 1].last].next = e[k].first;
    in->pc[e[n - 1].last].next = NO_PIECE;
    in->tail = e[n - 1].last;
    in->relinked = 1;
}

/* Reads the pairs of a map whose header is written; n >= 2. The first piece made
 * after a cut starts where the cut left off, and every term writes at least one
 * byte, so a key's first piece is the next piece number. */
static int map_pairs(tk_in *in, cn_buf *out, map_pair *e, size_t n, int depth)
{
    cut(in, out);
    size_t header = in->tail;
    for (size_t i = 0; i < n; i++) {
        e[i].first = in->npc;
        TRY(term(in, out, depth + 1));
        cut(in, out);
        e[i].key_last = in->tail;
        TRY(term(in, out, depth + 1));
        cut(in, out);
        e[i].last = in->tail;
    }
    TRY(sort_pairs(in, out->data, e, e + n, n));
    relink(in, header, e, n);
    return 0;
}

static int map(tk_in *in, cn_buf *out, int depth)
{
    TRY(need(in, 4));
    uint32_t arity = get_u32(in);
    /* Every key and every value takes at least one byte. */
    if (arity > (in->end - in->pos) / 2)
        return CN_EDECODE;
    TRY(cn_buf_put_u8(out, ERL_MAP_EXT));
    TRY(cn_buf_put_u32(out, arity));
    if (arity == 0)
        return 0;
    if (arity == 1) {
        /* One pair is in order already: no pieces needed. */
        TRY(term(in, out, depth + 1));
        return term(in, out, depth + 1);
    }
    /* The pairs and the merge sort's scratch, in one allocation. */
    map_pair *e = cn_malloc(2 * (size_t)arity * sizeof *e);
    int rc = map_pairs(in, out, e, arity, depth);
    free(e);
    return rc;
}

/* Rewrites a finished LIST_EXT of `count` small integers 0..255 as STRING_EXT,
 * which is how OTP sends such a list; each 'a' N pair shrinks to the byte N. */
static void list_to_string(cn_buf *out, size_t head, size_t count)
{
    char *d = out->data + head;
    d[0] = ERL_STRING_EXT;
    d[1] = (char)(count >> 8);
    d[2] = (char)count;
    for (size_t i = 0; i < count; i++)
        d[3 + i] = d[5 + 2 * i + 1];
    out->len = head + 3 + count;
}

/* State of one list being flattened. */
typedef struct list_state {
    size_t count;
    int all_bytes;
    int nil_tail;
} list_state;

/* Reads the elements of one STRING_EXT or LIST_EXT whose tag is consumed. Returns 1
 * when the list ends there (STRING_EXT's implicit []), 0 when a tail follows. */
static int list_segment(tk_in *in, cn_buf *out, unsigned tag, list_state *st, int depth)
{
    if (tag == ERL_STRING_EXT) {
        TRY(need(in, 2));
        size_t n = get_u16(in);
        TRY(need(in, n));
        for (size_t i = 0; i < n; i++) {
            TRY(cn_buf_put_u8(out, ERL_SMALL_INTEGER_EXT));
            TRY(cn_buf_put_u8(out, (uint8_t)get_u8(in)));
        }
        st->count += n;
        /* A STRING_EXT ends the list with an implicit []. */
        st->nil_tail = 1;
        return 1;
    }
    TRY(need(in, 4));
    size_t n = get_u32(in);
    TRY(need(in, n));
    for (size_t i = 0; i < n; i++) {
        size_t at = out->len;
        TRY(term(in, out, depth + 1));
        if (out->len - at != 2 || out->data[at] != ERL_SMALL_INTEGER_EXT)
            st->all_bytes = 0;
    }
    st->count += n;
    return 0;
}

/*
 * A list is the same term however it was cut into LIST_EXT and STRING_EXT pieces:
 * [1 | [2]] is [1, 2] and [1 | "ab"] is [1, 97, 98]. The pieces are walked in a
 * loop, not by recursion, so a long chain of tails costs no stack.
 */
static int list(tk_in *in, cn_buf *out, unsigned tag, int depth)
{
    size_t head = out->len;
    list_state st = {0, 1, 0};
    TRY(cn_buf_put_u8(out, ERL_LIST_EXT));
    TRY(cn_buf_put_u32(out, 0));
    for (;;) {
        int ended = list_segment(in, out, tag, &st, depth);
        TRY(ended);
        if (ended)
            break;
        TRY(need(in, 1));
        tag = in->p[in->pos];
        if (tag == ERL_NIL_EXT) {
            in->pos++;
            st.nil_tail = 1;
            break;
        }
        if (tag != ERL_LIST_EXT && tag != ERL_STRING_EXT) {
            st.all_bytes = 0;
            /* No elements: the term is its tail. The header goes now, before the
             * tail is written, as the tail's bytes may be cut into pieces. */
            if (st.count == 0)
                out->len = head;
            TRY(term(in, out, depth + 1));
            break;
        }
        in->pos++;
    }
    if (st.count > UINT32_MAX)
        return CN_EDECODE;
    if (st.count == 0) {
        if (!st.nil_tail)
            return 0;
        out->len = head;
        return cn_buf_put_u8(out, ERL_NIL_EXT);
    }
    if (st.nil_tail && st.all_bytes && st.count <= 0xFFFF) {
        list_to_string(out, head, st.count);
        return 0;
    }
    patch_u32(out, head + 1, (uint32_t)st.count);
    return st.nil_tail ? cn_buf_put_u8(out, ERL_NIL_EXT) : 0;
}

/* NEW_FUN_EXT: fixed fields copied, embedded atom, integers and pid canonicalised,
 * the Size field recomputed. The fields are read with the end moved in to where
 * Size says the fun ends, so a field that claims more than that is truncated, and
 * a Size that disagrees with the content is malformed. */
static int new_fun_fields(tk_in *in, cn_buf *out, int depth)
{
    uint32_t num_free = get_u32(in);
    TRY(cn_buf_put_u32(out, num_free));
    TRY(atom(in, out));
    TRY(integer(in, out));
    TRY(integer(in, out));
    TRY(pid(in, out));
    TRY(need(in, num_free));
    for (uint32_t i = 0; i < num_free; i++)
        TRY(term(in, out, depth + 1));
    return in->pos == in->end ? 0 : CN_EDECODE;
}

static int new_fun(tk_in *in, cn_buf *out, int depth)
{
    size_t start = in->pos;
    TRY(need(in, 4 + 1 + 16 + 4 + 4));
    uint32_t size = get_u32(in);
    if (size < 4 + 1 + 16 + 4 + 4 || size > in->end - start)
        return CN_EDECODE;
    TRY(cn_buf_put_u8(out, ERL_NEW_FUN_EXT));
    size_t size_at = out->len;
    TRY(cn_buf_append(out, in->p + in->pos - 4, 4 + 1 + 16 + 4));
    in->pos += 1 + 16 + 4;
    size_t outer_end = in->end;
    in->end = start + size;
    int rc = new_fun_fields(in, out, depth);
    in->end = outer_end;
    TRY(rc);
    patch_u32(out, size_at, (uint32_t)(out->len - size_at));
    return 0;
}

static int export_fun(tk_in *in, cn_buf *out)
{
    TRY(cn_buf_put_u8(out, ERL_EXPORT_EXT));
    TRY(atom(in, out));
    TRY(atom(in, out));
    return integer(in, out);
}

static int term(tk_in *in, cn_buf *out, int depth)
{
    if (depth > TK_MAX_DEPTH)
        return CN_EDECODE;
    TRY(need(in, 1));
    unsigned tag = in->p[in->pos];
    switch (tag) {
    case ERL_ATOM_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT:
        return atom(in, out);
    case ERL_PID_EXT:
    case ERL_NEW_PID_EXT:
        return pid(in, out);
    default:
        break;
    }
    in->pos++;
    switch (tag) {
    case ERL_SMALL_INTEGER_EXT:
    case ERL_INTEGER_EXT:
    case ERL_SMALL_BIG_EXT:
    case ERL_LARGE_BIG_EXT:
        return integer_body(in, out, tag);
    case NEW_FLOAT_EXT:
        TRY(need(in, 8));
        return emit_float_bits(out, get_u64(in));
    case ERL_FLOAT_EXT:
        return float_old(in, out);
    case ERL_PORT_EXT:
    case ERL_NEW_PORT_EXT:
    case ERL_V4_PORT_EXT:
        return port_body(in, out, tag);
    case ERL_REFERENCE_EXT:
    case ERL_NEW_REFERENCE_EXT:
    case ERL_NEWER_REFERENCE_EXT:
        return ref_body(in, out, tag);
    case ERL_SMALL_TUPLE_EXT:
        TRY(need(in, 1));
        return tuple(in, out, get_u8(in), depth);
    case ERL_LARGE_TUPLE_EXT:
        TRY(need(in, 4));
        return tuple(in, out, get_u32(in), depth);
    case ERL_MAP_EXT:
        return map(in, out, depth);
    case ERL_NIL_EXT:
        return cn_buf_put_u8(out, ERL_NIL_EXT);
    case ERL_STRING_EXT:
    case ERL_LIST_EXT:
        return list(in, out, tag, depth);
    case ERL_BINARY_EXT:
        return binary(in, out);
    case ERL_BIT_BINARY_EXT:
        return bit_binary(in, out);
    case ERL_NEW_FUN_EXT:
        return new_fun(in, out, depth);
    case ERL_EXPORT_EXT:
        return export_fun(in, out);
    default:
        return CN_EDECODE;
    }
}

/* Copies the chain of pieces, in order, over the output from mark on. */
static void assemble(tk_in *in, cn_buf *out, size_t mark)
{
    size_t total = out->len - mark;
    char *tmp = cn_malloc(total);
    size_t at = 0;
    for (size_t k = in->head; k != NO_PIECE; k = in->pc[k].next) {
        memcpy(tmp + at, out->data + in->pc[k].at, in->pc[k].len);
        at += in->pc[k].len;
    }
    assert(at == total);
    memcpy(out->data + mark, tmp, total);
    free(tmp);
    in->work += total;
}

int tk_canonical_measured(const char *buf, size_t len, int *index, cn_buf *out, uint64_t *work)
{
    if (*index < 0 || (size_t)*index > len)
        return CN_EDECODE;
    size_t mark = out->len;
    tk_in in = {(const unsigned char *)buf, (size_t)*index, len, NULL, 0, 0,
                NO_PIECE, NO_PIECE, mark, 0, 0};
    int rc = term(&in, out, 0);
    if (rc == 0 && in.pos > INT_MAX)
        rc = CN_EDECODE;
    if (rc == 0 && in.relinked) {
        cut(&in, out);
        assemble(&in, out, mark);
    }
    free(in.pc);
    if (work != NULL)
        *work = in.work + (out->len - mark);
    if (rc < 0) {
        out->len = mark;
        return rc;
    }
    *index = (int)in.pos;
    return 0;
}

int tk_canonical_n(const char *buf, size_t len, int *index, cn_buf *out)
{
    return tk_canonical_measured(buf, len, index, out, NULL);
}

int tk_canonical(const char *buf, int *index, cn_buf *out)
{
    /* The term has been walked by cn_term_skip (the caller's promise); walking it
     * again finds its end, so that no decoder below reads past it, whatever
     * the term's inner fields claim. */
    int end = *index;
    if (*index < 0 || cn_term_skip_trusted(buf, &end) < 0)
        return CN_EDECODE;
    return tk_canonical_n(buf, (size_t)end, index, out);
}

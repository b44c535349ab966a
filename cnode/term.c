/*
 * Bounds-checked walking of external-format terms (term.h): every length is
 * checked against the bytes really there before ei may decode a term, and the
 * walk is a loop, whatever the nesting a peer sends; only funs captured inside
 * funs recurse, at most MAX_FUN_NESTING levels.
 */
#include "cnode/term.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ei.h>

#include "cnode/buf.h"
#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "cnode/protocol.h"
#include "cnode/utf8.h"

/*
 * Tags of the external term format (erts "External Term Format"). Named here
 * rather than taken from ei.h, which does not export all of them.
 */
enum {
    T_NEW_FLOAT = 70, T_BIT_BINARY = 77, T_NEW_PID = 88, T_NEW_PORT = 89, T_NEWER_REF = 90,
    T_SMALL_INT = 97, T_INT = 98, T_FLOAT = 99, T_ATOM = 100, T_REF = 101, T_PORT = 102,
    T_PID = 103, T_SMALL_TUPLE = 104, T_LARGE_TUPLE = 105, T_NIL = 106, T_STRING = 107,
    T_LIST = 108, T_BINARY = 109, T_SMALL_BIG = 110, T_LARGE_BIG = 111, T_NEW_FUN = 112,
    T_EXPORT = 113, T_NEW_REF = 114, T_SMALL_ATOM = 115, T_MAP = 116, T_FUN = 117,
    T_ATOM_UTF8 = 118, T_SMALL_ATOM_UTF8 = 119, T_V4_PORT = 120
};

/* Funs captured in the free variables of funs are walked by one recursive call per
 * level; real closures nest a few levels, a peer's forgery is refused past this. */
#define MAX_FUN_NESTING 64
/* A NEW_FUN_EXT's fixed part: Size, Arity, Uniq, Index, NumFree. */
#define NEW_FUN_FIXED (4 + 1 + 16 + 4 + 4)

static int walk(const char *b, size_t len, size_t *idx, int fun_depth);

/* Skips n raw bytes if they are there. */
static int take(size_t len, size_t *i, uint64_t n)
{
    if (n > len - *i)
        return -1;
    *i += (size_t)n;
    return 0;
}

/*
 * The text of an atom after its tag: where it starts (*at), its length in bytes
 * and whether it is UTF-8 (else Latin-1), with *i moved past it. The atom is
 * checked as the BEAM checks one it decodes: at most 255 characters, and for the
 * UTF-8 tags valid UTF-8 (ei would copy anything, and the text becomes names,
 * log lines and replies).
 */
static int atom_text(unsigned char tag, const char *b, size_t len, size_t *i, size_t *at, size_t *n, int *utf8)
{
    int small = tag == T_SMALL_ATOM || tag == T_SMALL_ATOM_UTF8;
    if (!small && tag != T_ATOM && tag != T_ATOM_UTF8)
        return -1;
    size_t width = small ? 1 : 2;
    if (len - *i < width)
        return -1;
    *n = small ? (uint8_t)b[*i] : cn_get_u16(b + *i);
    *utf8 = tag == T_ATOM_UTF8 || tag == T_SMALL_ATOM_UTF8;
    *i += width;
    *at = *i;
    if (take(len, i, *n) < 0)
        return -1;
    if (*utf8)
        return cn_utf8_short_ascii(b + *at, *n) || cn_utf8_atom_chars(b + *at, *n) >= 0 ? 0 : -1;
    return *n > CN_ATOM_MAX_CHARS ? -1 : 0;
}

/* An atom in any of its four encodings, as pids, ports and refs embed them. */
static int skip_atom(const char *b, size_t len, size_t *i)
{
    if (*i >= len)
        return -1;
    unsigned char tag = (unsigned char)b[(*i)++];
    size_t at, n;
    int utf8;
    return atom_text(tag, b, len, i, &at, &n, &utf8);
}

/*
 * A count of `width` bytes (1, 2 or 4), `extra` more header bytes (a sign, the
 * bits of the last byte), then that many bytes: atoms, strings, binaries, bignums.
 */
static inline int skip_counted(const char *b, size_t len, size_t *i, size_t width, size_t extra)
{
    if (len - *i < width + extra)
        return -1;
    const char *p = b + *i;
    uint64_t n = width == 1 ? (uint8_t)p[0] : width == 2 ? cn_get_u16(p) : cn_get_u32(p);
    *i += width + extra;
    return take(len, i, n);
}

/*
 * Tuples, lists, maps and old funs: a count of `width` bytes (1 or 4), and
 * count * mul + add elements that join the terms still to skip.
 */
static inline int add_elements(const char *b, size_t len, size_t *i, size_t width, unsigned mul, unsigned add,
                               uint64_t *pending)
{
    if (len - *i < width)
        return -1;
    uint64_t n = width == 1 ? (uint8_t)b[*i] : cn_get_u32(b + *i);
    *i += width;
    *pending += n * mul + add;
    return 0;
}

/* SMALL_INTEGER_EXT or INTEGER_EXT, the encodings of a fun's OldIndex and OldUniq. */
static int skip_fixnum(const char *b, size_t len, size_t *i)
{
    if (*i >= len)
        return -1;
    unsigned char tag = (unsigned char)b[(*i)++];
    if (tag == T_SMALL_INT)
        return take(len, i, 1);
    return tag == T_INT ? take(len, i, 4) : -1;
}

static int skip_pid(const char *b, size_t len, size_t *i)
{
    if (*i >= len)
        return -1;
    unsigned char tag = (unsigned char)b[(*i)++];
    if (tag != T_PID && tag != T_NEW_PID)
        return -1;
    return skip_atom(b, len, i) || take(len, i, tag == T_PID ? 9 : 12) ? -1 : 0;
}

/* An atom after its tag b[*i - 1], with the length limit skip_atom applies. */
static inline int skip_atom_body(const char *b, size_t len, size_t *i)
{
    (*i)--;
    return skip_atom(b, len, i);
}

/* An export: module and function atoms and an integer arity. ei's fun decoder (the
 * log printer uses it) leaks on any other shape. */
static inline int skip_export(const char *b, size_t len, size_t *i)
{
    return skip_atom(b, len, i) || skip_atom(b, len, i) || skip_fixnum(b, len, i) ? -1 : 0;
}

/* FLOAT_EXT: text padded with NULs. ei reads it with sscanf, which runs on to a NUL. */
static inline int skip_old_float(const char *b, size_t len, size_t *i)
{
    if (len - *i < 31 || memchr(b + *i, 0, 31) == NULL)
        return -1;
    return take(len, i, 31);
}

/* Pids, ports and old references: the node's atom, then `fields` bytes of id, serial, creation. */
static inline int skip_ident(const char *b, size_t len, size_t *i, size_t fields)
{
    return skip_atom(b, len, i) || take(len, i, fields) ? -1 : 0;
}

/* NEW_REFERENCE_EXT and NEWER_REFERENCE_EXT: at most 5 words after the node and a creation of `cre` bytes. */
static inline int skip_ref(const char *b, size_t len, size_t *i, size_t cre)
{
    if (len - *i < 2)
        return -1;
    uint64_t n = cn_get_u16(b + *i);
    *i += 2;
    if (n > 5 || skip_atom(b, len, i))
        return -1;
    return take(len, i, cre + 4 * n);
}

/*
 * NEW_FUN_EXT after its tag. Checking the Size field alone is not enough: the
 * canonicaliser and ei decode the fields inside, so each one (module atom, OldIndex,
 * OldUniq, pid, NumFree free variables) must be well formed and end exactly where
 * Size says, within len.
 */
static int skip_new_fun(const char *b, size_t len, size_t *i, int fun_depth)
{
    size_t start = *i;
    if (fun_depth >= MAX_FUN_NESTING || len - start < NEW_FUN_FIXED)
        return -1;
    uint32_t size = cn_get_u32(b + start);
    uint32_t num_free = cn_get_u32(b + start + NEW_FUN_FIXED - 4);
    if (size < NEW_FUN_FIXED || size > len - start)
        return -1;
    size_t end = start + size, j = start + NEW_FUN_FIXED;
    if (skip_atom(b, end, &j) || skip_fixnum(b, end, &j) || skip_fixnum(b, end, &j) ||
        skip_pid(b, end, &j) || num_free > end - j)
        return -1;
    for (uint32_t k = 0; k < num_free; k++)
        if (walk(b, end, &j, fun_depth + 1))
            return -1;
    if (j != end)
        return -1;
    *i = end;
    return 0;
}

/*
 * One term's own bytes after its tag b[*i - 1]; a compound term adds its
 * elements to *pending. A dispatch: each tag is one call with its layout.
 */
static inline int skip_one(unsigned char tag, const char *b, size_t len, size_t *i, uint64_t *pending,
                           int fun_depth)
{
    switch (tag) {
    case T_SMALL_INT: return take(len, i, 1);
    case T_INT: return take(len, i, 4);
    case T_NEW_FLOAT: return take(len, i, 8);
    case T_FLOAT: return skip_old_float(b, len, i);
    case T_NIL: return take(len, i, 0);
    case T_ATOM: case T_ATOM_UTF8: return skip_atom_body(b, len, i);
    case T_SMALL_ATOM: case T_SMALL_ATOM_UTF8: return skip_atom_body(b, len, i);
    case T_STRING: return skip_counted(b, len, i, 2, 0);
    case T_BINARY: return skip_counted(b, len, i, 4, 0);
    case T_BIT_BINARY: return skip_counted(b, len, i, 4, 1);       /* bits in the last byte */
    case T_SMALL_BIG: return skip_counted(b, len, i, 1, 1);        /* sign */
    case T_LARGE_BIG: return skip_counted(b, len, i, 4, 1);        /* sign */
    case T_SMALL_TUPLE: return add_elements(b, len, i, 1, 1, 0, pending);
    case T_LARGE_TUPLE: return add_elements(b, len, i, 4, 1, 0, pending);
    case T_LIST: return add_elements(b, len, i, 4, 1, 1, pending);   /* the elements and the tail */
    case T_MAP: return add_elements(b, len, i, 4, 2, 0, pending);    /* keys and values */
    case T_FUN: return add_elements(b, len, i, 4, 1, 4, pending);    /* pid, module, index, uniq, free vars */
    case T_EXPORT: return skip_export(b, len, i);                   /* module, function, arity */
    case T_PID: return skip_ident(b, len, i, 9);                     /* id, serial, creation u8 */
    case T_NEW_PID: return skip_ident(b, len, i, 12);                /* id, serial, creation u32 */
    case T_PORT: return skip_ident(b, len, i, 5);                    /* id u32, creation u8 */
    case T_NEW_PORT: return skip_ident(b, len, i, 8);                /* id u32, creation u32 */
    case T_V4_PORT: return skip_ident(b, len, i, 12);                /* id u64, creation u32 */
    case T_REF: return skip_ident(b, len, i, 5);                     /* id u32, creation u8 */
    case T_NEW_REF: return skip_ref(b, len, i, 1);
    case T_NEWER_REF: return skip_ref(b, len, i, 4);
    case T_NEW_FUN: return skip_new_fun(b, len, i, fun_depth);
    default: return -1;                                             /* atom cache refs, LOCAL_EXT, garbage */
    }
}

/*
 * The walk is iterative: `pending` counts the terms still to skip, and compound
 * terms add their elements to it. Deep nesting therefore costs no C stack, and a
 * count larger than the remaining bytes is refused at once (each term takes at
 * least one byte), which bounds the work by the input size.
 */
static int walk(const char *b, size_t len, size_t *idx, int fun_depth)
{
    size_t i = *idx;
    uint64_t pending = 1;
    while (pending > 0) {
        pending--;
        if (i >= len)
            return -1;
        unsigned char tag = (unsigned char)b[i++];
        if (skip_one(tag, b, len, &i, &pending, fun_depth) < 0 || pending > len - i)
            return -1;
    }
    *idx = i;
    return 0;
}

int cn_term_skip(const char *buf, size_t len, size_t *idx)
{
    if (*idx > len)
        return CN_EDECODE;
    return walk(buf, len, idx, 0) == 0 ? 0 : CN_EDECODE;
}

int cn_term_skip_versioned(const char *buf, size_t len, size_t *idx)
{
    if (*idx >= len || (unsigned char)buf[*idx] != CN_VERSION_MAGIC)
        return CN_EDECODE;
    size_t i = *idx + 1;
    if (walk(buf, len, &i, 0) != 0)
        return CN_EDECODE;
    *idx = i;
    return 0;
}

int cn_term_decode_atom(const char *buf, size_t len, size_t *idx, char *out, size_t *out_len)
{
    size_t i = *idx, at, n;
    int utf8;
    if (i >= len)
        return CN_EDECODE;
    unsigned char tag = (unsigned char)buf[i++];
    if (atom_text(tag, buf, len, &i, &at, &n, &utf8) < 0)
        return CN_EDECODE;
    const unsigned char *src = (const unsigned char *)buf + at;
    size_t o = 0;
    if (utf8) {
        memcpy(out, src, n);
        o = n;
    } else {
        /* Latin-1: each byte is its code point; those above 127 take two bytes in UTF-8. */
        for (size_t k = 0; k < n; k++) {
            if (src[k] < 0x80) {
                out[o++] = (char)src[k];
            } else {
                out[o++] = (char)(0xC0 | src[k] >> 6);
                out[o++] = (char)(0x80 | (src[k] & 0x3F));
            }
        }
    }
    out[o] = '\0';
    *out_len = o;
    *idx = at + n;
    return 0;
}

int cn_term_decode_pid(const char *buf, size_t len, size_t *idx, erlang_pid *p, size_t *node_len)
{
    size_t i = *idx;
    if (i >= len)
        return CN_EDECODE;
    unsigned char tag = (unsigned char)buf[i++];
    if (tag != T_PID && tag != T_NEW_PID)
        return CN_EDECODE;
    /* PID_EXT: id, serial, a creation byte of which ei keeps 2 bits; NEW_PID_EXT: three words. */
    size_t fields = tag == T_PID ? 9 : 12;
    if (cn_term_decode_atom(buf, len, &i, p->node, node_len) < 0 || len - i < fields)
        return CN_EDECODE;
    p->num = cn_get_u32(buf + i);
    p->serial = cn_get_u32(buf + i + 4);
    p->creation = tag == T_PID ? (unsigned char)buf[i + 8] & 0x03 : cn_get_u32(buf + i + 8);
    *idx = i + fields;
    return 0;
}

/* REFERENCE_EXT after its tag: the node, one id word and a creation byte (2 bits kept, as ei does). */
static int decode_old_ref(const char *buf, size_t len, size_t *i, erlang_ref *r, size_t *node_len)
{
    if (cn_term_decode_atom(buf, len, i, r->node, node_len) < 0 || len - *i < 5)
        return CN_EDECODE;
    r->len = 1;
    r->n[0] = cn_get_u32(buf + *i);
    r->creation = (unsigned char)buf[*i + 4] & 0x03;
    *i += 5;
    return 0;
}

int cn_term_decode_ref(const char *buf, size_t len, size_t *idx, erlang_ref *r, size_t *node_len)
{
    size_t i = *idx;
    if (i >= len)
        return CN_EDECODE;
    unsigned char tag = (unsigned char)buf[i++];
    if (tag == T_REF) {
        if (decode_old_ref(buf, len, &i, r, node_len) < 0)
            return CN_EDECODE;
        *idx = i;
        return 0;
    }
    if ((tag != T_NEW_REF && tag != T_NEWER_REF) || len - i < 2)
        return CN_EDECODE;
    /* A word count of at most 5, the node, the creation (a byte of which 2 bits are kept, or a word), the words. */
    size_t words = cn_get_u16(buf + i), cre = tag == T_NEW_REF ? 1 : 4;
    i += 2;
    if (words > 5 || cn_term_decode_atom(buf, len, &i, r->node, node_len) < 0 || len - i < cre + 4 * words)
        return CN_EDECODE;
    r->creation = tag == T_NEW_REF ? (unsigned char)buf[i] & 0x03 : cn_get_u32(buf + i);
    i += cre;
    r->len = (int)words;
    for (size_t k = 0; k < words; k++, i += 4)
        r->n[k] = cn_get_u32(buf + i);
    *idx = i;
    return 0;
}

/* A node's name as ei encodes it in a pid or reference; NULL when it is no atom's text. */
static char *put_node_atom(char *w, const char *node)
{
    size_t n = strnlen(node, MAXATOMLEN_UTF8);
    if (n >= MAXATOMLEN_UTF8 || (!cn_utf8_short_ascii(node, n) && cn_utf8_atom_chars(node, n) < 0))
        return NULL;
    if (n <= 255) {
        *w++ = (char)T_SMALL_ATOM_UTF8;
        *w++ = (char)n;
    } else {
        *w++ = (char)T_ATOM_UTF8;
        *w++ = (char)(n >> 8);
        *w++ = (char)n;
    }
    memcpy(w, node, n);
    return w + n;
}

int cn_term_encode_pid(char *buf, int *idx, const erlang_pid *p)
{
    char *w = buf + *idx;
    *w++ = (char)T_NEW_PID;
    if ((w = put_node_atom(w, p->node)) == NULL)
        return CN_EDECODE;
    cn_set_u32(w, p->num);
    cn_set_u32(w + 4, p->serial);
    cn_set_u32(w + 8, p->creation);
    *idx = (int)(w + 12 - buf);
    return 0;
}

int cn_term_encode_ref(char *buf, int *idx, const erlang_ref *r)
{
    if (r->len < 0 || r->len > 5)
        return CN_EDECODE;
    char *w = buf + *idx;
    w[0] = (char)T_NEWER_REF;
    w[1] = (char)(r->len >> 8);
    w[2] = (char)r->len;
    if ((w = put_node_atom(w + 3, r->node)) == NULL)
        return CN_EDECODE;
    cn_set_u32(w, r->creation);
    w += 4;
    for (int k = 0; k < r->len; k++, w += 4)
        cn_set_u32(w, r->n[k]);
    *idx = (int)(w - buf);
    return 0;
}

int cn_term_skip_trusted(const char *buf, int *index)
{
    size_t i = (size_t)*index;
    if (walk(buf, SIZE_MAX, &i, 0) != 0)
        return -1;
    *index = (int)i;
    return 0;
}

/* Above this many bytes a term is summarised, which also bounds its depth for ei's printer. */
#define PRINT_MAX 2048

/*
 * Whether a walked term holds something ei's printer mishandles (both found by
 * fuzz_term): a closure (NEW_FUN_EXT, FUN_EXT), whose module name it leaks, and a
 * LARGE_BIG_EXT, whose hex digits it formats into a fixed stack buffer of about
 * 2000 bytes (a 1000-byte bignum smashes the stack). Such terms are summarised.
 */
static int unprintable(const char *b, int i)
{
    uint64_t pending = 1;
    while (pending > 0) {
        pending--;
        switch ((unsigned char)b[i]) {
        case T_NEW_FUN:
        case T_FUN:
        case T_LARGE_BIG:
            return 1;
        case T_SMALL_TUPLE:
            pending += (uint8_t)b[i + 1];
            i += 2;
            break;
        case T_LARGE_TUPLE:
            pending += cn_get_u32(b + i + 1);
            i += 5;
            break;
        case T_LIST:
            pending += (uint64_t)cn_get_u32(b + i + 1) + 1;
            i += 5;
            break;
        case T_MAP:
            pending += 2 * (uint64_t)cn_get_u32(b + i + 1);
            i += 5;
            break;
        default:
            if (cn_term_skip_trusted(b, &i) < 0)
                return 1;
            break;
        }
    }
    return 0;
}

char *cn_term_sprint(const char *buf, int index)
{
    int end = index;
    if (cn_term_skip_trusted(buf, &end) < 0)
        return cn_strdup("<malformed term>");
    if (end - index > PRINT_MAX || unprintable(buf, index)) {
        char *s = cn_malloc(48);
        snprintf(s, 48, "<term of %d bytes>", end - index);
        return s;
    }
    char *text = NULL;
    int i = index;
    if (ei_s_print_term(&text, buf, &i) < 0) {
        free(text);
        return cn_strdup("<unprintable term>");
    }
    /* ei prints atoms as they are, line breaks included. */
    char *escaped = cn_malloc(CN_LOG_ESC_MAX);
    cn_log_escape_str(escaped, CN_LOG_ESC_MAX, text);
    free(text);
    return escaped;
}

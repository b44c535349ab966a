/*
 * Bounds-checked walking of external-format terms (term.h): every length is
 * checked against the bytes really there before ei may decode a term, and the
 * walk is a loop, never a recursion, whatever the nesting a peer sends.
 */
#include "cnode/term.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ei.h>

#include "cnode/buf.h"
#include "cnode/error.h"
#include "cnode/mem.h"
#include "cnode/protocol.h"

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

/* Skips n raw bytes if they are there. */
static int take(size_t len, size_t *i, uint64_t n)
{
    if (n > len - *i)
        return -1;
    *i += (size_t)n;
    return 0;
}

/* An atom in any of its four encodings, as pids, ports and refs embed them. */
static int skip_atom(const char *b, size_t len, size_t *i)
{
    if (*i >= len)
        return -1;
    unsigned char tag = (unsigned char)b[(*i)++];
    if (tag == T_ATOM || tag == T_ATOM_UTF8) {
        if (len - *i < 2)
            return -1;
        uint16_t n = cn_get_u16(b + *i);
        *i += 2;
        return take(len, i, n);
    }
    if (tag == T_SMALL_ATOM || tag == T_SMALL_ATOM_UTF8) {
        if (*i >= len)
            return -1;
        uint8_t n = (uint8_t)b[(*i)++];
        return take(len, i, n);
    }
    return -1;
}

/* Scalars of a fixed size after the tag. */
static int skip_fixed(unsigned char tag, size_t len, size_t *i)
{
    switch (tag) {
    case T_SMALL_INT: return take(len, i, 1);
    case T_INT: return take(len, i, 4);
    case T_NEW_FLOAT: return take(len, i, 8);
    case T_FLOAT: return take(len, i, 31);
    default: return 0; /* T_NIL */
    }
}

/*
 * Byte strings, binaries and bignums: a length field of `width` bytes at the
 * start of a header of `head` bytes, then that many bytes.
 */
static int skip_sized(unsigned char tag, const char *b, size_t len, size_t *i)
{
    size_t head, width;
    switch (tag) {
    case T_STRING: head = 2, width = 2; break;          /* u16 length */
    case T_BINARY: head = 4, width = 4; break;          /* u32 length */
    case T_BIT_BINARY: head = 5, width = 4; break;      /* u32 length, bits in the last byte */
    case T_SMALL_BIG: head = 2, width = 1; break;       /* u8 digits, sign */
    default: head = 5, width = 4; break;                /* T_LARGE_BIG: u32 digits, sign */
    }
    if (len - *i < head)
        return -1;
    const char *p = b + *i;
    uint64_t n = width == 1 ? (uint8_t)p[0] : width == 2 ? cn_get_u16(p) : cn_get_u32(p);
    *i += head;
    return take(len, i, n);
}

/* Tuples, lists, maps, export and old funs: their elements join the terms still to skip. */
static int skip_container(unsigned char tag, const char *b, size_t len, size_t *i, uint64_t *pending)
{
    if (tag == T_EXPORT) {
        *pending += 3; /* module, function, arity */
        return 0;
    }
    if (tag == T_SMALL_TUPLE) {
        if (len - *i < 1)
            return -1;
        *pending += (uint8_t)b[(*i)++];
        return 0;
    }
    if (len - *i < 4)
        return -1;
    uint64_t n = cn_get_u32(b + *i);
    *i += 4;
    if (tag == T_LIST)
        n += 1;         /* the elements and the tail */
    else if (tag == T_MAP)
        n *= 2;         /* keys and values */
    else if (tag == T_FUN)
        n += 4;         /* pid, module, index, uniq, then the free variables */
    *pending += n;      /* T_LARGE_TUPLE: the elements */
    return 0;
}

/* Pids, ports and old references: the node's atom, then fixed fields. */
static int skip_ident(unsigned char tag, const char *b, size_t len, size_t *i)
{
    size_t n;
    switch (tag) {
    case T_PID: n = 9; break;           /* id, serial, creation u8 */
    case T_NEW_PID: n = 12; break;      /* id, serial, creation u32 */
    case T_NEW_PORT: n = 8; break;      /* id u32, creation u32 */
    case T_V4_PORT: n = 12; break;      /* id u64, creation u32 */
    default: n = 5; break;              /* T_PORT, T_REF: id u32, creation u8 */
    }
    return skip_atom(b, len, i) || take(len, i, n) ? -1 : 0;
}

/* NEW_REFERENCE_EXT and NEWER_REFERENCE_EXT: a count of at most 5 words, the node, creation, words. */
static int skip_ref(unsigned char tag, const char *b, size_t len, size_t *i)
{
    if (len - *i < 2)
        return -1;
    uint64_t n = cn_get_u16(b + *i);
    *i += 2;
    if (n > 5 || skip_atom(b, len, i))
        return -1;
    return take(len, i, (tag == T_NEW_REF ? 1 : 4) + 4 * n);
}

/* NEW_FUN_EXT: its size field counts itself and everything after it. */
static int skip_new_fun(const char *b, size_t len, size_t *i)
{
    if (len - *i < 4)
        return -1;
    uint64_t n = cn_get_u32(b + *i);
    return n < 4 || take(len, i, n) ? -1 : 0;
}

/* One term's own bytes from b[*i] on; a compound term adds its elements to *pending. */
static int skip_one(const char *b, size_t len, size_t *i, uint64_t *pending)
{
    unsigned char tag = (unsigned char)b[(*i)++];
    switch (tag) {
    case T_SMALL_INT: case T_INT: case T_NEW_FLOAT: case T_FLOAT: case T_NIL:
        return skip_fixed(tag, len, i);
    case T_ATOM: case T_ATOM_UTF8: case T_SMALL_ATOM: case T_SMALL_ATOM_UTF8:
        (*i)--;
        return skip_atom(b, len, i);
    case T_STRING: case T_BINARY: case T_BIT_BINARY: case T_SMALL_BIG: case T_LARGE_BIG:
        return skip_sized(tag, b, len, i);
    case T_SMALL_TUPLE: case T_LARGE_TUPLE: case T_LIST: case T_MAP: case T_EXPORT: case T_FUN:
        return skip_container(tag, b, len, i, pending);
    case T_PID: case T_NEW_PID: case T_PORT: case T_NEW_PORT: case T_V4_PORT: case T_REF:
        return skip_ident(tag, b, len, i);
    case T_NEW_REF: case T_NEWER_REF:
        return skip_ref(tag, b, len, i);
    case T_NEW_FUN:
        return skip_new_fun(b, len, i);
    default:
        return -1; /* atom cache refs, LOCAL_EXT, garbage */
    }
}

/*
 * The walk is iterative: `pending` counts the terms still to skip, and compound
 * terms add their elements to it. Deep nesting therefore costs no C stack, and a
 * count larger than the remaining bytes is refused at once (each term takes at
 * least one byte), which bounds the work by the input size.
 */
static int walk(const char *b, size_t len, size_t *idx)
{
    size_t i = *idx;
    uint64_t pending = 1;
    while (pending > 0) {
        pending--;
        if (i >= len || skip_one(b, len, &i, &pending) < 0 || pending > len - i)
            return -1;
    }
    *idx = i;
    return 0;
}

int cn_term_skip(const char *buf, size_t len, size_t *idx)
{
    if (*idx > len)
        return CN_EDECODE;
    return walk(buf, len, idx) == 0 ? 0 : CN_EDECODE;
}

int cn_term_skip_versioned(const char *buf, size_t len, size_t *idx)
{
    if (*idx >= len || (unsigned char)buf[*idx] != CN_VERSION_MAGIC)
        return CN_EDECODE;
    size_t i = *idx + 1;
    if (walk(buf, len, &i) != 0)
        return CN_EDECODE;
    *idx = i;
    return 0;
}

int cn_term_skip_trusted(const char *buf, int *index)
{
    size_t i = (size_t)*index;
    if (walk(buf, SIZE_MAX, &i) != 0)
        return -1;
    *index = (int)i;
    return 0;
}

/* Above this many bytes a term is summarised, which also bounds its depth for ei's printer. */
#define PRINT_MAX 2048

char *cn_term_sprint(const char *buf, int index)
{
    int end = index;
    if (cn_term_skip_trusted(buf, &end) < 0)
        return cn_strdup("<malformed term>");
    if (end - index > PRINT_MAX) {
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
    return text;
}

#include "cnode/term.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ei.h>

#include "cnode/buf.h"
#include "cnode/error.h"
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

/* The most characters an atom has; UTF-8 takes up to four bytes for each. */
#define MAX_ATOM_CHARS 255
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
        /* No atom has more than 255 characters: ei decodes atoms into buffers of
         * that many (Latin-1) or four times that many (UTF-8) bytes. */
        if (n > (tag == T_ATOM ? MAX_ATOM_CHARS : 4 * MAX_ATOM_CHARS))
            return -1;
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
        uint64_t n;
        switch (tag) {
        case T_SMALL_INT:
            if (take(len, &i, 1)) return -1;
            break;
        case T_INT:
            if (take(len, &i, 4)) return -1;
            break;
        case T_NEW_FLOAT:
            if (take(len, &i, 8)) return -1;
            break;
        case T_FLOAT:
            /* Text padded with NULs: ei reads it with sscanf, which runs on to a NUL. */
            if (len - i < 31 || memchr(b + i, 0, 31) == NULL || take(len, &i, 31)) return -1;
            break;
        case T_ATOM:
        case T_ATOM_UTF8:
        case T_SMALL_ATOM:
        case T_SMALL_ATOM_UTF8:
            i--;
            if (skip_atom(b, len, &i)) return -1;
            break;
        case T_NIL:
            break;
        case T_STRING:
            if (len - i < 2) return -1;
            n = cn_get_u16(b + i);
            i += 2;
            if (take(len, &i, n)) return -1;
            break;
        case T_BINARY:
            if (len - i < 4) return -1;
            n = cn_get_u32(b + i);
            i += 4;
            if (take(len, &i, n)) return -1;
            break;
        case T_BIT_BINARY:
            if (len - i < 5) return -1;
            n = cn_get_u32(b + i);
            i += 5;
            if (take(len, &i, n)) return -1;
            break;
        case T_SMALL_BIG:
            if (len - i < 1) return -1;
            n = (uint8_t)b[i];
            i += 2;
            if (i > len || take(len, &i, n)) return -1;
            break;
        case T_LARGE_BIG:
            if (len - i < 5) return -1;
            n = cn_get_u32(b + i);
            i += 5;
            if (take(len, &i, n)) return -1;
            break;
        case T_SMALL_TUPLE:
            if (len - i < 1) return -1;
            pending += (uint8_t)b[i++];
            break;
        case T_LARGE_TUPLE:
            if (len - i < 4) return -1;
            pending += cn_get_u32(b + i);
            i += 4;
            break;
        case T_LIST:
            if (len - i < 4) return -1;
            pending += (uint64_t)cn_get_u32(b + i) + 1; /* the elements and the tail */
            i += 4;
            break;
        case T_MAP:
            if (len - i < 4) return -1;
            pending += 2 * (uint64_t)cn_get_u32(b + i);
            i += 4;
            break;
        case T_PID:
            if (skip_atom(b, len, &i) || take(len, &i, 9)) return -1;
            break;
        case T_NEW_PID:
            if (skip_atom(b, len, &i) || take(len, &i, 12)) return -1;
            break;
        case T_PORT:
            if (skip_atom(b, len, &i) || take(len, &i, 5)) return -1;
            break;
        case T_NEW_PORT:
            if (skip_atom(b, len, &i) || take(len, &i, 8)) return -1;
            break;
        case T_V4_PORT:
            if (skip_atom(b, len, &i) || take(len, &i, 12)) return -1;
            break;
        case T_REF:
            if (skip_atom(b, len, &i) || take(len, &i, 5)) return -1;
            break;
        case T_NEW_REF:
        case T_NEWER_REF:
            if (len - i < 2) return -1;
            n = cn_get_u16(b + i);
            i += 2;
            if (n > 5 || skip_atom(b, len, &i) || take(len, &i, (tag == T_NEW_REF ? 1 : 4) + 4 * n))
                return -1;
            break;
        case T_NEW_FUN:
            if (skip_new_fun(b, len, &i, fun_depth)) return -1;
            break;
        case T_EXPORT:
            /* ei's fun decoder (the log printer uses it) leaks on any other shape. */
            if (skip_atom(b, len, &i) || skip_atom(b, len, &i) || skip_fixnum(b, len, &i)) return -1;
            break;
        case T_FUN:
            if (len - i < 4) return -1;
            pending += 4 + (uint64_t)cn_get_u32(b + i); /* pid, module, index, uniq, free vars */
            i += 4;
            break;
        default:
            return -1; /* atom cache refs, LOCAL_EXT, garbage */
        }
        if (pending > len - i)
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
        return strdup("<malformed term>");
    if (end - index > PRINT_MAX || unprintable(buf, index)) {
        char *s = malloc(48);
        if (s)
            snprintf(s, 48, "<term of %d bytes>", end - index);
        return s;
    }
    char *text = NULL;
    int i = index;
    if (ei_s_print_term(&text, buf, &i) < 0) {
        free(text);
        return strdup("<unprintable term>");
    }
    return text;
}

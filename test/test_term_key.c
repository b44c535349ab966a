/*
 * Unit tests for genserver/term_key: the same term in every encoding OTP or ei can
 * produce gives the same canonical bytes, different terms give different bytes, and
 * malformed, truncated or absurdly nested input is refused without side effects.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <ei.h>

#include "cnode/buf.h"
#include "cnode/error.h"
#include "genserver/term_key.h"

/* ---- vectors from OTP 25 ------------------------------------------------ */

/*
 * Made with erl (OTP 25) from each term X, version byte removed:
 *   _d   term_to_binary(X)                          the default, minor version 1
 *   _m0  term_to_binary(X, [{minor_version, 0}])    FLOAT_EXT text floats
 *   _m2  term_to_binary(X, [{minor_version, 2}])    UTF-8 atoms always
 * OTP 25's default writes Latin-1 atoms as ATOM_EXT, so _d against _m2 is the old
 * and new atom form, and _d against _m0 the new and old float form. closure is
 * fun(Y) -> {X, Y} end with X = abc, from a compiled module.
 */
/* abc */
static const unsigned char atom_d[] = {
    100, 0, 3, 97, 98, 99
};
static const unsigned char atom_m0[] = {
    100, 0, 3, 97, 98, 99
};
static const unsigned char atom_m2[] = {
    119, 3, 97, 98, 99
};
/* '\xe9' */
static const unsigned char latin1_atom_d[] = {
    100, 0, 1, 233
};
static const unsigned char latin1_atom_m0[] = {
    100, 0, 1, 233
};
static const unsigned char latin1_atom_m2[] = {
    119, 2, 195, 169
};
/* '\x{142}' */
static const unsigned char utf8_atom_d[] = {
    119, 2, 197, 130
};
static const unsigned char utf8_atom_m0[] = {
    119, 2, 197, 130
};
static const unsigned char utf8_atom_m2[] = {
    119, 2, 197, 130
};
/* 1.5 */
static const unsigned char float_d[] = {
    70, 63, 248, 0, 0, 0, 0, 0, 0
};
static const unsigned char float_m0[] = {
    99, 49, 46, 53, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48,
    48, 101, 43, 48, 48, 0, 0, 0, 0, 0
};
static const unsigned char float_m2[] = {
    70, 63, 248, 0, 0, 0, 0, 0, 0
};
/* math:pi() */
static const unsigned char pi_d[] = {
    70, 64, 9, 33, 251, 84, 68, 45, 24
};
static const unsigned char pi_m0[] = {
    99, 51, 46, 49, 52, 49, 53, 57, 50, 54, 53, 51, 53, 56, 57, 55, 57, 51, 49, 49, 54, 48,
    48, 101, 43, 48, 48, 0, 0, 0, 0, 0
};
static const unsigned char pi_m2[] = {
    70, 64, 9, 33, 251, 84, 68, 45, 24
};
/* 5.0e-324 */
static const unsigned char denormal_d[] = {
    70, 0, 0, 0, 0, 0, 0, 0, 1
};
static const unsigned char denormal_m0[] = {
    99, 52, 46, 57, 52, 48, 54, 53, 54, 52, 53, 56, 52, 49, 50, 52, 54, 53, 52, 52, 49, 55,
    55, 101, 45, 51, 50, 52, 0, 0, 0, 0
};
static const unsigned char denormal_m2[] = {
    70, 0, 0, 0, 0, 0, 0, 0, 1
};
/* 1.0e300 */
static const unsigned char huge_float_d[] = {
    70, 126, 55, 228, 60, 136, 0, 117, 156
};
static const unsigned char huge_float_m0[] = {
    99, 49, 46, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 53, 50, 53,
    48, 101, 43, 51, 48, 48, 0, 0, 0, 0
};
static const unsigned char huge_float_m2[] = {
    70, 126, 55, 228, 60, 136, 0, 117, 156
};
/* -2.5e-10 */
static const unsigned char negative_float_d[] = {
    70, 189, 241, 46, 11, 232, 38, 214, 149
};
static const unsigned char negative_float_m0[] = {
    99, 45, 50, 46, 53, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 49, 53, 53,
    55, 48, 101, 45, 49, 48, 0, 0, 0, 0
};
static const unsigned char negative_float_m2[] = {
    70, 189, 241, 46, 11, 232, 38, 214, 149
};
/* -0.0 */
static const unsigned char minus_zero_d[] = {
    70, 128, 0, 0, 0, 0, 0, 0, 0
};
static const unsigned char minus_zero_m0[] = {
    99, 45, 48, 46, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48,
    48, 48, 101, 43, 48, 48, 0, 0, 0, 0
};
static const unsigned char minus_zero_m2[] = {
    70, 128, 0, 0, 0, 0, 0, 0, 0
};
/* -123456789012345678901234567890 */
static const unsigned char big_d[] = {
    110, 13, 1, 210, 10, 63, 78, 238, 224, 115, 195, 246, 15, 233, 142, 1
};
static const unsigned char big_m0[] = {
    110, 13, 1, 210, 10, 63, 78, 238, 224, 115, 195, 246, 15, 233, 142, 1
};
static const unsigned char big_m2[] = {
    110, 13, 1, 210, 10, 63, 78, 238, 224, 115, 195, 246, 15, 233, 142, 1
};
/* 300 */
static const unsigned char int_d[] = {
    98, 0, 0, 1, 44
};
static const unsigned char int_m0[] = {
    98, 0, 0, 1, 44
};
static const unsigned char int_m2[] = {
    98, 0, 0, 1, 44
};
/* {abc, 1.5, "hi", [1|2], <<1:3>>, [256, 1]} */
static const unsigned char tuple_d[] = {
    104, 6, 100, 0, 3, 97, 98, 99, 70, 63, 248, 0, 0, 0, 0, 0, 0, 107, 0, 2, 104, 105, 108,
    0, 0, 0, 1, 97, 1, 97, 2, 77, 0, 0, 0, 1, 3, 32, 108, 0, 0, 0, 2, 98, 0, 0, 1, 0, 97,
    1, 106
};
static const unsigned char tuple_m0[] = {
    104, 6, 100, 0, 3, 97, 98, 99, 99, 49, 46, 53, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48,
    48, 48, 48, 48, 48, 48, 48, 48, 48, 101, 43, 48, 48, 0, 0, 0, 0, 0, 107, 0, 2, 104,
    105, 108, 0, 0, 0, 1, 97, 1, 97, 2, 77, 0, 0, 0, 1, 3, 32, 108, 0, 0, 0, 2, 98, 0, 0,
    1, 0, 97, 1, 106
};
static const unsigned char tuple_m2[] = {
    104, 6, 119, 3, 97, 98, 99, 70, 63, 248, 0, 0, 0, 0, 0, 0, 107, 0, 2, 104, 105, 108, 0,
    0, 0, 1, 97, 1, 97, 2, 77, 0, 0, 0, 1, 3, 32, 108, 0, 0, 0, 2, 98, 0, 0, 1, 0, 97, 1,
    106
};
/* fun erlang:abs/1 */
static const unsigned char export_d[] = {
    113, 100, 0, 6, 101, 114, 108, 97, 110, 103, 100, 0, 3, 97, 98, 115, 97, 1
};
static const unsigned char export_m0[] = {
    113, 100, 0, 6, 101, 114, 108, 97, 110, 103, 100, 0, 3, 97, 98, 115, 97, 1
};
static const unsigned char export_m2[] = {
    113, 119, 6, 101, 114, 108, 97, 110, 103, 119, 3, 97, 98, 115, 97, 1
};
/* tkgen:mkfun(abc) */
static const unsigned char closure_d[] = {
    112, 0, 0, 0, 79, 1, 176, 182, 251, 52, 184, 187, 61, 53, 142, 240, 10, 242, 44, 2,
    215, 188, 0, 0, 0, 0, 0, 0, 0, 1, 100, 0, 5, 116, 107, 103, 101, 110, 97, 0, 98, 5,
    133, 183, 217, 88, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111,
    115, 116, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 3, 97, 98, 99
};
static const unsigned char closure_m0[] = {
    112, 0, 0, 0, 79, 1, 176, 182, 251, 52, 184, 187, 61, 53, 142, 240, 10, 242, 44, 2,
    215, 188, 0, 0, 0, 0, 0, 0, 0, 1, 100, 0, 5, 116, 107, 103, 101, 110, 97, 0, 98, 5,
    133, 183, 217, 88, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111,
    115, 116, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 3, 97, 98, 99
};
static const unsigned char closure_m2[] = {
    112, 0, 0, 0, 76, 1, 176, 182, 251, 52, 184, 187, 61, 53, 142, 240, 10, 242, 44, 2,
    215, 188, 0, 0, 0, 0, 0, 0, 0, 1, 119, 5, 116, 107, 103, 101, 110, 97, 0, 98, 5, 133,
    183, 217, 88, 119, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115, 116,
    0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 119, 3, 97, 98, 99
};
/* self() */
static const unsigned char pid_d[] = {
    88, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0,
    0, 9, 0, 0, 0, 0, 0, 0, 0, 0
};
static const unsigned char pid_m0[] = {
    88, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0,
    0, 9, 0, 0, 0, 0, 0, 0, 0, 0
};
static const unsigned char pid_m2[] = {
    88, 119, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0, 0,
    9, 0, 0, 0, 0, 0, 0, 0, 0
};
/* #{abc => 1.5, 2 => [x]} */
static const unsigned char map_d[] = {
    116, 0, 0, 0, 2, 97, 2, 108, 0, 0, 0, 1, 100, 0, 1, 120, 106, 100, 0, 3, 97, 98, 99,
    70, 63, 248, 0, 0, 0, 0, 0, 0
};
static const unsigned char map_m0[] = {
    116, 0, 0, 0, 2, 97, 2, 108, 0, 0, 0, 1, 100, 0, 1, 120, 106, 100, 0, 3, 97, 98, 99,
    99, 49, 46, 53, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48,
    48, 101, 43, 48, 48, 0, 0, 0, 0, 0
};
static const unsigned char map_m2[] = {
    116, 0, 0, 0, 2, 97, 2, 108, 0, 0, 0, 1, 119, 1, 120, 106, 119, 3, 97, 98, 99, 70, 63,
    248, 0, 0, 0, 0, 0, 0
};

typedef struct otp_vector {
    const char *name;
    const unsigned char *d, *m0, *m2;
    size_t d_len, m0_len, m2_len;
    /* Whether OTP's minor version 2 bytes are already canonical (not for -0.0). */
    int m2_canonical;
} otp_vector;

#define VEC(id, canonical)                                                           \
    {#id, id##_d, id##_m0, id##_m2, sizeof id##_d, sizeof id##_m0, sizeof id##_m2, \
     canonical}

static const otp_vector vectors[] = {
    VEC(atom, 1),        VEC(latin1_atom, 1), VEC(utf8_atom, 1),  VEC(float, 1),
    VEC(pi, 1),          VEC(denormal, 1),    VEC(huge_float, 1), VEC(negative_float, 1),
    VEC(minus_zero, 0),  VEC(big, 1),         VEC(int, 1),        VEC(tuple, 1),
    VEC(export, 1),      VEC(closure, 1),     VEC(pid, 1),        VEC(map, 1),
};

#define NVECTORS (sizeof vectors / sizeof vectors[0])

/* ---- helpers ------------------------------------------------------------ */

/* Two scratch buffers per test, so that two canonical forms can be compared. */
static int setup(void **state)
{
    cn_buf *b = malloc(2 * sizeof *b);
    if (b == NULL)
        return -1;
    cn_buf_init(&b[0]);
    cn_buf_init(&b[1]);
    *state = b;
    return 0;
}

static int teardown(void **state)
{
    cn_buf *b = *state;
    cn_buf_free(&b[0]);
    cn_buf_free(&b[1]);
    free(b);
    return 0;
}

/* Canonicalises a whole buffer into out (reset first); the term must fill it. */
static void canon(const void *bytes, size_t len, cn_buf *out)
{
    int index = 0;
    cn_buf_reset(out);
    int rc = tk_canonical_n(bytes, len, &index, out);
    if (rc != 0)
        fail_msg("tk_canonical_n: %s", cn_strerror(rc));
    assert_int_equal(index, (int)len);
}

static void assert_same(const void *a, size_t alen, const void *b, size_t blen, cn_buf *buf)
{
    canon(a, alen, &buf[0]);
    canon(b, blen, &buf[1]);
    assert_int_equal(buf[0].len, buf[1].len);
    assert_memory_equal(buf[0].data, buf[1].data, buf[0].len);
}

static void assert_differ(const void *a, size_t alen, const void *b, size_t blen, cn_buf *buf)
{
    canon(a, alen, &buf[0]);
    canon(b, blen, &buf[1]);
    if (buf[0].len == buf[1].len)
        assert_memory_not_equal(buf[0].data, buf[1].data, buf[0].len);
}

/* Canonicalises and compares with the expected canonical bytes. */
static void assert_canon(const void *a, size_t alen, const void *want, size_t wlen, cn_buf *buf)
{
    canon(a, alen, &buf[0]);
    assert_int_equal(buf[0].len, wlen);
    assert_memory_equal(buf[0].data, want, wlen);
}

/* Expects refusal, and checks that neither the index nor the output moved. */
static void assert_bad(const void *bytes, size_t len, cn_buf *out)
{
    int index = 0;
    cn_buf_reset(out);
    assert_int_equal(cn_buf_append(out, "keep", 4), 0);
    assert_int_equal(tk_canonical_n(bytes, len, &index, out), CN_EDECODE);
    assert_int_equal(index, 0);
    assert_int_equal(out->len, 4);
    assert_memory_equal(out->data, "keep", 4);
}

#define SAME(a, b) assert_same(a, sizeof a, b, sizeof b, buf)
#define DIFFER(a, b) assert_differ(a, sizeof a, b, sizeof b, buf)
#define CANON(a, want) assert_canon(a, sizeof a, want, sizeof want, buf)
#define BAD(a) assert_bad(a, sizeof a, buf)

/* A buffer for ei_encode_*, big enough for every term built here. */
typedef struct ebuf {
    char b[512];
    int i;
} ebuf;

/* ---- OTP vectors --------------------------------------------------------- */

static void test_otp_encodings_agree(void **state)
{
    cn_buf *buf = *state;
    for (size_t k = 0; k < NVECTORS; k++) {
        const otp_vector *v = &vectors[k];
        assert_same(v->d, v->d_len, v->m0, v->m0_len, buf);
        assert_same(v->d, v->d_len, v->m2, v->m2_len, buf);
        if (v->m2_canonical) {
            assert_int_equal(buf[1].len, v->m2_len);
            assert_memory_equal(buf[1].data, v->m2, v->m2_len);
        }
    }
}

static void test_canonical_is_idempotent_and_valid(void **state)
{
    cn_buf *buf = *state;
    for (size_t k = 0; k < NVECTORS; k++) {
        const otp_vector *v = &vectors[k];
        canon(v->m0, v->m0_len, &buf[0]);
        canon(buf[0].data, buf[0].len, &buf[1]);
        assert_int_equal(buf[0].len, buf[1].len);
        assert_memory_equal(buf[0].data, buf[1].data, buf[0].len);
        /* The canonical bytes are external term format that ei can walk. */
        int index = 0;
        assert_int_equal(ei_skip_term(buf[0].data, &index), 0);
        assert_int_equal(index, (int)buf[0].len);
    }
}

static void test_truncated_vectors_refused(void **state)
{
    cn_buf *buf = *state;
    for (size_t k = 0; k < NVECTORS; k++) {
        const otp_vector *v = &vectors[k];
        for (size_t n = 0; n < v->d_len; n++)
            assert_bad(v->d, n, buf);
        for (size_t n = 0; n < v->m0_len; n++)
            assert_bad(v->m0, n, buf);
        for (size_t n = 0; n < v->m2_len; n++)
            assert_bad(v->m2, n, buf);
    }
}

/* ---- floats -------------------------------------------------------------- */

static void test_floats(void **state)
{
    cn_buf *buf = *state;
    static const unsigned char zero[] = {NEW_FLOAT_EXT, 0, 0, 0, 0, 0, 0, 0, 0};
    static const unsigned char int_zero[] = {ERL_SMALL_INTEGER_EXT, 0};
    static const unsigned char one_point_five[1 + 31] = {ERL_FLOAT_EXT, '1', '.', '5'};
    /* -0.0 and 0.0 are one map key in OTP 25. */
    CANON(minus_zero_d, zero);
    CANON(minus_zero_m0, zero);
    DIFFER(zero, int_zero);
    /* The text form need not carry all twenty digits. */
    SAME(one_point_five, float_d);
    ebuf e = {.i = 0};
    assert_int_equal(ei_encode_double(e.b, &e.i, 1.5), 0);
    assert_same(e.b, e.i, float_m0, sizeof float_m0, buf);
}

/* ---- atoms --------------------------------------------------------------- */

static void test_atoms(void **state)
{
    cn_buf *buf = *state;
    ebuf a = {.i = 0}, b = {.i = 0};
    /* "\xe9" is é in Latin-1. ei converts it to UTF-8; OTP 25 sends ATOM_EXT. */
    static const unsigned char ete_latin1[] = {ERL_ATOM_EXT, 0, 3, 0xE9, 't', 0xE9};
    assert_int_equal(ei_encode_atom_as(a.b, &a.i, "\xe9t\xe9", ERLANG_LATIN1, ERLANG_UTF8), 0);
    assert_same(a.b, a.i, ete_latin1, sizeof ete_latin1, buf);
    assert_int_equal(ei_encode_atom(b.b, &b.i, "abc"), 0);
    assert_same(b.b, b.i, atom_d, sizeof atom_d, buf);

    static const unsigned char small_latin1[] = {ERL_SMALL_ATOM_EXT, 3, 'a', 'b', 'c'};
    static const unsigned char long_utf8[] = {ERL_ATOM_UTF8_EXT, 0, 3, 'a', 'b', 'c'};
    static const unsigned char abd[] = {ERL_SMALL_ATOM_UTF8_EXT, 3, 'a', 'b', 'd'};
    static const unsigned char e_acute_latin1[] = {ERL_SMALL_ATOM_EXT, 1, 0xE9};
    static const unsigned char e_acute_utf8[] = {ERL_ATOM_UTF8_EXT, 0, 2, 0xC3, 0xA9};
    CANON(small_latin1, atom_m2);
    CANON(long_utf8, atom_m2);
    CANON(atom_d, atom_m2);
    DIFFER(small_latin1, abd);
    SAME(e_acute_latin1, e_acute_utf8);

    /* 200 Latin-1 characters take 400 UTF-8 bytes, so the canonical tag is the long one. */
    unsigned char latin1[3 + 200], utf8[3 + 400];
    latin1[0] = ERL_ATOM_EXT;
    latin1[1] = 0;
    latin1[2] = 200;
    memset(latin1 + 3, 0xE9, 200);
    utf8[0] = ERL_ATOM_UTF8_EXT;
    utf8[1] = 400 >> 8;
    utf8[2] = 400 & 0xFF;
    for (int i = 0; i < 200; i++) {
        utf8[3 + 2 * i] = 0xC3;
        utf8[4 + 2 * i] = 0xA9;
    }
    CANON(latin1, utf8);
}

static void test_bad_atoms(void **state)
{
    cn_buf *buf = *state;
    static const unsigned char overlong[] = {ERL_SMALL_ATOM_UTF8_EXT, 2, 0xC1, 0x81};
    static const unsigned char overlong3[] = {ERL_SMALL_ATOM_UTF8_EXT, 3, 0xE0, 0x80, 0x80};
    static const unsigned char surrogate[] = {ERL_SMALL_ATOM_UTF8_EXT, 3, 0xED, 0xA0, 0x80};
    static const unsigned char too_high[] = {ERL_SMALL_ATOM_UTF8_EXT, 4, 0xF4, 0x90, 0x80, 0x80};
    static const unsigned char cut[] = {ERL_SMALL_ATOM_UTF8_EXT, 1, 0xC3};
    static const unsigned char bad_cont[] = {ERL_SMALL_ATOM_UTF8_EXT, 2, 0xC3, 0x41};
    BAD(overlong);
    BAD(overlong3);
    BAD(surrogate);
    BAD(too_high);
    BAD(cut);
    BAD(bad_cont);

    /* At most 255 characters, whatever the encoding. */
    unsigned char latin1[3 + 256], utf8[3 + 256];
    latin1[0] = ERL_ATOM_EXT;
    latin1[1] = 1;
    latin1[2] = 0;
    memset(latin1 + 3, 'a', 256);
    memcpy(utf8, latin1, sizeof utf8);
    utf8[0] = ERL_ATOM_UTF8_EXT;
    BAD(latin1);
    BAD(utf8);
    /* Exactly 255 is fine. */
    latin1[1] = 0;
    latin1[2] = 255;
    canon(latin1, sizeof latin1 - 1, &buf[0]);
}

/* ---- integers ------------------------------------------------------------ */

static void test_integers(void **state)
{
    cn_buf *buf = *state;
    static const unsigned char five_small[] = {ERL_SMALL_INTEGER_EXT, 5};
    static const unsigned char five_int[] = {ERL_INTEGER_EXT, 0, 0, 0, 5};
    static const unsigned char five_big[] = {ERL_SMALL_BIG_EXT, 3, 0, 5, 0, 0};
    static const unsigned char five_large[] = {ERL_LARGE_BIG_EXT, 0, 0, 0, 2, 0, 5, 0};
    CANON(five_int, five_small);
    CANON(five_big, five_small);
    CANON(five_large, five_small);

    static const unsigned char minus_one[] = {ERL_INTEGER_EXT, 0xFF, 0xFF, 0xFF, 0xFF};
    static const unsigned char minus_one_big[] = {ERL_SMALL_BIG_EXT, 1, 1, 1};
    static const unsigned char minus_one_sign2[] = {ERL_SMALL_BIG_EXT, 1, 2, 1};
    static const unsigned char one_big[] = {ERL_SMALL_BIG_EXT, 1, 0, 1};
    CANON(minus_one_big, minus_one);
    CANON(minus_one_sign2, minus_one);
    DIFFER(minus_one_big, one_big);

    static const unsigned char zero[] = {ERL_SMALL_INTEGER_EXT, 0};
    static const unsigned char minus_zero_big[] = {ERL_SMALL_BIG_EXT, 2, 1, 0, 0};
    static const unsigned char empty_big[] = {ERL_SMALL_BIG_EXT, 0, 0};
    CANON(minus_zero_big, zero);
    CANON(empty_big, zero);

    /* The int32 range ends exactly at INTEGER_EXT's limits. */
    static const unsigned char int_min[] = {ERL_INTEGER_EXT, 0x80, 0, 0, 0};
    static const unsigned char int_min_big[] = {ERL_SMALL_BIG_EXT, 4, 1, 0, 0, 0, 0x80};
    static const unsigned char two_31[] = {ERL_SMALL_BIG_EXT, 4, 0, 0, 0, 0, 0x80};
    static const unsigned char two_31_large[] = {ERL_LARGE_BIG_EXT, 0, 0, 0, 5, 0, 0, 0, 0, 0x80, 0};
    static const unsigned char int_max_big[] = {ERL_SMALL_BIG_EXT, 4, 0, 0xFF, 0xFF, 0xFF, 0x7F};
    static const unsigned char int_max[] = {ERL_INTEGER_EXT, 0x7F, 0xFF, 0xFF, 0xFF};
    static const unsigned char below_min[] = {ERL_SMALL_BIG_EXT, 4, 1, 1, 0, 0, 0x80};
    CANON(int_min_big, int_min);
    CANON(two_31_large, two_31);
    CANON(int_max_big, int_max);
    CANON(below_min, below_min);

    ebuf e = {.i = 0};
    static const unsigned char two_40[] = {ERL_LARGE_BIG_EXT, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 0, 0};
    assert_int_equal(ei_encode_longlong(e.b, &e.i, 1LL << 40), 0);
    assert_same(e.b, e.i, two_40, sizeof two_40, buf);
    e.i = 0;
    assert_int_equal(ei_encode_long(e.b, &e.i, 300), 0);
    assert_same(e.b, e.i, int_d, sizeof int_d, buf);
}

/* ---- pids, ports, references --------------------------------------------- */

#define NODE_LATIN1 ERL_ATOM_EXT, 0, 3, 'a', '@', 'b'
#define NODE_UTF8 ERL_SMALL_ATOM_UTF8_EXT, 3, 'a', '@', 'b'

static void test_pids(void **state)
{
    cn_buf *buf = *state;
    static const unsigned char old[] = {ERL_PID_EXT, NODE_LATIN1, 0, 0, 0, 1, 0, 0, 0, 2, 3};
    static const unsigned char new[] = {ERL_NEW_PID_EXT, NODE_UTF8, 0, 0, 0, 1,
                                        0, 0, 0, 2, 0, 0, 0, 3};
    static const unsigned char other_creation[] = {ERL_NEW_PID_EXT, NODE_UTF8, 0, 0, 0, 1,
                                                   0, 0, 0, 2, 0, 0, 0, 4};
    CANON(old, new);
    DIFFER(new, other_creation);

    erlang_pid p = {.node = "a@b", .num = 1, .serial = 2, .creation = 3};
    ebuf e = {.i = 0};
    assert_int_equal(ei_encode_pid(e.b, &e.i, &p), 0);
    assert_same(e.b, e.i, old, sizeof old, buf);
}

static void test_ports(void **state)
{
    cn_buf *buf = *state;
    static const unsigned char old[] = {ERL_PORT_EXT, NODE_LATIN1, 0, 0, 0, 7, 3};
    static const unsigned char new[] = {ERL_NEW_PORT_EXT, NODE_UTF8, 0, 0, 0, 7, 0, 0, 0, 3};
    static const unsigned char v4[] = {ERL_V4_PORT_EXT, NODE_LATIN1, 0, 0, 0, 0,
                                       0, 0, 0, 7, 0, 0, 0, 3};
    static const unsigned char v4_big[] = {ERL_V4_PORT_EXT, NODE_UTF8, 0, 0, 1, 0,
                                           0, 0, 0, 7, 0, 0, 0, 3};
    CANON(old, new);
    CANON(v4, new);
    CANON(v4_big, v4_big); /* an id above 32 bits keeps the V4 form */
    DIFFER(v4_big, new);

    erlang_port p = {.node = "a@b", .id = 7, .creation = 3};
    ebuf e = {.i = 0};
    assert_int_equal(ei_encode_port(e.b, &e.i, &p), 0);
    assert_same(e.b, e.i, new, sizeof new, buf);
}

static void test_references(void **state)
{
    cn_buf *buf = *state;
    static const unsigned char oldest[] = {ERL_REFERENCE_EXT, NODE_LATIN1, 0, 0, 0, 9, 3};
    static const unsigned char one[] = {ERL_NEWER_REFERENCE_EXT, 0, 1, NODE_UTF8,
                                        0, 0, 0, 3, 0, 0, 0, 9};
    static const unsigned char padded[] = {ERL_NEWER_REFERENCE_EXT, 0, 3, NODE_UTF8,
                                           0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0};
    static const unsigned char leading_zero[] = {ERL_NEWER_REFERENCE_EXT, 0, 2, NODE_UTF8,
                                                 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 9};
    CANON(oldest, one);
    /* The BEAM ignores trailing zero words when comparing references. */
    CANON(padded, one);
    DIFFER(leading_zero, one);

    static const unsigned char new3[] = {ERL_NEW_REFERENCE_EXT, 0, 3, NODE_LATIN1, 3,
                                         0, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0, 7};
    static const unsigned char newer5[] = {ERL_NEWER_REFERENCE_EXT, 0, 5, NODE_UTF8,
                                           0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0, 7,
                                           0, 0, 0, 0, 0, 0, 0, 0};
    static const unsigned char newer5_other[] = {ERL_NEWER_REFERENCE_EXT, 0, 5, NODE_UTF8,
                                                 0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0, 7,
                                                 0, 0, 0, 0, 0, 0, 0, 1};
    SAME(new3, newer5);
    DIFFER(new3, newer5_other);
    erlang_ref r = {.node = "a@b", .len = 3, .n = {9, 8, 7}, .creation = 3};
    ebuf e = {.i = 0};
    assert_int_equal(ei_encode_ref(e.b, &e.i, &r), 0);
    assert_same(e.b, e.i, new3, sizeof new3, buf);
}

/* ---- lists --------------------------------------------------------------- */

static void test_lists(void **state)
{
    cn_buf *buf = *state;
    ebuf s = {.i = 0}, l = {.i = 0};
    assert_int_equal(ei_encode_string(s.b, &s.i, "hi"), 0);
    assert_int_equal(ei_encode_list_header(l.b, &l.i, 2), 0);
    assert_int_equal(ei_encode_long(l.b, &l.i, 'h'), 0);
    assert_int_equal(ei_encode_long(l.b, &l.i, 'i'), 0);
    assert_int_equal(ei_encode_empty_list(l.b, &l.i), 0);
    assert_int_equal((unsigned char)s.b[0], ERL_STRING_EXT);
    assert_int_equal((unsigned char)l.b[0], ERL_LIST_EXT);
    assert_same(s.b, s.i, l.b, l.i, buf);

    /* [1 | [2]] is [1, 2]; [1 | "ab"] is [1, $a, $b]; [1 | [2 | 3]] is [1, 2 | 3]. */
    static const unsigned char nested[] = {ERL_LIST_EXT, 0, 0, 0, 1, 'a', 1,
                                           ERL_LIST_EXT, 0, 0, 0, 1, 'a', 2, ERL_NIL_EXT};
    static const unsigned char flat[] = {ERL_STRING_EXT, 0, 2, 1, 2};
    static const unsigned char string_tail[] = {ERL_LIST_EXT, 0, 0, 0, 1, 'a', 1,
                                                ERL_STRING_EXT, 0, 2, 'a', 'b'};
    static const unsigned char string[] = {ERL_STRING_EXT, 0, 3, 1, 'a', 'b'};
    static const unsigned char improper_nested[] = {ERL_LIST_EXT, 0, 0, 0, 1, 'a', 1,
                                                    ERL_LIST_EXT, 0, 0, 0, 1, 'a', 2, 'a', 3};
    static const unsigned char improper[] = {ERL_LIST_EXT, 0, 0, 0, 2, 'a', 1, 'a', 2, 'a', 3};
    CANON(nested, flat);
    CANON(string_tail, string);
    CANON(improper_nested, improper);

    /* A LIST_EXT without elements is its tail. */
    static const unsigned char nil[] = {ERL_NIL_EXT};
    static const unsigned char empty_list[] = {ERL_LIST_EXT, 0, 0, 0, 0, ERL_NIL_EXT};
    static const unsigned char empty_string[] = {ERL_STRING_EXT, 0, 0};
    static const unsigned char empty_then_five[] = {ERL_LIST_EXT, 0, 0, 0, 0, 'a', 5};
    static const unsigned char five[] = {'a', 5};
    CANON(empty_list, nil);
    CANON(empty_string, nil);
    CANON(empty_then_five, five);

    static const unsigned char list_of_nil[] = {ERL_LIST_EXT, 0, 0, 0, 1, ERL_NIL_EXT,
                                                ERL_NIL_EXT};
    static const unsigned char floats[] = {ERL_LIST_EXT, 0, 0, 0, 1, NEW_FLOAT_EXT,
                                           0x40, 0x58, 0x40, 0, 0, 0, 0, 0, ERL_NIL_EXT};
    static const unsigned char a[] = {ERL_STRING_EXT, 0, 1, 97};
    DIFFER(list_of_nil, nil);
    DIFFER(floats, a); /* [97.0] is not "a" */
}

/* Fills b with n one-element LIST_EXT cells, each of the small integer 1, nested as
 * tails, and a final []: the list of n ones written the long way. */
static size_t chain_of_ones(unsigned char *b, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        static const unsigned char cell[] = {ERL_LIST_EXT, 0, 0, 0, 1, 'a', 1};
        memcpy(b + k, cell, sizeof cell);
        k += sizeof cell;
    }
    b[k++] = ERL_NIL_EXT;
    return k;
}

static size_t flat_ones(unsigned char *b, size_t n)
{
    b[0] = ERL_LIST_EXT;
    cn_set_u32(b + 1, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        b[5 + 2 * i] = 'a';
        b[6 + 2 * i] = 1;
    }
    b[5 + 2 * n] = ERL_NIL_EXT;
    return 6 + 2 * n;
}

static void test_long_lists(void **state)
{
    cn_buf *buf = *state;
    const size_t n = 100000;
    unsigned char *chain = malloc(7 * n + 1), *flat = malloc(2 * n + 6);
    assert_non_null(chain);
    assert_non_null(flat);
    /* A chain of tails far deeper than TK_MAX_DEPTH is walked in a loop. */
    size_t chain_len = chain_of_ones(chain, n);
    size_t flat_len = flat_ones(flat, n);
    assert_same(chain, chain_len, flat, flat_len, buf);
    /* Past 65535 elements the canonical form stays LIST_EXT ... */
    assert_int_equal(buf[0].len, flat_len);
    assert_memory_equal(buf[0].data, flat, flat_len);
    /* ... and up to 65535 it is STRING_EXT. */
    canon(flat, flat_ones(flat, 65535), &buf[0]);
    assert_int_equal(buf[0].len, 3 + 65535);
    assert_int_equal((unsigned char)buf[0].data[0], ERL_STRING_EXT);
    free(chain);
    free(flat);
}

/* ---- maps, binaries, tuples, funs ---------------------------------------- */

static void encode_map(ebuf *e, const char *k1, long v1, const char *k2, long v2)
{
    e->i = 0;
    assert_int_equal(ei_encode_map_header(e->b, &e->i, 2), 0);
    assert_int_equal(ei_encode_atom(e->b, &e->i, k1), 0);
    assert_int_equal(ei_encode_long(e->b, &e->i, v1), 0);
    assert_int_equal(ei_encode_atom(e->b, &e->i, k2), 0);
    assert_int_equal(ei_encode_long(e->b, &e->i, v2), 0);
}

static void test_maps(void **state)
{
    cn_buf *buf = *state;
    ebuf ab, ba, swapped;
    encode_map(&ab, "a", 1, "b", 2);
    encode_map(&ba, "b", 2, "a", 1);
    encode_map(&swapped, "a", 2, "b", 1);
    assert_same(ab.b, ab.i, ba.b, ba.i, buf);
    assert_differ(ab.b, ab.i, swapped.b, swapped.i, buf);

    /* Keys 1 and 1.0 are two keys; order does not matter; keys may be maps. */
    static const unsigned char one_and_float[] = {ERL_MAP_EXT, 0, 0, 0, 2, 'a', 1, 'j',
                                                  NEW_FLOAT_EXT, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0, 'a', 2};
    static const unsigned char float_and_one[] = {ERL_MAP_EXT, 0, 0, 0, 2, NEW_FLOAT_EXT,
                                                  0x3F, 0xF0, 0, 0, 0, 0, 0, 0, 'a', 2, 'a', 1, 'j'};
    SAME(one_and_float, float_and_one);
    static const unsigned char map_keys[] = {ERL_MAP_EXT, 0, 0, 0, 2,
                                             ERL_MAP_EXT, 0, 0, 0, 1, 'a', 1, 'a', 2, 'j',
                                             ERL_MAP_EXT, 0, 0, 0, 0, 'j'};
    static const unsigned char map_keys_swapped[] = {ERL_MAP_EXT, 0, 0, 0, 2,
                                                     ERL_MAP_EXT, 0, 0, 0, 0, 'j',
                                                     ERL_MAP_EXT, 0, 0, 0, 1, 'a', 1, 'b', 0, 0, 0, 2,
                                                     'j'};
    SAME(map_keys, map_keys_swapped);

    /* A key twice, even in two encodings, is refused as the BEAM refuses it. */
    static const unsigned char dup[] = {ERL_MAP_EXT, 0, 0, 0, 2, 'a', 1, 'a', 2, 'a', 1, 'a', 3};
    static const unsigned char dup_encodings[] = {ERL_MAP_EXT, 0, 0, 0, 2, 'a', 1, 'a', 2,
                                                  'b', 0, 0, 0, 1, 'a', 3};
    BAD(dup);
    BAD(dup_encodings);
}

static void test_binaries(void **state)
{
    cn_buf *buf = *state;
    static const unsigned char bin[] = {ERL_BINARY_EXT, 0, 0, 0, 2, 1, 2};
    static const unsigned char bits8[] = {ERL_BIT_BINARY_EXT, 0, 0, 0, 2, 8, 1, 2};
    static const unsigned char empty[] = {ERL_BINARY_EXT, 0, 0, 0, 0};
    static const unsigned char empty_bits[] = {ERL_BIT_BINARY_EXT, 0, 0, 0, 0, 0};
    static const unsigned char three[] = {ERL_BIT_BINARY_EXT, 0, 0, 0, 1, 3, 0x20};
    static const unsigned char three_junk[] = {ERL_BIT_BINARY_EXT, 0, 0, 0, 1, 3, 0x3F};
    static const unsigned char four[] = {ERL_BIT_BINARY_EXT, 0, 0, 0, 1, 4, 0x10};
    CANON(bits8, bin);
    CANON(empty_bits, empty);
    /* Bits past the end of a bit string are not part of it. */
    CANON(three_junk, three);
    DIFFER(three, four);

    static const unsigned char eleven[] = {ERL_BIT_BINARY_EXT, 0, 0, 0, 2, 3, 0xAB, 0xFF};
    static const char src[] = {(char)0xAB, (char)0xE0};
    ebuf e = {.i = 0};
    assert_int_equal(ei_encode_bitstring(e.b, &e.i, src, 0, 11), 0);
    assert_same(e.b, e.i, eleven, sizeof eleven, buf);
}

static void test_tuples_and_funs(void **state)
{
    cn_buf *buf = *state;
    static const unsigned char small[] = {ERL_SMALL_TUPLE_EXT, 2, 'a', 1, 'a', 2};
    static const unsigned char large[] = {ERL_LARGE_TUPLE_EXT, 0, 0, 0, 2, 'a', 1, 'a', 2};
    CANON(large, small);

    unsigned char big[5 + 300 * 2];
    big[0] = ERL_LARGE_TUPLE_EXT;
    cn_set_u32(big + 1, 300);
    for (int i = 0; i < 300; i++) {
        big[5 + 2 * i] = 'a';
        big[6 + 2 * i] = (unsigned char)i;
    }
    CANON(big, big);

    /* EXPORT_EXT's arity may come as INTEGER_EXT. */
    static const unsigned char export_int[] = {ERL_EXPORT_EXT, ERL_ATOM_EXT, 0, 6, 'e', 'r', 'l',
                                               'a', 'n', 'g', ERL_SMALL_ATOM_EXT, 3, 'a', 'b', 's',
                                               ERL_INTEGER_EXT, 0, 0, 0, 1};
    CANON(export_int, export_m2);

    /* The closure's Size field follows the shorter UTF-8 atoms. */
    CANON(closure_d, closure_m2);
    unsigned char wrong_size[sizeof closure_m2];
    memcpy(wrong_size, closure_m2, sizeof wrong_size);
    wrong_size[4]++;
    BAD(wrong_size);
}

static void test_distinct_terms(void **state)
{
    cn_buf *buf = *state;
    static const unsigned char t_int[] = {'a', 1};
    static const unsigned char t_float[] = {NEW_FLOAT_EXT, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0};
    static const unsigned char t_atom[] = {ERL_SMALL_ATOM_UTF8_EXT, 3, 'a', 'b', 'c'};
    static const unsigned char t_bin[] = {ERL_BINARY_EXT, 0, 0, 0, 3, 'a', 'b', 'c'};
    static const unsigned char t_str[] = {ERL_STRING_EXT, 0, 3, 'a', 'b', 'c'};
    static const unsigned char t_tuple[] = {ERL_SMALL_TUPLE_EXT, 2, 'a', 1, 'a', 2};
    static const unsigned char t_list[] = {ERL_STRING_EXT, 0, 2, 1, 2};
    static const unsigned char t_nil[] = {ERL_NIL_EXT};
    static const unsigned char t_ebin[] = {ERL_BINARY_EXT, 0, 0, 0, 0};
    static const unsigned char t_etuple[] = {ERL_SMALL_TUPLE_EXT, 0};
    static const unsigned char t_emap[] = {ERL_MAP_EXT, 0, 0, 0, 0};
    static const struct {
        const unsigned char *b;
        size_t n;
    } terms[] = {
        {t_int, sizeof t_int},       {t_float, sizeof t_float}, {t_atom, sizeof t_atom},
        {t_bin, sizeof t_bin},       {t_str, sizeof t_str},     {t_tuple, sizeof t_tuple},
        {t_list, sizeof t_list},     {t_nil, sizeof t_nil},     {t_ebin, sizeof t_ebin},
        {t_etuple, sizeof t_etuple}, {t_emap, sizeof t_emap},
    };
    size_t n = sizeof terms / sizeof terms[0];
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            assert_differ(terms[i].b, terms[i].n, terms[j].b, terms[j].n, buf);
}

/* ---- malformed input ------------------------------------------------------ */

static void test_malformed(void **state)
{
    cn_buf *buf = *state;
    static const unsigned char unknown[] = {0};
    static const unsigned char version[] = {131, 'a', 1};
    static const unsigned char cache_ref[] = {'R', 0};
    static const unsigned char local[] = {'y', 'a', 1};
    static const unsigned char compressed[] = {'P', 0, 0, 0, 1, 0};
    static const unsigned char old_fun[] = {ERL_FUN_EXT, 0, 0, 0, 0, ERL_PID_EXT, NODE_LATIN1,
                                            0, 0, 0, 1, 0, 0, 0, 2, 3, ERL_SMALL_ATOM_EXT, 1, 'm',
                                            'a', 1, 'a', 2};
    static const unsigned char nan[] = {NEW_FLOAT_EXT, 0x7F, 0xF8, 0, 0, 0, 0, 0, 0};
    static const unsigned char inf[] = {NEW_FLOAT_EXT, 0xFF, 0xF0, 0, 0, 0, 0, 0, 0};
    BAD(unknown);
    BAD(version);
    BAD(cache_ref);
    BAD(local);
    BAD(compressed);
    BAD(old_fun);
    BAD(nan);
    BAD(inf);
    assert_bad(NULL, 0, buf);

    /* The BEAM's text-float parser wants digits, a point and digits. */
    static const char *const texts[] = {"15", ".5", "1.", "1.5x", " 1.5", "inf", "nan",
                                        "0x1p3", "1.5e", "1.0e400", "-"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        unsigned char f[32] = {ERL_FLOAT_EXT};
        memcpy(f + 1, texts[i], strlen(texts[i]));
        BAD(f);
    }
    unsigned char junk_after_nul[32] = {ERL_FLOAT_EXT, '1', '.', '5'};
    junk_after_nul[10] = 'x';
    BAD(junk_after_nul);

    static const unsigned char bits_empty3[] = {ERL_BIT_BINARY_EXT, 0, 0, 0, 0, 3};
    static const unsigned char bits_zero[] = {ERL_BIT_BINARY_EXT, 0, 0, 0, 1, 0, 5};
    static const unsigned char bits_nine[] = {ERL_BIT_BINARY_EXT, 0, 0, 0, 1, 9, 5};
    static const unsigned char ref6[] = {ERL_NEWER_REFERENCE_EXT, 0, 6, NODE_UTF8, 0, 0, 0, 3,
                                         0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1,
                                         0, 0, 0, 1, 0, 0, 0, 1};
    static const unsigned char huge_map[] = {ERL_MAP_EXT, 0xFF, 0xFF, 0xFF, 0xFF, 'a', 1};
    static const unsigned char huge_tuple[] = {ERL_LARGE_TUPLE_EXT, 0xFF, 0xFF, 0xFF, 0xFF, 'j'};
    static const unsigned char huge_list[] = {ERL_LIST_EXT, 0xFF, 0xFF, 0xFF, 0xFF, 'j'};
    static const unsigned char huge_bin[] = {ERL_BINARY_EXT, 0xFF, 0xFF, 0xFF, 0xFF, 0};
    static const unsigned char export_nil[] = {ERL_EXPORT_EXT, NODE_UTF8, NODE_UTF8, 'j'};
    static const unsigned char pid_int_node[] = {ERL_NEW_PID_EXT, 'a', 1, 0, 0, 0, 1, 0, 0, 0,
                                                 2, 0, 0, 0, 3};
    static const unsigned char trailing_tail_cut[] = {ERL_LIST_EXT, 0, 0, 0, 1, 'a', 1};
    BAD(bits_empty3);
    BAD(bits_zero);
    BAD(bits_nine);
    BAD(ref6);
    BAD(huge_map);
    BAD(huge_tuple);
    BAD(huge_list);
    BAD(huge_bin);
    BAD(export_nil);
    BAD(pid_int_node);
    BAD(trailing_tail_cut);
}

/* n nested one-element tuples around the integer 0. */
static unsigned char *nested_tuples(size_t n, size_t *len)
{
    unsigned char *b = malloc(2 * n + 2);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        b[2 * i] = ERL_SMALL_TUPLE_EXT;
        b[2 * i + 1] = 1;
    }
    b[2 * n] = 'a';
    b[2 * n + 1] = 0;
    *len = 2 * n + 2;
    return b;
}

/* n nested one-element lists around the integer 0: [[...[0]...]]. */
static unsigned char *nested_lists(size_t n, size_t *len)
{
    unsigned char *b = malloc(6 * n + 2);
    assert_non_null(b);
    static const unsigned char cell[] = {ERL_LIST_EXT, 0, 0, 0, 1};
    for (size_t i = 0; i < n; i++)
        memcpy(b + 5 * i, cell, sizeof cell);
    b[5 * n] = 'a';
    b[5 * n + 1] = 0;
    memset(b + 5 * n + 2, ERL_NIL_EXT, n);
    *len = 6 * n + 2;
    return b;
}

static void test_nesting_is_bounded(void **state)
{
    cn_buf *buf = *state;
    unsigned char *(*const makers[])(size_t, size_t *) = {nested_tuples, nested_lists};
    for (size_t m = 0; m < 2; m++) {
        size_t len;
        unsigned char *b = makers[m](TK_MAX_DEPTH, &len);
        canon(b, len, &buf[0]);
        free(b);
        b = makers[m](TK_MAX_DEPTH + 1, &len);
        assert_bad(b, len, buf);
        free(b);
        /* Absurd nesting is refused early instead of exhausting the stack. */
        b = makers[m](1000000, &len);
        assert_bad(b, len, buf);
        free(b);
    }
}

/* ---- the index ------------------------------------------------------------ */

static void test_index_and_appending(void **state)
{
    cn_buf *buf = *state;
    ebuf e = {.i = 0};
    assert_int_equal(ei_encode_tuple_header(e.b, &e.i, 2), 0);
    assert_int_equal(ei_encode_atom(e.b, &e.i, "check_rate"), 0);
    int start = e.i;
    assert_int_equal(ei_encode_binary(e.b, &e.i, "client-42", 9), 0);
    int end = e.i;
    assert_int_equal(ei_encode_atom(e.b, &e.i, "after"), 0);

    /* Canonical bytes are appended after what the buffer holds. */
    cn_buf_reset(&buf[0]);
    assert_int_equal(cn_buf_append(&buf[0], "xy", 2), 0);
    int index = start;
    assert_int_equal(tk_canonical(e.b, &index, &buf[0]), 0);
    assert_int_equal(index, end);
    assert_int_equal(buf[0].len, 2 + (size_t)(end - start));
    assert_memory_equal(buf[0].data, "xy", 2);
    assert_memory_equal(buf[0].data + 2, e.b + start, (size_t)(end - start));

    index = start;
    assert_int_equal(tk_canonical_n(e.b, (size_t)e.i, &index, &buf[1]), 0);
    assert_int_equal(index, end);
    index = start;
    assert_int_equal(tk_canonical_n(e.b, (size_t)end - 1, &index, &buf[1]), CN_EDECODE);
    assert_int_equal(index, start);
    index = -1;
    assert_int_equal(tk_canonical_n(e.b, (size_t)e.i, &index, &buf[1]), CN_EDECODE);
    index = e.i + 1;
    assert_int_equal(tk_canonical_n(e.b, (size_t)e.i, &index, &buf[1]), CN_EDECODE);
    assert_int_equal(index, e.i + 1);
}

/* ---- issue 9: hostile client ids ----------------------------------------- */

/* :"日本" works as a client id: the same in both UTF-8 tags, unlike other atoms. */
static void test_utf8_atom_ids(void **state)
{
    cn_buf *buf = *state;
    static const unsigned char nihon[] = {ERL_SMALL_ATOM_UTF8_EXT, 6, 0xE6, 0x97, 0xA5, 0xE6, 0x9C, 0xAC};
    static const unsigned char nihon_long[] = {ERL_ATOM_UTF8_EXT, 0, 6, 0xE6, 0x97, 0xA5, 0xE6, 0x9C, 0xAC};
    static const unsigned char hon_nichi[] = {ERL_SMALL_ATOM_UTF8_EXT, 6, 0xE6, 0x9C, 0xAC, 0xE6, 0x97, 0xA5};
    static const unsigned char nichi[] = {ERL_SMALL_ATOM_UTF8_EXT, 3, 0xE6, 0x97, 0xA5};
    static const unsigned char bin[] = {ERL_BINARY_EXT, 0, 0, 0, 6, 0xE6, 0x97, 0xA5, 0xE6, 0x9C, 0xAC};
    CANON(nihon, nihon);
    CANON(nihon_long, nihon);
    DIFFER(nihon, hon_nichi);
    DIFFER(nihon, nichi);
    DIFFER(nihon, bin);

    /* 255 characters of four bytes each, the longest atom, and one character more. */
    static unsigned char longest[3 + 256 * 4];
    longest[0] = ERL_ATOM_UTF8_EXT;
    for (size_t i = 0; i < 256; i++)
        memcpy(longest + 3 + 4 * i, "\xF0\x90\x80\x80", 4);
    longest[0] = ERL_ATOM_UTF8_EXT;
    longest[1] = 1020 >> 8;
    longest[2] = 1020 & 0xFF;
    assert_canon(longest, 3 + 1020, longest, 3 + 1020, buf);
    longest[1] = 1024 >> 8;
    longest[2] = 1024 & 0xFF;
    assert_bad(longest, 3 + 1024, buf);
}

/*
 * The remote crash, at the canonicaliser: a fun whose Size is small while its
 * inner fields claim more. The bytes sit in an allocation of exactly their size,
 * so a read past the fun is a heap over-read that ASan reports (make unit-san).
 */
static void test_lying_fun_never_read_past(void **state)
{
    cn_buf *buf = *state;
    /* closure_m2 with one byte of the module atom's length raised: it now claims
     * 200 bytes, past Size and past the buffer. */
    unsigned char *b = malloc(sizeof closure_m2);
    assert_non_null(b);
    memcpy(b, closure_m2, sizeof closure_m2);
    assert_int_equal(b[30], ERL_SMALL_ATOM_UTF8_EXT);
    b[31] = 200;
    int index = 0;
    assert_int_equal(tk_canonical((const char *)b, &index, &buf[0]), CN_EDECODE);
    assert_int_equal(index, 0);
    assert_int_equal(tk_canonical_n((const char *)b, sizeof closure_m2, &index, &buf[0]), CN_EDECODE);
    free(b);

    /* NumFree raised to 2 with a Size that stops after the one free variable, in
     * a buffer that goes on: the second free variable is not read from beyond Size. */
    unsigned char longer[sizeof closure_m2 + 8];
    memcpy(longer, closure_m2, sizeof closure_m2);
    memset(longer + sizeof closure_m2, ERL_NIL_EXT, 8);
    longer[29] = 2;
    assert_bad(longer, sizeof longer, buf);
    index = 0;
    assert_int_equal(tk_canonical((const char *)longer, &index, &buf[0]), CN_EDECODE);
}

/*
 * depth maps nested through their keys around a binary of bin_len bytes:
 * %{%{...%{<<bin>> => 1}... => 1} => 1}. With pairs, each map has a second pair
 * [] => 1, written before the nested key (small_first: the canonical order, as
 * [] sorts before a map) or after it (the order that must be rearranged at every level).
 */
static unsigned char *nested_maps(size_t depth, size_t bin_len, int pairs, int small_first, size_t *len)
{
    static const unsigned char small_pair[] = {ERL_NIL_EXT, 'a', 1};
    size_t level = 5 + 2 + (pairs ? sizeof small_pair : 0);
    unsigned char *b = malloc(depth * level + 5 + bin_len);
    assert_non_null(b);
    size_t n = 0;
    for (size_t i = 0; i < depth; i++) {
        b[n++] = ERL_MAP_EXT;
        cn_set_u32(b + n, pairs ? 2 : 1);
        n += 4;
        if (pairs && small_first) {
            memcpy(b + n, small_pair, sizeof small_pair);
            n += sizeof small_pair;
        }
    }
    b[n++] = ERL_BINARY_EXT;
    cn_set_u32(b + n, (uint32_t)bin_len);
    n += 4;
    memset(b + n, 'x', bin_len);
    n += bin_len;
    for (size_t i = 0; i < depth; i++) {
        b[n++] = 'a';
        b[n++] = 1;
        if (pairs && !small_first) {
            memcpy(b + n, small_pair, sizeof small_pair);
            n += sizeof small_pair;
        }
    }
    *len = n;
    return b;
}

/* Canonicalises b[0, len) and returns the work it reported. */
static uint64_t work_of(const unsigned char *b, size_t len, cn_buf *out)
{
    int index = 0;
    uint64_t work = 0;
    cn_buf_reset(out);
    assert_int_equal(tk_canonical_measured((const char *)b, len, &index, out, &work), 0);
    assert_int_equal(index, (int)len);
    return work;
}

/*
 * The stall: every level of nested maps used to sort and copy the whole inner key
 * again, so the cost was depth x size (25 MB of nested one-pair maps held every
 * caller for 44 s). Now each byte is written once and, where a map must be
 * rearranged, copied once more at the end: the work stays within a small multiple
 * of the size however deep the maps nest.
 */
static void test_deep_maps_cost_linear_work(void **state)
{
    cn_buf *buf = *state;
    size_t len;
    unsigned char *b = nested_maps(9000, 4096, 0, 0, &len);
    uint64_t work = work_of(b, len, &buf[0]);
    /* Already canonical: the output is the input. */
    assert_int_equal(buf[0].len, len);
    assert_memory_equal(buf[0].data, b, len);
    assert_true(work <= 2 * (uint64_t)len);
    free(b);

    /* Two pairs a level, the nested key first: rearranged at each of 3000 levels. */
    size_t sorted_len;
    unsigned char *sorted = nested_maps(3000, 4096, 1, 1, &sorted_len);
    b = nested_maps(3000, 4096, 1, 0, &len);
    work = work_of(b, len, &buf[0]);
    assert_int_equal(buf[0].len, sorted_len);
    assert_memory_equal(buf[0].data, sorted, sorted_len);
    assert_true(work <= 4 * (uint64_t)len);
    free(b);
    free(sorted);
}

/* Many keys with a long common prefix: the sort's comparisons read the prefix,
 * O(n log m) for m keys making n bytes, and no more. */
static void test_similar_keys_cost_n_log_n(void **state)
{
    cn_buf *buf = *state;
    enum { KEYS = 256, KEY_LEN = 256 };
    size_t len = 5 + (size_t)KEYS * (5 + KEY_LEN + 2);
    unsigned char *b = malloc(len), *p = b;
    assert_non_null(b);
    *p++ = ERL_MAP_EXT;
    cn_set_u32(p, KEYS);
    p += 4;
    for (int k = KEYS - 1; k >= 0; k--) {
        *p++ = ERL_BINARY_EXT;
        cn_set_u32(p, KEY_LEN);
        p += 4;
        memset(p, 'k', KEY_LEN - 1);
        p[KEY_LEN - 1] = (unsigned char)k;
        p += KEY_LEN;
        *p++ = 'a';
        *p++ = (unsigned char)k;
    }
    uint64_t work = work_of(b, len, &buf[0]);
    /* log2(KEYS) = 8 merge passes, each reading every key at most about once. */
    assert_true(work <= 2 * 8 * (uint64_t)len);
    /* In order: the first key ends in 0, the last in 255. */
    assert_int_equal((unsigned char)buf[0].data[5 + 5 + KEY_LEN - 1], 0);
    assert_int_equal((unsigned char)buf[0].data[len - 3], KEYS - 1);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_otp_encodings_agree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_canonical_is_idempotent_and_valid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_vectors_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_floats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atoms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_atoms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_integers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ports, setup, teardown),
        cmocka_unit_test_setup_teardown(test_references, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_lists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_maps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binaries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tuples_and_funs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_distinct_terms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nesting_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_and_appending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_utf8_atom_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lying_fun_never_read_past, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deep_maps_cost_linear_work, setup, teardown),
        cmocka_unit_test_setup_teardown(test_similar_keys_cost_n_log_n, setup, teardown),
    };
    ei_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}

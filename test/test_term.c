/* Unit tests of cnode/term.h: the bounds-checked term walker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <ei.h>

#include "cnode/buf.h"
#include "cnode/error.h"
#include "cnode/term.h"
#include "cnode/utf8.h"

/* A term rich in every kind of field: tuples, lists, maps, pids, refs, bigs, binaries. */
static void build_rich(ei_x_buff *x)
{
    ei_x_new_with_version(x);
    ei_x_encode_tuple_header(x, 6);
    ei_x_encode_atom(x, "$gen_call");
    erlang_pid pid = {"a@127.0.0.1", 42, 0, 1234567};
    ei_x_encode_pid(x, &pid);
    erlang_ref ref = {"a@127.0.0.1", 3, {1, 2, 3, 0, 0}, 99};
    ei_x_encode_ref(x, &ref);
    ei_x_encode_list_header(x, 3);
    ei_x_encode_long(x, 7);
    ei_x_encode_longlong(x, 1LL << 40);
    ei_x_encode_double(x, 1.5);
    ei_x_encode_empty_list(x);
    ei_x_encode_map_header(x, 1);
    ei_x_encode_binary(x, "key", 3);
    ei_x_encode_string(x, "value");
    ei_x_encode_atom(x, "end");
}

static void whole_term_is_accepted(void **state)
{
    (void)state;
    ei_x_buff x;
    build_rich(&x);
    size_t idx = 0;
    assert_int_equal(cn_term_skip_versioned(x.buff, (size_t)x.index, &idx), 0);
    assert_int_equal(idx, (size_t)x.index);
    ei_x_free(&x);
}

static void every_truncation_is_refused(void **state)
{
    (void)state;
    ei_x_buff x;
    build_rich(&x);
    for (int len = 0; len < x.index; len++) {
        size_t idx = 0;
        assert_int_equal(cn_term_skip_versioned(x.buff, (size_t)len, &idx), CN_EDECODE);
        assert_int_equal(idx, 0);
    }
    ei_x_free(&x);
}

static void walk_agrees_with_ei_skip(void **state)
{
    (void)state;
    ei_x_buff x;
    build_rich(&x);
    int ei_idx = 1;
    assert_int_equal(ei_skip_term(x.buff, &ei_idx), 0);
    size_t idx = 1;
    assert_int_equal(cn_term_skip(x.buff, (size_t)x.index, &idx), 0);
    assert_int_equal(idx, (size_t)ei_idx);
    ei_x_free(&x);
}

static void lying_lengths_are_refused(void **state)
{
    (void)state;
    /* A binary that claims 4 GiB. */
    const char bin[] = {(char)131, 109, (char)0xff, (char)0xff, (char)0xff, (char)0xff, 'a'};
    size_t idx = 0;
    assert_int_equal(cn_term_skip_versioned(bin, sizeof bin, &idx), CN_EDECODE);
    /* A list that claims a billion elements in a few bytes. */
    const char list[] = {(char)131, 108, 0x40, 0, 0, 0, 106, 106};
    idx = 0;
    assert_int_equal(cn_term_skip_versioned(list, sizeof list, &idx), CN_EDECODE);
    /* A map that claims more pairs than bytes. */
    const char map[] = {(char)131, 116, 0, 0, 0, 9, 97, 1, 97, 2};
    idx = 0;
    assert_int_equal(cn_term_skip_versioned(map, sizeof map, &idx), CN_EDECODE);
}

static void unknown_and_cache_tags_are_refused(void **state)
{
    (void)state;
    const char cache_ref[] = {(char)131, 82, 0};
    const char garbage[] = {(char)131, 1, 2, 3};
    const char no_version[] = {97, 1};
    size_t idx = 0;
    assert_int_equal(cn_term_skip_versioned(cache_ref, sizeof cache_ref, &idx), CN_EDECODE);
    idx = 0;
    assert_int_equal(cn_term_skip_versioned(garbage, sizeof garbage, &idx), CN_EDECODE);
    idx = 0;
    assert_int_equal(cn_term_skip_versioned(no_version, sizeof no_version, &idx), CN_EDECODE);
}

static void pid_with_non_atom_node_is_refused(void **state)
{
    (void)state;
    /* NEW_PID_EXT whose node is a small integer. */
    const char pid[] = {(char)131, 88, 97, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1};
    size_t idx = 0;
    assert_int_equal(cn_term_skip_versioned(pid, sizeof pid, &idx), CN_EDECODE);
}

static void deep_nesting_costs_no_stack(void **state)
{
    (void)state;
    /* 100,000 nested one-element tuples around an atom: fine, and no recursion. */
    enum { DEPTH = 100000 };
    static char buf[1 + 2 * DEPTH + 3];
    size_t n = 0;
    buf[n++] = (char)131;
    for (int i = 0; i < DEPTH; i++) {
        buf[n++] = 104;
        buf[n++] = 1;
    }
    buf[n++] = 119;
    buf[n++] = 1;
    buf[n++] = 'x';
    size_t idx = 0;
    assert_int_equal(cn_term_skip_versioned(buf, n, &idx), 0);
    assert_int_equal(idx, n);
    idx = 0;
    assert_int_equal(cn_term_skip_versioned(buf, n - 1, &idx), CN_EDECODE);
}

static void two_terms_back_to_back(void **state)
{
    (void)state;
    /* A control tuple then a message, as in a frame. */
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_long(&x, 2);
    ei_x_encode_atom(&x, "");
    ei_x_encode_version(&x);
    ei_x_encode_atom(&x, "hello");
    size_t idx = 0;
    assert_int_equal(cn_term_skip_versioned(x.buff, (size_t)x.index, &idx), 0);
    assert_true(idx < (size_t)x.index);
    assert_int_equal(cn_term_skip_versioned(x.buff, (size_t)x.index, &idx), 0);
    assert_int_equal(idx, (size_t)x.index);
    ei_x_free(&x);
}

/* ---- funs and atoms (issue 9: hostile peers) ---- */

/* Offsets inside the NEW_FUN_EXT that build_fun makes. */
enum { FUN_SIZE_AT = 1, FUN_NUM_FREE_LOW = 29, FUN_MODULE_LEN_AT = 31, FUN_FREE_AT = 56 };

/*
 * Writes a NEW_FUN_EXT (no version byte) to b: module 'm', OldIndex 0, OldUniq 5,
 * a pid on node 'n', and one free variable, the `inner` bytes (a whole term) or,
 * when inner is NULL, the binary "xy". Returns its length.
 */
static size_t build_fun(unsigned char *b, const unsigned char *inner, size_t inner_len)
{
    static const unsigned char xy[] = {109, 0, 0, 0, 2, 'x', 'y'};
    size_t i = 0;
    b[i++] = 112;
    i += 4;                             /* Size, patched below */
    b[i++] = 1;                         /* Arity */
    memset(b + i, 0xAB, 16);            /* Uniq */
    i += 16;
    memset(b + i, 0, 4);                /* Index */
    i += 4;
    cn_set_u32(b + i, 1);               /* NumFree */
    i += 4;
    const unsigned char fields[] = {119, 1, 'm', 97, 0, 98, 0, 0, 0, 5,
                                    88, 119, 1, 'n', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7};
    memcpy(b + i, fields, sizeof fields);
    i += sizeof fields;
    if (inner == NULL) {
        inner = xy;
        inner_len = sizeof xy;
    }
    memcpy(b + i, inner, inner_len);
    i += inner_len;
    cn_set_u32(b + FUN_SIZE_AT, (uint32_t)(i - FUN_SIZE_AT));
    return i;
}

/* Walks b[0, len) as one unversioned term: 0 when it is exactly one term. */
static int walk_exact(const unsigned char *b, size_t len)
{
    size_t idx = 0;
    int rc = cn_term_skip((const char *)b, len, &idx);
    if (rc == 0 && idx != len)
        return -1;
    return rc;
}

static void honest_fun_is_accepted(void **state)
{
    (void)state;
    unsigned char b[128];
    size_t n = build_fun(b, NULL, 0);
    assert_int_equal(b[FUN_NUM_FREE_LOW], 1);
    assert_int_equal(b[FUN_MODULE_LEN_AT], 1);
    assert_int_equal(b[FUN_FREE_AT], 109);
    assert_int_equal(walk_exact(b, n), 0);
    /* Every truncation is refused. */
    for (size_t len = 0; len < n; len++) {
        size_t idx = 0;
        assert_int_equal(cn_term_skip((const char *)b, len, &idx), CN_EDECODE);
    }
}

/*
 * The remote crash: a fun whose Size is honest about the frame but whose inner
 * fields claim more than Size holds. The walker used to check the Size field only,
 * and the rate limiter's canonicaliser then decoded the inner fields with no end.
 * Each lie sits in a buffer with plenty of bytes after the fun, so only a walker
 * that checks the fields against Size can refuse it.
 */
static void fun_lying_inside_its_size_is_refused(void **state)
{
    (void)state;
    unsigned char b[512];
    size_t n = build_fun(b, NULL, 0);
    memset(b + n, 106, sizeof b - n);   /* nils: parseable filler after the fun */
    const struct {
        size_t at;
        unsigned char value;
    } lies[] = {
        {FUN_MODULE_LEN_AT, 200},       /* the module atom runs past Size */
        {FUN_NUM_FREE_LOW, 3},           /* more free variables than Size holds */
        {FUN_NUM_FREE_LOW, 0},           /* fewer: Size holds bytes nobody reads */
        {FUN_FREE_AT + 4, 100},         /* the free binary runs past Size */
        {FUN_MODULE_LEN_AT - 1, 97},    /* the module is not an atom */
        {FUN_MODULE_LEN_AT + 2, 109},   /* OldIndex is not an integer */
        {FUN_MODULE_LEN_AT + 9, 97},    /* the pid is not a pid */
        {FUN_SIZE_AT + 3, 20},          /* Size shorter than the fixed fields */
    };
    for (size_t k = 0; k < sizeof lies / sizeof lies[0]; k++) {
        unsigned char bad[512];
        memcpy(bad, b, sizeof bad);
        bad[lies[k].at] = lies[k].value;
        size_t idx = 0;
        assert_int_equal(cn_term_skip((const char *)bad, sizeof bad, &idx), CN_EDECODE);
        assert_int_equal(idx, 0);
    }
    /* Size one byte longer or shorter than the fields. */
    for (int d = -1; d <= 1; d += 2) {
        unsigned char bad[512];
        memcpy(bad, b, sizeof bad);
        cn_set_u32(bad + FUN_SIZE_AT, (uint32_t)((int)(n - FUN_SIZE_AT) + d));
        size_t idx = 0;
        assert_int_equal(cn_term_skip((const char *)bad, sizeof bad, &idx), CN_EDECODE);
    }
}

/* Funs in free variables are walked by recursion, so their nesting is bounded. */
static void nested_funs_are_bounded(void **state)
{
    (void)state;
    enum { LIMIT = 64, STEP = 56 };
    static unsigned char a[(LIMIT + 2) * STEP + 16], b[(LIMIT + 2) * STEP + 16];
    size_t n = build_fun(a, NULL, 0);
    for (int depth = 2; depth <= LIMIT + 1; depth++) {
        n = build_fun(b, a, n);
        memcpy(a, b, n);
        assert_int_equal(walk_exact(a, n), depth <= LIMIT ? 0 : CN_EDECODE);
    }
}

/* A UTF-8 atom must be well-formed UTF-8, as the BEAM requires; ei could not encode it back. */
static void utf8_atoms_must_be_well_formed(void **state)
{
    (void)state;
    static const struct {
        unsigned char bytes[4];
        size_t n;
        int ok;
    } cases[] = {
        {{0xC3, 0xA9}, 2, 1},               /* é */
        {{0xF0, 0x9F, 0x98, 0x80}, 4, 1},   /* U+1F600 */
        {{0xEF, 0xBF, 0xBF}, 3, 1},         /* U+FFFF */
        {{0xD2, 0xCF}, 2, 0},               /* no continuation byte */
        {{0xC3}, 1, 0},                     /* cut short */
        {{0xC0, 0xAF}, 2, 0},               /* overlong '/' */
        {{0xE0, 0x80, 0xAF}, 3, 0},         /* overlong */
        {{0xED, 0xA0, 0x80}, 3, 0},         /* a surrogate */
        {{0xF4, 0x90, 0x80, 0x80}, 4, 0},   /* past U+10FFFF */
        {{0x80}, 1, 0},                     /* a lone continuation byte */
        {{0xFF}, 1, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        unsigned char small[2 + 4] = {119, (unsigned char)cases[k].n};
        unsigned char big[3 + 4] = {118, 0, (unsigned char)cases[k].n};
        memcpy(small + 2, cases[k].bytes, cases[k].n);
        memcpy(big + 3, cases[k].bytes, cases[k].n);
        int want = cases[k].ok ? 0 : CN_EDECODE;
        assert_int_equal(walk_exact(small, 2 + cases[k].n), want);
        assert_int_equal(walk_exact(big, 3 + cases[k].n), want);
    }
    /* Latin-1 atoms take any byte. */
    static const unsigned char latin1[] = {115, 2, 0xD2, 0xCF};
    assert_int_equal(walk_exact(latin1, sizeof latin1), 0);
}

/* An ATOM_UTF8_EXT of `chars` copies of the UTF-8 character ch (n bytes) in b; returns its size. */
static size_t utf8_atom(unsigned char *b, const char *ch, size_t n, size_t chars)
{
    size_t len = n * chars;
    b[0] = 118;
    b[1] = (unsigned char)(len >> 8);
    b[2] = (unsigned char)len;
    for (size_t k = 0; k < chars; k++)
        memcpy(b + 3 + k * n, ch, n);
    return 3 + len;
}

static void utf8_atoms_up_to_255_characters(void **state)
{
    (void)state;
    static unsigned char b[3 + 4 * 256];
    /* :"日本" as SMALL_ATOM_UTF8_EXT and as ATOM_UTF8_EXT. */
    static const unsigned char nihon[] = {119, 6, 0xE6, 0x97, 0xA5, 0xE6, 0x9C, 0xAC};
    static const unsigned char nihon_long[] = {118, 0, 6, 0xE6, 0x97, 0xA5, 0xE6, 0x9C, 0xAC};
    assert_int_equal(walk_exact(nihon, sizeof nihon), 0);
    assert_int_equal(walk_exact(nihon_long, sizeof nihon_long), 0);
    /* 255 four-byte characters: 1020 bytes, the longest atom there is; one more is too many. */
    assert_int_equal(walk_exact(b, utf8_atom(b, "\xF0\x9F\x98\x80", 4, 255)), 0);
    assert_int_equal(walk_exact(b, utf8_atom(b, "\xF0\x9F\x98\x80", 4, 256)), CN_EDECODE);
    /* Characters are counted, not bytes: 256 ASCII letters are one too many. */
    assert_int_equal(walk_exact(b, utf8_atom(b, "a", 1, 255)), 0);
    assert_int_equal(walk_exact(b, utf8_atom(b, "a", 1, 256)), CN_EDECODE);
    /* Latin-1 atoms have one byte a character. */
    b[0] = 100;
    for (size_t len = 255; len <= 256; len++) {
        b[1] = (unsigned char)(len >> 8);
        b[2] = (unsigned char)len;
        memset(b + 3, 0xE9, len);
        assert_int_equal(walk_exact(b, 3 + len), len <= 255 ? 0 : CN_EDECODE);
    }
}

/* A UTF-8 atom must be UTF-8, as the BEAM requires of every atom it decodes. */
static void invalid_utf8_atoms_are_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\xE9",                /* a Latin-1 byte */
        "\xC3",                /* a sequence cut short */
        "\x80",                /* a lone continuation byte */
        "\xC0\x80",            /* an overlong NUL */
        "\xE0\x80\xAF",        /* an overlong '/' */
        "\xED\xA0\x80",        /* a UTF-16 surrogate */
        "\xF4\x90\x80\x80",    /* past U+10FFFF */
        "\xFF",
    };
    unsigned char b[16];
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        size_t n = strlen(bad[k]);
        b[0] = 119;
        b[1] = (unsigned char)n;
        memcpy(b + 2, bad[k], n);
        if (walk_exact(b, 2 + n) != CN_EDECODE)
            fail_msg("bad UTF-8 atom %zu accepted", k);
    }
    /* A NUL byte is a character like any other. */
    static const unsigned char nul[] = {119, 3, 'a', 0, 'b'};
    assert_int_equal(walk_exact(nul, sizeof nul), 0);
}

/* cn_term_decode_atom: every encoding as UTF-8 text with its length, within the bound. */
static void atoms_decode_as_utf8_with_their_length(void **state)
{
    (void)state;
    char out[MAXATOMLEN_UTF8];
    size_t n, idx;
    static const unsigned char latin1[] = {100, 0, 4, 'c', 'a', 'f', 0xE9};
    idx = 0;
    assert_int_equal(cn_term_decode_atom((const char *)latin1, sizeof latin1, &idx, out, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "caf\xC3\xA9", 6);
    assert_int_equal(idx, sizeof latin1);
    static const unsigned char nul[] = {119, 12, 'c', 'o', 'u', 'n', 't', 'e', 'r', 0, 'j', 'u', 'n', 'k'};
    idx = 0;
    assert_int_equal(cn_term_decode_atom((const char *)nul, sizeof nul, &idx, out, &n), 0);
    assert_int_equal(n, 12);
    assert_memory_equal(out, "counter\0junk", 12);
    /* 255 four-byte characters fill the buffer ei's MAXATOMLEN_UTF8 names. */
    static unsigned char b[3 + 1020];
    size_t len = utf8_atom(b, "\xF0\x9F\x98\x80", 4, 255);
    idx = 0;
    assert_int_equal(cn_term_decode_atom((const char *)b, len, &idx, out, &n), 0);
    assert_int_equal(n, 1020);
    assert_int_equal(out[1020], '\0');
    /* Truncated, not an atom, or past its bound: refused, index untouched. */
    for (size_t cut = 0; cut < sizeof nul; cut++) {
        idx = 0;
        assert_int_equal(cn_term_decode_atom((const char *)nul, cut, &idx, out, &n), CN_EDECODE);
        assert_int_equal(idx, 0);
    }
    static const unsigned char integer[] = {97, 1};
    idx = 0;
    assert_int_equal(cn_term_decode_atom((const char *)integer, sizeof integer, &idx, out, &n), CN_EDECODE);
}

/* EXPORT_EXT is module atom, function atom, integer arity: ei's fun decoder, which
 * the log printer runs, leaks memory on any other shape (found by fuzz_term). */
static void export_fields_are_checked(void **state)
{
    (void)state;
    static const unsigned char abs1[] = {113, 119, 6, 'e', 'r', 'l', 'a', 'n', 'g', 119, 3, 'a', 'b', 's', 97, 1};
    static const unsigned char abs1_int[] = {113, 100, 0, 6, 'e', 'r', 'l', 'a', 'n', 'g', 115, 3, 'a', 'b', 's',
                                             98, 0, 0, 0, 1};
    static const unsigned char module_port[] = {113, 115, 0, 102, 115, 0, 0, 0, 0, 0, 32, 62, 119, 0};
    static const unsigned char arity_atom[] = {113, 119, 1, 'm', 119, 1, 'f', 119, 1, 'a'};
    static const unsigned char function_nil[] = {113, 119, 1, 'm', 106, 97, 1};
    assert_int_equal(walk_exact(abs1, sizeof abs1), 0);
    assert_int_equal(walk_exact(abs1_int, sizeof abs1_int), 0);
    assert_int_equal(walk_exact(module_port, sizeof module_port), CN_EDECODE);
    assert_int_equal(walk_exact(arity_atom, sizeof arity_atom), CN_EDECODE);
    assert_int_equal(walk_exact(function_nil, sizeof function_nil), CN_EDECODE);
    char *text = cn_term_sprint((const char *)abs1, 0);
    assert_string_equal(text, "fun erlang:abs/1");
    free(text);
}

/* ei's printer leaks the module name of every closure it prints (found by
 * fuzz_term; make unit-san's LeakSanitizer would see it): a term holding one is
 * summarised for the log, however deep the closure sits. */
static void closures_are_summarised_for_logs(void **state)
{
    (void)state;
    unsigned char b[160];
    b[0] = 104;
    b[1] = 2;
    b[2] = 106;
    b[3] = 108;
    cn_set_u32(b + 4, 1);
    size_t n = 8 + build_fun(b + 8, NULL, 0);
    b[n++] = 106;
    assert_int_equal(walk_exact(b, n), 0);
    char *text = cn_term_sprint((const char *)b, 0);
    assert_non_null(text);
    assert_string_equal(text, "<term of 72 bytes>");
    free(text);
}

/* ei's printer writes a bignum's hex digits into a fixed stack buffer: a
 * 1200-byte LARGE_BIG_EXT smashed the stack (found by fuzz_term). Such terms are
 * summarised; small bignums still print. */
static void large_bignums_are_summarised_for_logs(void **state)
{
    (void)state;
    static unsigned char b[5 + 1 + 1200];
    b[0] = 111;
    cn_set_u32(b + 1, 1200);
    b[5] = 0;
    memset(b + 6, 0xA6, 1200);
    assert_int_equal(walk_exact(b, sizeof b), 0);
    char *text = cn_term_sprint((const char *)b, 0);
    assert_string_equal(text, "<term of 1206 bytes>");
    free(text);
    unsigned char small[3 + 16] = {110, 16, 0};
    memset(small + 3, 0xA6, 16);
    text = cn_term_sprint((const char *)small, 0);
    assert_string_equal(text, "16#A6A6A6A6A6A6A6A6A6A6A6A6A6A6A6A6");
    free(text);
}

/* FLOAT_EXT's 31 bytes are text padded with NULs; ei parses them with sscanf, which
 * reads on to the next NUL, past the term (found by fuzz_term: a SEGV in the log
 * printer). A field without a NUL is refused. */
static void old_float_text_must_end(void **state)
{
    (void)state;
    unsigned char b[1 + 31];
    b[0] = 99;
    memset(b + 1, 0, 31);
    memcpy(b + 1, "1.50000000000000000000e+00", 26);
    assert_int_equal(walk_exact(b, sizeof b), 0);
    char *text = cn_term_sprint((const char *)b, 0);
    assert_string_equal(text, "1.500000");
    free(text);
    memset(b + 1 + 26, '9', 31 - 26);
    assert_int_equal(walk_exact(b, sizeof b), CN_EDECODE);
}

/* cn_utf8_atom_chars as it was, a byte at a time: the reference for its word-at-a-time ASCII path. */
static int atom_chars_bytewise(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    int chars = 0;
    for (size_t i = 0; i < n;) {
        size_t k = p[i] < 0x80 ? 1 : cn_utf8_seq(p + i, n - i, NULL);
        if (k == 0 || ++chars > CN_ATOM_MAX_CHARS)
            return -1;
        i += k;
    }
    return chars;
}

/*
 * The ASCII words first, then the rest a byte at a time: the same answer as a
 * byte at a time, for ASCII runs of every length around the word size and the
 * 255-character limit, followed by valid and invalid sequences.
 */
static void atom_chars_agree_with_a_bytewise_count(void **state)
{
    (void)state;
    static const char *tails[] = {"", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xc3", "\x80",
                                  "\xed\xa0\x80", "\xc0\xaf", "a\xff", "\0"};
    char buf[600];
    for (size_t run = 0; run < 300; run++) {
        for (size_t t = 0; t < sizeof tails / sizeof tails[0]; t++) {
            memset(buf, 'a' + (int)(run % 26), run);
            size_t tl = t == 9 ? 1 : strlen(tails[t]);
            memcpy(buf + run, tails[t], tl);
            for (size_t extra = 0; extra < 10; extra++) {
                memset(buf + run + tl, 'z', extra);
                size_t n = run + tl + extra;
                assert_int_equal(cn_utf8_atom_chars(buf, n), atom_chars_bytewise(buf, n));
                if (cn_utf8_short_ascii(buf, n))
                    assert_int_equal(atom_chars_bytewise(buf, n), (int)n);
                else /* the tails of 0 and 9 are ASCII */
                    assert_true((t != 0 && t != 9) || n > CN_ATOM_MAX_CHARS);
            }
        }
    }
    /* 255 ASCII characters are an atom, 256 are not, whatever comes after. */
    memset(buf, 'x', sizeof buf);
    assert_int_equal(cn_utf8_atom_chars(buf, 255), 255);
    assert_int_equal(cn_utf8_atom_chars(buf, 256), -1);
    assert_int_equal(cn_utf8_atom_chars(buf, sizeof buf), -1);
}

/* An atom of text t (n bytes) in encoding tag (ATOM_EXT, SMALL_ATOM_EXT, ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT). */
static void put_atom(cn_buf *b, unsigned char tag, const char *t, size_t n)
{
    cn_buf_put_u8(b, tag);
    if (tag == 115 || tag == 119)
        cn_buf_put_u8(b, (uint8_t)n);
    else
        cn_buf_put_u16(b, (uint16_t)n);
    cn_buf_append(b, t, n);
}

/* Node texts: ASCII, Latin-1 or UTF-8 beyond it, a NUL inside, at and past 255 characters. */
static size_t node_text(int k, char *t)
{
    static const char *fixed[] = {"a@b", "n\xe9@h", "\xc3\xb1ode@h", "\xe2\x82\xac@h", "\xf0\x9f\x98\x80@h",
                                  "\xc3\x28@h", "", "cnode_load_17@127.0.0.1"};
    if (k < 8) {
        strcpy(t, fixed[k]);
        return strlen(t);
    }
    if (k == 8) {
        memcpy(t, "a\0b", 3);
        return 3;
    }
    size_t n = k == 9 ? 255 : 256;
    memset(t, 'x', n);
    return n;
}

static void check_pid(const cn_buf *b)
{
    for (size_t len = 0; len <= b->len; len++) {
        erlang_pid ours, theirs;
        size_t i = 0, w = 0, nl;
        int j = 0;
        int ok = cn_term_decode_pid(b->data, len, &i, &ours, &nl) == 0;
        int walks = cn_term_skip(b->data, len, &w) == 0;
        int ei_ok = walks && ei_decode_pid(b->data, &j, &theirs) == 0;
        assert_int_equal(ok, ei_ok);
        if (!ok)
            continue;
        assert_int_equal(i, (size_t)j);
        assert_int_equal(i, w);
        assert_memory_equal(ours.node, theirs.node, nl + 1);
        assert_int_equal(ours.num, theirs.num);
        assert_int_equal(ours.serial, theirs.serial);
        assert_int_equal(ours.creation, theirs.creation);
    }
}

static void check_ref(const cn_buf *b)
{
    for (size_t len = 0; len <= b->len; len++) {
        erlang_ref ours, theirs;
        size_t i = 0, w = 0, nl;
        int j = 0;
        int ok = cn_term_decode_ref(b->data, len, &i, &ours, &nl) == 0;
        int walks = cn_term_skip(b->data, len, &w) == 0;
        int ei_ok = walks && ei_decode_ref(b->data, &j, &theirs) == 0;
        assert_int_equal(ok, ei_ok);
        if (!ok)
            continue;
        assert_int_equal(i, (size_t)j);
        assert_int_equal(i, w);
        assert_memory_equal(ours.node, theirs.node, nl + 1);
        assert_int_equal(ours.len, theirs.len);
        assert_memory_equal(ours.n, theirs.n, (size_t)ours.len * sizeof ours.n[0]);
        assert_int_equal(ours.creation, theirs.creation);
    }
}

/*
 * Our pid and reference decoders give what ei's give for every term the walker
 * takes, in every encoding of the node atom and with every bit of the numbers
 * set or not, and refuse every truncation and every term the walker refuses.
 */
static void pids_and_refs_decode_as_ei_decodes_them(void **state)
{
    (void)state;
    static const unsigned char atom_tags[] = {100, 115, 118, 119};
    static const unsigned char fill[] = {0x00, 0xff, 0x5a};
    char t[300];
    cn_buf b;
    cn_buf_init(&b);
    for (int k = 0; k < 11; k++) {
        size_t n = node_text(k, t);
        for (size_t a = 0; a < sizeof atom_tags; a++) {
            if ((atom_tags[a] == 115 || atom_tags[a] == 119) && n > 255)
                continue;
            for (size_t f = 0; f < sizeof fill; f++) {
                for (int pt = 0; pt < 2; pt++) {
                    cn_buf_reset(&b);
                    cn_buf_put_u8(&b, pt ? 88 : 103);
                    put_atom(&b, atom_tags[a], t, n);
                    for (int q = 0; q < (pt ? 12 : 9); q++)
                        cn_buf_put_u8(&b, (uint8_t)(fill[f] + q));
                    check_pid(&b);
                }
                for (int rt = 0; rt < 3; rt++) {
                    for (unsigned words = 0; words <= (rt == 0 ? 0u : 6u); words++) {
                        cn_buf_reset(&b);
                        cn_buf_put_u8(&b, rt == 0 ? 101 : rt == 1 ? 114 : 90);
                        if (rt > 0)
                            cn_buf_put_u16(&b, (uint16_t)words);
                        put_atom(&b, atom_tags[a], t, n);
                        size_t rest = rt == 0 ? 5 : (rt == 1 ? 1 : 4) + 4 * words;
                        for (size_t q = 0; q < rest; q++)
                            cn_buf_put_u8(&b, (uint8_t)(fill[f] + q));
                        check_ref(&b);
                    }
                }
            }
        }
    }
    cn_buf_free(&b);
}

/* Node names to encode: ASCII, UTF-8 of 2 to 4 bytes, Latin-1 (not UTF-8), broken and long ones. */
static size_t enc_node(int k, char *t)
{
    static const char *fixed[] = {"a@b", "\xc3\xb1@b", "\xe2\x82\xac@h", "\xf0\x9f\x98\x80@h", "\xe9@b",
                                  "\xc3\x28", "\xed\xa0\x80@h", "\xc0\xaf@h", "", "cnode_load_17@127.0.0.1"};
    if (k < 10) {
        strcpy(t, fixed[k]);
        return strlen(t);
    }
    if (k == 10 || k == 11) { /* 255 and 256 ASCII characters */
        memset(t, 'x', 255 + (size_t)(k - 10));
        t[255 + k - 10] = '\0';
        return strlen(t);
    }
    size_t chars = k == 12 ? 100 : 255; /* 300 or 765 bytes of euro signs */
    for (size_t c = 0; c < chars; c++)
        memcpy(t + 3 * c, "\xe2\x82\xac", 3);
    t[3 * chars] = '\0';
    return 3 * chars;
}

/*
 * Our pid and reference encoders write the bytes ei's write, for every node
 * name ei takes that is an atom's text to the BEAM, and refuse every other
 * name; a reference of every length up to 5 words, and more refused.
 */
static void pids_and_refs_encode_as_ei_encodes_them(void **state)
{
    (void)state;
    static char ours[2048], theirs[2048];
    for (int k = 0; k < 14; k++) {
        erlang_pid p;
        memset(&p, 0, sizeof p);
        enc_node(k, p.node);
        p.num = 0x12345678u + (unsigned)k;
        p.serial = 0xfedcba98u;
        p.creation = 0xffffffffu;
        int i = 0, j = 0;
        int rc = cn_term_encode_pid(ours, &i, &p);
        int erc = ei_encode_pid(theirs, &j, &p);
        int beam_atom = cn_utf8_atom_chars(p.node, strlen(p.node)) >= 0;
        /* ei also takes text the BEAM refuses as an atom (a UTF-16 surrogate, which the BEAM would drop the connection for); we do not. */
        assert_int_equal(rc == 0, erc == 0 && beam_atom);
        if (rc == 0) {
            assert_int_equal(i, j);
            assert_memory_equal(ours, theirs, (size_t)i);
        }
        for (int len = 0; len <= 6; len++) {
            erlang_ref r;
            memset(&r, 0, sizeof r);
            enc_node(k, r.node);
            r.len = len;
            for (int w = 0; w < 5; w++)
                r.n[w] = 0x01020304u * (unsigned)(w + 1) + (unsigned)k;
            r.creation = 0x80000001u;
            i = j = 0;
            rc = cn_term_encode_ref(ours, &i, &r);
            if (len > 5) {
                assert_int_not_equal(rc, 0);
                continue;
            }
            erc = ei_encode_ref(theirs, &j, &r);
            assert_int_equal(rc == 0, erc == 0 && beam_atom);
            if (rc == 0) {
                assert_int_equal(i, j);
                assert_memory_equal(ours, theirs, (size_t)i);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(whole_term_is_accepted),
        cmocka_unit_test(every_truncation_is_refused),
        cmocka_unit_test(walk_agrees_with_ei_skip),
        cmocka_unit_test(lying_lengths_are_refused),
        cmocka_unit_test(unknown_and_cache_tags_are_refused),
        cmocka_unit_test(pid_with_non_atom_node_is_refused),
        cmocka_unit_test(deep_nesting_costs_no_stack),
        cmocka_unit_test(two_terms_back_to_back),
        cmocka_unit_test(honest_fun_is_accepted),
        cmocka_unit_test(fun_lying_inside_its_size_is_refused),
        cmocka_unit_test(nested_funs_are_bounded),
        cmocka_unit_test(utf8_atoms_up_to_255_characters),
        cmocka_unit_test(atom_chars_agree_with_a_bytewise_count),
        cmocka_unit_test(pids_and_refs_decode_as_ei_decodes_them),
        cmocka_unit_test(pids_and_refs_encode_as_ei_encodes_them),
        cmocka_unit_test(utf8_atoms_must_be_well_formed),
        cmocka_unit_test(invalid_utf8_atoms_are_refused),
        cmocka_unit_test(atoms_decode_as_utf8_with_their_length),
        cmocka_unit_test(export_fields_are_checked),
        cmocka_unit_test(closures_are_summarised_for_logs),
        cmocka_unit_test(large_bignums_are_summarised_for_logs),
        cmocka_unit_test(old_float_text_must_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

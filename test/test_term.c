/* Unit tests of cnode/term.h: the bounds-checked term walker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <ei.h>

#include "cnode/error.h"
#include "cnode/term.h"

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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests of genserver/sys_shape.h: which reply shape a stdlib version gets,
 * the {ok, _} head, and the per-server cache of calling nodes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include "genserver/sys_shape.h"

static void stdlib_versions_before_5_1_take_the_plain_state(void **state)
{
    (void)state;
    const char *raw[] = {"4.2", "4.3.1.3", "3.17", "5.0", "5.0.2", "4"};
    for (size_t k = 0; k < sizeof raw / sizeof raw[0]; k++)
        assert_int_equal(gs_sys_shape_for_stdlib(raw[k]), GS_SYS_SHAPE_RAW);
}

static void stdlib_5_1_and_later_take_an_ok_tuple(void **state)
{
    (void)state;
    const char *ok[] = {"5.1", "5.1.1", "5.2", "5.10", "6.2.2", "7.0", "7", "10.0"};
    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++)
        assert_int_equal(gs_sys_shape_for_stdlib(ok[k]), GS_SYS_SHAPE_OK);
}

/* No version, or not a version: the protocol of every current OTP. */
static void no_version_takes_an_ok_tuple(void **state)
{
    (void)state;
    assert_int_equal(gs_sys_shape_for_stdlib(NULL), GS_SYS_SHAPE_OK);
    assert_int_equal(gs_sys_shape_for_stdlib(""), GS_SYS_SHAPE_OK);
    assert_int_equal(gs_sys_shape_for_stdlib("abc"), GS_SYS_SHAPE_OK);
    assert_int_equal(gs_sys_shape_for_stdlib("4.x"), GS_SYS_SHAPE_OK);
    assert_int_equal(gs_sys_shape_for_stdlib("99999999999999999999"), GS_SYS_SHAPE_OK);
}

/* The reply printed: the state 7 in each shape. */
static void expect_encoded(gs_sys_shape shape, const char *want)
{
    ei_x_buff x;
    ei_x_new_with_version(&x);
    gs_sys_shape_begin(&x, shape);
    ei_x_encode_long(&x, 7);
    char *text = NULL;
    int i = 1;
    assert_true(ei_s_print_term(&text, x.buff, &i) >= 0);
    assert_int_equal(i, x.index);
    assert_string_equal(text, want);
    free(text);
    ei_x_free(&x);
}

static void begin_writes_the_ok_head_only_for_the_new_shape(void **state)
{
    (void)state;
    expect_encoded(GS_SYS_SHAPE_RAW, "7");
    expect_encoded(GS_SYS_SHAPE_OK, "{ok, 7}");
    expect_encoded(GS_SYS_SHAPE_UNKNOWN, "{ok, 7}");
}

static void cache_knows_a_node_incarnation(void **state)
{
    (void)state;
    gs_sys_cache c = {0};
    assert_int_equal(gs_sys_cache_get(&c, "a@h", 1), GS_SYS_SHAPE_UNKNOWN);
    gs_sys_cache_put(&c, "a@h", 1, GS_SYS_SHAPE_RAW);
    gs_sys_cache_put(&c, "b@h", 5, GS_SYS_SHAPE_OK);
    assert_int_equal(gs_sys_cache_get(&c, "a@h", 1), GS_SYS_SHAPE_RAW);
    assert_int_equal(gs_sys_cache_get(&c, "b@h", 5), GS_SYS_SHAPE_OK);
    /* Another creation is another incarnation, which may run another OTP. */
    assert_int_equal(gs_sys_cache_get(&c, "a@h", 2), GS_SYS_SHAPE_UNKNOWN);
    gs_sys_cache_put(&c, "a@h", 2, GS_SYS_SHAPE_OK);
    assert_int_equal(gs_sys_cache_get(&c, "a@h", 2), GS_SYS_SHAPE_OK);
    assert_int_equal(gs_sys_cache_get(&c, "a@h", 1), GS_SYS_SHAPE_UNKNOWN);
    gs_sys_cache_forget(&c, "a@h");
    assert_int_equal(gs_sys_cache_get(&c, "a@h", 2), GS_SYS_SHAPE_UNKNOWN);
    assert_int_equal(gs_sys_cache_get(&c, "b@h", 5), GS_SYS_SHAPE_OK);
    gs_sys_cache_forget(&c, "never@h");
    gs_sys_cache_clear(&c);
    assert_int_equal(gs_sys_cache_get(&c, "b@h", 5), GS_SYS_SHAPE_UNKNOWN);
}

/* A node keeps one entry however often it restarts; a full table drops its oldest entry. */
static void cache_is_bounded(void **state)
{
    (void)state;
    gs_sys_cache c = {0};
    for (uint32_t cr = 1; cr <= 100; cr++)
        gs_sys_cache_put(&c, "restarts@h", cr, GS_SYS_SHAPE_RAW);
    int used = 0;
    for (int k = 0; k < GS_SYS_CACHE_SIZE; k++)
        used += c.e[k].node != NULL;
    assert_int_equal(used, 1);
    char name[32];
    for (int n = 0; n < GS_SYS_CACHE_SIZE; n++) {
        snprintf(name, sizeof name, "n%d@h", n);
        gs_sys_cache_put(&c, name, 1, GS_SYS_SHAPE_OK);
    }
    /* restarts@h was the oldest: gone; every n*@h is still there. */
    assert_int_equal(gs_sys_cache_get(&c, "restarts@h", 100), GS_SYS_SHAPE_UNKNOWN);
    for (int n = 0; n < GS_SYS_CACHE_SIZE; n++) {
        snprintf(name, sizeof name, "n%d@h", n);
        assert_int_equal(gs_sys_cache_get(&c, name, 1), GS_SYS_SHAPE_OK);
    }
    /* n0@h is now the oldest. */
    gs_sys_cache_put(&c, "late@h", 1, GS_SYS_SHAPE_RAW);
    assert_int_equal(gs_sys_cache_get(&c, "n0@h", 1), GS_SYS_SHAPE_UNKNOWN);
    assert_int_equal(gs_sys_cache_get(&c, "late@h", 1), GS_SYS_SHAPE_RAW);
    gs_sys_cache_clear(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stdlib_versions_before_5_1_take_the_plain_state),
        cmocka_unit_test(stdlib_5_1_and_later_take_an_ok_tuple),
        cmocka_unit_test(no_version_takes_an_ok_tuple),
        cmocka_unit_test(begin_writes_the_ok_head_only_for_the_new_shape),
        cmocka_unit_test(cache_knows_a_node_incarnation),
        cmocka_unit_test(cache_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

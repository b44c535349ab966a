/* Unit tests of cnode/blob.h: reference counts and the bounds check pieces rely on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cnode/blob.h"

static void the_last_release_frees(void **state)
{
    (void)state;
    cn_blob *b = cn_blob_new(100);
    assert_int_equal(cn_blob_len(b), 100);
    memset(cn_blob_data(b), 'x', 100);
    assert_ptr_equal(cn_blob_hold(b), b);
    cn_blob_release(b);
    /* Still held once: its bytes are still there (AddressSanitizer would see a use after free). */
    assert_int_equal(cn_blob_data(b)[99], 'x');
    cn_blob_release(b);
    cn_blob_release(NULL);
}

static void holds_only_what_lies_within(void **state)
{
    (void)state;
    cn_blob *b = cn_blob_new(64);
    char *d = cn_blob_data(b);
    char outside[8];
    assert_true(cn_blob_holds(b, d, 64));
    assert_true(cn_blob_holds(b, d + 10, 54));
    assert_true(cn_blob_holds(b, d + 64, 0));
    assert_false(cn_blob_holds(b, d + 10, 55));
    assert_false(cn_blob_holds(b, d - 1, 2));
    assert_false(cn_blob_holds(b, outside, 1));
    assert_false(cn_blob_holds(b, d + 1, SIZE_MAX));
    assert_false(cn_blob_holds(NULL, d, 1));
    cn_blob_release(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_last_release_frees),
        cmocka_unit_test(holds_only_what_lies_within),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

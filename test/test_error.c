/*
 * Unit tests of cnode/error.h: cn_strerror for our own codes and for -errno.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>
#include <cmocka.h>

#include "cnode/error.h"

static void our_codes_have_their_texts(void **state)
{
    (void)state;
    /* Spelled out, so a broken map cannot hide behind itself. */
    assert_string_equal(cn_strerror(CN_EDECODE), "malformed term or message");
    assert_string_equal(cn_strerror(CN_ECOOKIE), "cookie mismatch");
    assert_string_equal(cn_strerror(CN_ENOPROC), "no such process");
    assert_string_equal(cn_strerror(CN_EEXIST), "name already registered");
    assert_string_equal(cn_strerror(CN_EIGNORED), "server init returned ignore");
#define CHECK(name, value, text)                              \
    assert_int_equal(CN_##name, value);                       \
    assert_string_equal(cn_strerror(CN_##name), text);
    CN_ERRNO_MAP(CHECK)
#undef CHECK
}

static void our_codes_never_collide_with_errno(void **state)
{
    (void)state;
    static const int codes[] = {
#define CODE(name, value, text) CN_##name,
        CN_ERRNO_MAP(CODE)
#undef CODE
    };
    size_t n = sizeof codes / sizeof codes[0];
    assert_true(n >= 13);
    for (size_t i = 0; i < n; i++) {
        assert_true(codes[i] < -4000);
        for (size_t j = i + 1; j < n; j++)
            assert_int_not_equal(codes[i], codes[j]);
        /* And no two codes share a text. */
        for (size_t j = i + 1; j < n; j++)
            assert_string_not_equal(cn_strerror(codes[i]), cn_strerror(codes[j]));
    }
}

static void errno_values_are_described_by_the_system(void **state)
{
    (void)state;
    static const int errs[] = {ENOENT, EINVAL, ENOMEM, EACCES, EADDRINUSE, ECONNREFUSED, EPIPE, ETIMEDOUT};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        char want[256];
        snprintf(want, sizeof want, "%s", strerror(errs[i]));
        assert_string_equal(cn_strerror(-errs[i]), want);
    }
    /* libuv's codes are -errno on Unix, and pass through the same way. */
    assert_string_equal(cn_strerror(UV_ECONNREFUSED), strerror(ECONNREFUSED));
    assert_string_equal(cn_strerror(UV_EADDRINUSE), strerror(EADDRINUSE));
}

static void anything_else_still_gets_a_text(void **state)
{
    (void)state;
    static const int odd[] = {-4000, -4014, -4999, -100000, 1, 4001};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        const char *s = cn_strerror(odd[i]);
        assert_non_null(s);
        assert_true(s[0] != '\0');
    }
    /* An unknown code is not mistaken for one of ours. */
    assert_string_not_equal(cn_strerror(-4014), cn_strerror(CN_EIGNORED));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(our_codes_have_their_texts),
        cmocka_unit_test(our_codes_never_collide_with_errno),
        cmocka_unit_test(errno_values_are_described_by_the_system),
        cmocka_unit_test(anything_else_still_gets_a_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests of cnode/buf.h: growth, reuse without allocation, consume, and the
 * big-endian puts and gets.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cnode/buf.h"

static void init_is_empty_and_allocates_nothing(void **state)
{
    (void)state;
    cn_buf b;
    memset(&b, 0x5a, sizeof b);
    cn_buf_init(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    /* Appending nothing is fine, and free after init is too. */
    assert_int_equal(cn_buf_append(&b, NULL, 0), 0);
    assert_int_equal(b.len, 0);
    cn_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
}

static void append_grows_geometrically_and_keeps_contents(void **state)
{
    (void)state;
    cn_buf b;
    cn_buf_init(&b);
    enum { N = 100000 };
    int growths = 0;
    size_t last_cap = 0;
    for (size_t i = 0; i < N; i++) {
        unsigned char c = (unsigned char)(i * 7 + 3);
        assert_int_equal(cn_buf_append(&b, &c, 1), 0);
        assert_true(b.cap >= b.len);
        if (b.cap != last_cap) {
            growths++;
            last_cap = b.cap;
        }
    }
    assert_int_equal(b.len, N);
    /* Doubling: about log2(N) growths, not N / chunk. */
    assert_true(growths <= 20);
    for (size_t i = 0; i < N; i++)
        assert_int_equal((unsigned char)b.data[i], (unsigned char)(i * 7 + 3));
    cn_buf_free(&b);
    assert_null(b.data);
}

static void big_append_at_once(void **state)
{
    (void)state;
    cn_buf b;
    cn_buf_init(&b);
    static char big[70000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i % 251);
    assert_int_equal(cn_buf_append(&b, "ab", 2), 0);
    assert_int_equal(cn_buf_append(&b, big, sizeof big), 0);
    assert_int_equal(b.len, 2 + sizeof big);
    assert_memory_equal(b.data, "ab", 2);
    assert_memory_equal(b.data + 2, big, sizeof big);
    cn_buf_free(&b);
}

static void reset_keeps_memory_and_reuse_does_not_allocate(void **state)
{
    (void)state;
    cn_buf b;
    cn_buf_init(&b);
    char chunk[100];
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < 10; i++)
        assert_int_equal(cn_buf_append(&b, chunk, sizeof chunk), 0);
    char *data = b.data;
    size_t cap = b.cap;
    cn_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    /* Filling it up to its capacity again keeps the same memory. */
    while (b.len + sizeof chunk <= cap)
        assert_int_equal(cn_buf_append(&b, chunk, sizeof chunk), 0);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    cn_buf_free(&b);
}

static void reserve_makes_room(void **state)
{
    (void)state;
    cn_buf b;
    cn_buf_init(&b);
    assert_int_equal(cn_buf_reserve(&b, 0), 0);
    assert_int_equal(cn_buf_reserve(&b, 1000), 0);
    assert_true(b.cap - b.len >= 1000);
    assert_int_equal(b.len, 0);
    char *data = b.data;
    /* Room reserved is room that appends use without moving the buffer. */
    char chunk[1000];
    memset(chunk, 'y', sizeof chunk);
    assert_int_equal(cn_buf_append(&b, chunk, sizeof chunk), 0);
    assert_ptr_equal(b.data, data);
    assert_int_equal(cn_buf_reserve(&b, 5000), 0);
    assert_true(b.cap - b.len >= 5000);
    assert_int_equal(b.len, 1000);
    assert_memory_equal(b.data, chunk, sizeof chunk);
    cn_buf_free(&b);
}

/* A size no memory can hold is -ENOMEM, whatever the buffer already holds. */
static cn_buf held; /* freed by free_held, so a failed assertion leaks nothing */

static int free_held(void **state)
{
    (void)state;
    cn_buf_free(&held);
    return 0;
}

static void reserve_refuses_impossible_sizes(void **state)
{
    (void)state;
    cn_buf_init(&held);
    assert_int_equal(cn_buf_reserve(&held, SIZE_MAX), -ENOMEM);
    assert_int_equal(held.len, 0);
    assert_int_equal(cn_buf_append(&held, "0123456789", 10), 0);
    size_t cap = held.cap;
    /* len + n overflows size_t here. */
    int rc = cn_buf_reserve(&held, SIZE_MAX - 4);
    if (rc == 0)
        fail_msg("cn_buf_reserve(len 10, n SIZE_MAX - 4) returned 0 with %zu bytes of room", held.cap - held.len);
    assert_int_equal(rc, -ENOMEM);
    assert_int_equal(held.len, 10);
    assert_int_equal(held.cap, cap);
    assert_memory_equal(held.data, "0123456789", 10);
}

static void consume_drops_from_the_front(void **state)
{
    (void)state;
    cn_buf b;
    cn_buf_init(&b);
    assert_int_equal(cn_buf_append(&b, "hello, world", 12), 0);
    cn_buf_consume(&b, 0);
    assert_int_equal(b.len, 12);
    assert_memory_equal(b.data, "hello, world", 12);
    cn_buf_consume(&b, 7);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "world", 5);
    /* Appends go after what is left. */
    assert_int_equal(cn_buf_append(&b, "!", 1), 0);
    assert_memory_equal(b.data, "world!", 6);
    cn_buf_consume(&b, 6);
    assert_int_equal(b.len, 0);
    assert_non_null(b.data); /* the memory is kept */
    assert_int_equal(cn_buf_append(&b, "x", 1), 0);
    assert_memory_equal(b.data, "x", 1);
    cn_buf_free(&b);
}

static void puts_are_big_endian(void **state)
{
    (void)state;
    cn_buf b;
    cn_buf_init(&b);
    assert_int_equal(cn_buf_put_u8(&b, 0xab), 0);
    assert_int_equal(cn_buf_put_u16(&b, 0x1234), 0);
    assert_int_equal(cn_buf_put_u32(&b, 0x89abcdefu), 0);
    assert_int_equal(cn_buf_put_u64(&b, 0x0102030405060708ull), 0);
    static const unsigned char want[] = {0xab, 0x12, 0x34, 0x89, 0xab, 0xcd, 0xef,
                                         0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    cn_buf_free(&b);
}

static void gets_read_what_puts_wrote(void **state)
{
    (void)state;
    static const uint16_t v16[] = {0, 1, 0x00ff, 0x0100, 0x7fff, 0x8000, 0xffff};
    static const uint32_t v32[] = {0, 1, 0x7fffffffu, 0x80000000u, 0xffffffffu, 0x00ff00ffu};
    static const uint64_t v64[] = {0, 1, 0x7fffffffffffffffull, 0x8000000000000000ull,
                                   0xffffffffffffffffull, 0x00000000ffffffffull, 0xffffffff00000000ull};
    cn_buf b;
    cn_buf_init(&b);
    /* One odd byte first, so every value after it is unaligned. */
    assert_int_equal(cn_buf_put_u8(&b, 0x7f), 0);
    for (size_t i = 0; i < sizeof v16 / sizeof v16[0]; i++)
        assert_int_equal(cn_buf_put_u16(&b, v16[i]), 0);
    for (size_t i = 0; i < sizeof v32 / sizeof v32[0]; i++)
        assert_int_equal(cn_buf_put_u32(&b, v32[i]), 0);
    for (size_t i = 0; i < sizeof v64 / sizeof v64[0]; i++)
        assert_int_equal(cn_buf_put_u64(&b, v64[i]), 0);
    const char *p = b.data;
    assert_int_equal((unsigned char)*p, 0x7f);
    p += 1;
    for (size_t i = 0; i < sizeof v16 / sizeof v16[0]; i++, p += 2)
        assert_int_equal(cn_get_u16(p), v16[i]);
    for (size_t i = 0; i < sizeof v32 / sizeof v32[0]; i++, p += 4)
        assert_int_equal(cn_get_u32(p), v32[i]);
    for (size_t i = 0; i < sizeof v64 / sizeof v64[0]; i++, p += 8)
        assert_true(cn_get_u64(p) == v64[i]);
    assert_ptr_equal(p, b.data + b.len);
    cn_buf_free(&b);
}

static void set_u32_overwrites_in_place(void **state)
{
    (void)state;
    cn_buf b;
    cn_buf_init(&b);
    /* The frame writer's pattern: a length placeholder, the body, then the length. */
    assert_int_equal(cn_buf_put_u8(&b, 'p'), 0);
    assert_int_equal(cn_buf_put_u32(&b, 0), 0);
    assert_int_equal(cn_buf_append(&b, "body", 4), 0);
    cn_set_u32(b.data + 1, 0xdeadbeefu);
    static const unsigned char want[] = {'p', 0xde, 0xad, 0xbe, 0xef, 'b', 'o', 'd', 'y'};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    assert_int_equal(cn_get_u32(b.data + 1), 0xdeadbeefu);
    cn_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(init_is_empty_and_allocates_nothing),
        cmocka_unit_test(append_grows_geometrically_and_keeps_contents),
        cmocka_unit_test(big_append_at_once),
        cmocka_unit_test(reset_keeps_memory_and_reuse_does_not_allocate),
        cmocka_unit_test(reserve_makes_room),
        cmocka_unit_test_teardown(reserve_refuses_impossible_sizes, free_held),
        cmocka_unit_test(consume_drops_from_the_front),
        cmocka_unit_test(puts_are_big_endian),
        cmocka_unit_test(gets_read_what_puts_wrote),
        cmocka_unit_test(set_u32_overwrites_in_place),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

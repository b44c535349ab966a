/*
 * Unit tests for genserver/rl_table with an injected clock: the sliding window's
 * edges, rejected requests not counting, client identity by ===, sliced cleanup,
 * save and load across a restart, corrupt images, and memory per client.
 */
#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <ei.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cnode/buf.h"
#include "cnode/error.h"
#include "genserver/rl_table.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#define WINDOW 1000
#define MAX 100

/* ---- helpers ------------------------------------------------------------ */

/* A client id on the wire: the encoded term and its length. */
typedef struct id {
    char b[64];
    size_t len;
} id;

/* The binary <<"client-N">> as BINARY_EXT. */
static id bin_id(unsigned n)
{
    id k;
    char text[32];
    int len = snprintf(text, sizeof text, "client-%u", n);
    k.b[0] = ERL_BINARY_EXT;
    cn_set_u32(k.b + 1, (uint32_t)len);
    memcpy(k.b + 5, text, (size_t)len);
    k.len = 5 + (size_t)len;
    return k;
}

static id raw_id(const void *bytes, size_t len)
{
    id k;
    assert_true(len <= sizeof k.b);
    memcpy(k.b, bytes, len);
    k.len = len;
    return k;
}

static int check(rl_table *t, const id *k, int64_t now, uint32_t *remaining)
{
    return rl_check_n(t, k->b, k->len, 0, now, remaining);
}

/* Asserts an accepted request with the given remaining count. */
static void ok_req(rl_table *t, const id *k, int64_t now, uint32_t want)
{
    uint32_t remaining = 12345;
    int rc = check(t, k, now, &remaining);
    if (rc != 1)
        fail_msg("request at %lld: expected accepted, got %d", (long long)now, rc);
    assert_int_equal(remaining, want);
}

static void limited_req(rl_table *t, const id *k, int64_t now)
{
    uint32_t remaining = 12345;
    int rc = check(t, k, now, &remaining);
    if (rc != 0)
        fail_msg("request at %lld: expected rate limited, got %d", (long long)now, rc);
    assert_int_equal(remaining, 0);
}

/* Runs slices of `budget` until a sweep completes; returns the number of slices. */
static int sweep_all(rl_table *t, int64_t now, size_t budget)
{
    int slices = 1;
    while (rl_sweep(t, now, budget) == 0)
        slices++;
    return slices;
}

/* ---- construction -------------------------------------------------------- */

static void test_bad_arguments(void **state)
{
    (void)state;
    assert_null(rl_table_new(0, WINDOW));
    assert_null(rl_table_new(MAX, 0));
    assert_null(rl_table_new(MAX, -1));
    rl_table_free(NULL);
    rl_table *t = rl_table_new(MAX, WINDOW);
    assert_non_null(t);
    assert_int_equal(rl_client_count(t), 0);
    assert_int_equal(rl_sweep(t, 0, 0), 0);
    assert_int_equal(rl_sweep(t, 0, 1000), 1);
    rl_table_free(t);
}

/* ---- the window ---------------------------------------------------------- */

static void test_remaining_counts_down(void **state)
{
    (void)state;
    rl_table *t = rl_table_new(MAX, 60000);
    id k = bin_id(42);
    for (uint32_t i = 0; i < MAX; i++)
        ok_req(t, &k, i, MAX - 1 - i);
    limited_req(t, &k, MAX);
    limited_req(t, &k, 59999);
    /* The first request is exactly one window old: its slot is free again. */
    ok_req(t, &k, 60000, 0);
    limited_req(t, &k, 60000);
    assert_int_equal(rl_client_count(t), 1);
    rl_table_free(t);
}

static void test_window_boundary(void **state)
{
    (void)state;
    rl_table *t = rl_table_new(2, WINDOW);
    id k = bin_id(1);
    ok_req(t, &k, 0, 1);
    ok_req(t, &k, 10, 0);
    /* window_ms - 1 old still counts; exactly window_ms old has expired. */
    limited_req(t, &k, WINDOW - 1);
    ok_req(t, &k, WINDOW, 0);
    limited_req(t, &k, WINDOW + 9);
    ok_req(t, &k, WINDOW + 10, 0);
    rl_table_free(t);
}

static void test_rejected_requests_not_counted(void **state)
{
    (void)state;
    rl_table *t = rl_table_new(3, WINDOW);
    id k = bin_id(7);
    ok_req(t, &k, 0, 2);
    ok_req(t, &k, 1, 1);
    ok_req(t, &k, 2, 0);
    /* Hammering while limited records nothing ... */
    for (int64_t now = 3; now < WINDOW; now++)
        limited_req(t, &k, now);
    /* ... so each slot comes back exactly one window after its accepted request. */
    ok_req(t, &k, WINDOW, 0);
    ok_req(t, &k, WINDOW + 1, 0);
    ok_req(t, &k, WINDOW + 2, 0);
    limited_req(t, &k, WINDOW + 3);
    rl_table_free(t);
}

static void test_max_requests_one(void **state)
{
    (void)state;
    rl_table *t = rl_table_new(1, WINDOW);
    id k = bin_id(1);
    ok_req(t, &k, 5, 0);
    limited_req(t, &k, 6);
    limited_req(t, &k, WINDOW + 4);
    ok_req(t, &k, WINDOW + 5, 0);
    limited_req(t, &k, WINDOW + 5);
    rl_table_free(t);
}

static void test_clients_are_independent(void **state)
{
    (void)state;
    rl_table *t = rl_table_new(3, WINDOW);
    id a = bin_id(1), b = bin_id(2);
    ok_req(t, &a, 0, 2);
    ok_req(t, &a, 0, 1);
    ok_req(t, &a, 0, 0);
    limited_req(t, &a, 1);
    ok_req(t, &b, 1, 2);
    limited_req(t, &a, 2);
    ok_req(t, &b, 2, 1);
    assert_int_equal(rl_client_count(t), 2);
    rl_table_free(t);
}

/* ---- client identity ------------------------------------------------------ */

static void test_same_term_is_one_client(void **state)
{
    (void)state;
    rl_table *t = rl_table_new(MAX, WINDOW);
    static const unsigned char atom_latin1[] = {ERL_ATOM_EXT, 0, 3, 'a', 'b', 'c'};
    static const unsigned char atom_utf8[] = {ERL_SMALL_ATOM_UTF8_EXT, 3, 'a', 'b', 'c'};
    static const unsigned char string[] = {ERL_STRING_EXT, 0, 2, 1, 2};
    static const unsigned char list[] = {ERL_LIST_EXT, 0, 0, 0, 2, 'a', 1, 'b', 0, 0, 0, 2, 'j'};
    static const unsigned char map_ab[] = {ERL_MAP_EXT, 0, 0, 0, 2, 'a', 1, 'a', 2, 'a', 3, 'a', 4};
    static const unsigned char map_ba[] = {ERL_MAP_EXT, 0, 0, 0, 2, 'a', 3, 'a', 4, 'a', 1, 'a', 2};
    id a1 = raw_id(atom_latin1, sizeof atom_latin1), a2 = raw_id(atom_utf8, sizeof atom_utf8);
    id s1 = raw_id(string, sizeof string), s2 = raw_id(list, sizeof list);
    id m1 = raw_id(map_ab, sizeof map_ab), m2 = raw_id(map_ba, sizeof map_ba);
    ok_req(t, &a1, 0, MAX - 1);
    ok_req(t, &a2, 0, MAX - 2);
    ok_req(t, &s1, 0, MAX - 1);
    ok_req(t, &s2, 0, MAX - 2);
    ok_req(t, &m1, 0, MAX - 1);
    ok_req(t, &m2, 0, MAX - 2);
    assert_int_equal(rl_client_count(t), 3);
    rl_table_free(t);
}

static void test_int_and_float_are_two_clients(void **state)
{
    (void)state;
    rl_table *t = rl_table_new(MAX, WINDOW);
    static const unsigned char one[] = {ERL_SMALL_INTEGER_EXT, 1};
    static const unsigned char one_float[] = {NEW_FLOAT_EXT, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0};
    static const unsigned char one_big[] = {ERL_SMALL_BIG_EXT, 2, 0, 1, 0};
    id i = raw_id(one, sizeof one), f = raw_id(one_float, sizeof one_float);
    id b = raw_id(one_big, sizeof one_big);
    ok_req(t, &i, 0, MAX - 1);
    ok_req(t, &f, 0, MAX - 1);
    ok_req(t, &b, 0, MAX - 2);
    assert_int_equal(rl_client_count(t), 2);
    /* A binary is stored without its head, so <<97, 1>> is stored as the bytes of
     * the integer 1's canonical form: still two clients. */
    static const unsigned char bin_like_one[] = {ERL_BINARY_EXT, 0, 0, 0, 2, ERL_SMALL_INTEGER_EXT, 1};
    id bl = raw_id(bin_like_one, sizeof bin_like_one);
    ok_req(t, &bl, 0, MAX - 1);
    ok_req(t, &i, 0, MAX - 3);
    assert_int_equal(rl_client_count(t), 3);
    rl_table_free(t);
}

static void test_malformed_ids(void **state)
{
    (void)state;
    rl_table *t = rl_table_new(MAX, WINDOW);
    uint32_t remaining;
    id k = bin_id(1);
    assert_int_equal(rl_check_n(t, k.b, k.len - 1, 0, 0, &remaining), CN_EDECODE);
    static const unsigned char bad[] = {0xFF, 0};
    assert_int_equal(rl_check(t, (const char *)bad, 0, 0, &remaining), CN_EDECODE);
    assert_int_equal(rl_client_count(t), 0);

    /* The id may start anywhere in the message, as it does inside {check_rate, Id}. */
    ei_x_buff x;
    assert_int_equal(ei_x_new(&x), 0);
    assert_int_equal(ei_x_encode_tuple_header(&x, 2), 0);
    assert_int_equal(ei_x_encode_atom(&x, "check_rate"), 0);
    int at = x.index;
    assert_int_equal(ei_x_encode_binary(&x, "client-1", 8), 0);
    assert_int_equal(rl_check(t, x.buff, at, 0, &remaining), 1);
    assert_int_equal(remaining, MAX - 1);
    ok_req(t, &k, 0, MAX - 2);
    ei_x_free(&x);
    rl_table_free(t);
}

/* ---- many clients, growth and cleanup ------------------------------------- */

static void test_many_clients_with_sweeps(void **state)
{
    (void)state;
    const unsigned n = 100000;
    rl_table *t = rl_table_new(8, WINDOW);
    /* Client i makes 1 + i % 8 requests: rings grow to every size up to the limit. */
    for (unsigned i = 0; i < n; i++) {
        id k = bin_id(i);
        for (unsigned r = 0; r <= i % 8; r++)
            ok_req(t, &k, r, 8 - 1 - r);
    }
    assert_int_equal(rl_client_count(t), n);
    for (unsigned i = 0; i < n; i += 8) {
        id k = bin_id(i + 7);
        limited_req(t, &k, 100);
    }

    /* Nothing has expired one millisecond before the first stamp does. */
    sweep_all(t, WINDOW - 1, 1000);
    assert_int_equal(rl_client_count(t), n);

    /* Even clients come back halfway through; at the window's end the odd ones go. */
    for (unsigned i = 0; i < n; i += 2) {
        id k = bin_id(i);
        uint32_t remaining;
        assert_int_equal(check(t, &k, WINDOW / 2, &remaining), i % 8 == 7 ? 0 : 1);
    }
    sweep_all(t, WINDOW + 7, 4096);
    assert_int_equal(rl_client_count(t), n / 2);
    for (unsigned i = 0; i < n; i += 2) {
        id k = bin_id(i);
        ok_req(t, &k, WINDOW + 7, 8 - 2);
    }
    for (unsigned i = 1; i < n; i += 2) {
        id k = bin_id(i);
        ok_req(t, &k, WINDOW + 7, 8 - 1);
    }
    assert_int_equal(rl_client_count(t), n);

    /* Long after, a sweep forgets everyone, and the table is usable again. */
    assert_int_equal(sweep_all(t, 10 * WINDOW, SIZE_MAX), 1);
    assert_int_equal(rl_client_count(t), 0);
    sweep_all(t, 10 * WINDOW, SIZE_MAX);
    for (unsigned i = 0; i < 1000; i++) {
        id k = bin_id(i);
        ok_req(t, &k, 10 * WINDOW, 8 - 1);
    }
    assert_int_equal(rl_client_count(t), 1000);
    rl_table_free(t);
}

static void test_sliced_sweep(void **state)
{
    (void)state;
    rl_table *t = rl_table_new(5, WINDOW);
    for (unsigned i = 0; i < 20; i++) {
        id k = bin_id(i);
        ok_req(t, &k, 0, 4);
    }
    /* The even clients stay active. */
    for (unsigned i = 0; i < 20; i += 2) {
        id k = bin_id(i);
        ok_req(t, &k, 500, 3);
    }
    int slices = sweep_all(t, WINDOW, 3);
    assert_true(slices > 3);
    assert_int_equal(rl_client_count(t), 10);
    /* Active clients kept their request at 500; idle ones start over. */
    for (unsigned i = 0; i < 20; i++) {
        id k = bin_id(i);
        ok_req(t, &k, WINDOW, i % 2 == 0 ? 3 : 4);
    }
    rl_table_free(t);
}

/* A sweep that the table's growth interrupts loses no active client and forgets
 * every idle one by the end of the following sweep. */
static void test_sweep_across_growth(void **state)
{
    (void)state;
    rl_table *t = rl_table_new(4, WINDOW);
    for (unsigned i = 0; i < 1000; i++) {
        id k = bin_id(i);
        ok_req(t, &k, 0, 3);
    }
    unsigned next = 1000;
    int done = 0;
    for (int slice = 0; !done; slice++) {
        done = rl_sweep(t, WINDOW, 50);
        /* For a while new clients arrive between slices and make the table grow. */
        for (unsigned j = 0; slice < 20 && j < 200; j++, next++) {
            id k = bin_id(next);
            ok_req(t, &k, WINDOW, 3);
        }
    }
    sweep_all(t, WINDOW, 50);
    assert_int_equal(rl_client_count(t), next - 1000);
    for (unsigned i = 1000; i < next; i++) {
        id k = bin_id(i);
        ok_req(t, &k, WINDOW + 1, 2);
    }
    rl_table_free(t);
}

/* ---- save and load -------------------------------------------------------- */

#define WALL 1700000000000LL

/* A: at its limit with requests at 100, 200, 300. B: one request at 50. C: one
 * request at -500, which has 100 ms left at the save (now 400). */
static rl_table *saved_table(void)
{
    rl_table *t = rl_table_new(3, WINDOW);
    id a = bin_id(1), b = bin_id(2), c = bin_id(3);
    ok_req(t, &c, -500, 2);
    ok_req(t, &b, 50, 2);
    ok_req(t, &a, 100, 2);
    ok_req(t, &a, 200, 1);
    ok_req(t, &a, 300, 0);
    return t;
}

static void test_save_and_load(void **state)
{
    (void)state;
    rl_table *t = saved_table();
    cn_buf img;
    cn_buf_init(&img);
    assert_int_equal(cn_buf_append(&img, "hdr", 3), 0);
    assert_int_equal(rl_save(t, 400, WALL, &img), 0);
    rl_table_free(t);

    /* 200 ms pass; the new process's monotonic clock starts elsewhere. */
    rl_table *u = rl_table_new(3, WINDOW);
    assert_int_equal(rl_load(u, img.data + 3, img.len - 3, 5000, WALL + 200), 0);
    /* C's request is 1100 ms old by now and was dropped. */
    assert_int_equal(rl_client_count(u), 2);
    id a = bin_id(1), b = bin_id(2), c = bin_id(3);
    /* A's requests are 500, 400 and 300 ms old: still limited until the first is 1000. */
    limited_req(u, &a, 5000);
    limited_req(u, &a, 5499);
    ok_req(u, &a, 5500, 0);
    ok_req(u, &b, 5000, 1);
    ok_req(u, &c, 5000, 2);
    /* Loading into a table in use is refused and changes nothing. */
    assert_int_equal(rl_load(u, img.data + 3, img.len - 3, 5000, WALL + 200), -EINVAL);
    assert_int_equal(rl_client_count(u), 3);
    rl_table_free(u);

    /* The wall clock went back: stamps in its future count as now, so A stays limited. */
    u = rl_table_new(3, WINDOW);
    assert_int_equal(rl_load(u, img.data + 3, img.len - 3, 0, WALL - 60000), 0);
    limited_req(u, &a, WINDOW - 1);
    ok_req(u, &a, WINDOW, 2);
    rl_table_free(u);

    /* A table with a lower limit keeps the newest stamps: A is still limited. */
    u = rl_table_new(2, WINDOW);
    assert_int_equal(rl_load(u, img.data + 3, img.len - 3, 5000, WALL + 200), 0);
    limited_req(u, &a, 5000);
    ok_req(u, &a, 5600, 0);
    rl_table_free(u);

    /* Everything expired: a valid image that loads nothing. */
    u = rl_table_new(3, WINDOW);
    assert_int_equal(rl_load(u, img.data + 3, img.len - 3, 0, WALL + 5000), 0);
    assert_int_equal(rl_client_count(u), 0);
    rl_table_free(u);
    cn_buf_free(&img);
}

static void test_save_load_many(void **state)
{
    (void)state;
    const unsigned n = 20000;
    rl_table *t = rl_table_new(10, WINDOW);
    for (unsigned i = 0; i < n; i++) {
        id k = bin_id(i);
        for (unsigned r = 0; r < i % 11; r++)
            check(t, &k, r * 10, &(uint32_t){0});
    }
    cn_buf img;
    cn_buf_init(&img);
    assert_int_equal(rl_save(t, 100, WALL, &img), 0);
    rl_table *u = rl_table_new(10, WINDOW);
    assert_int_equal(rl_load(u, img.data, img.len, 100, WALL), 0);
    /* Clients without requests do not exist; the others kept every stamp. */
    size_t with_requests = 0;
    for (unsigned i = 0; i < n; i++)
        with_requests += i % 11 != 0;
    assert_int_equal(rl_client_count(u), with_requests);
    for (unsigned i = 0; i < n; i++) {
        id k = bin_id(i);
        uint32_t used = i % 11;
        if (used == 10)
            limited_req(u, &k, 100);
        else
            ok_req(u, &k, 100, 10 - used - 1);
    }
    cn_buf_free(&img);
    rl_table_free(t);
    rl_table_free(u);
}

/* Appends a big-endian u64. */
static void put64(cn_buf *b, uint64_t v)
{
    assert_int_equal(cn_buf_put_u64(b, v), 0);
}

/* Builds an image by hand around the given client section, with a correct checksum,
 * so that the structural checks are reached. */
static void hand_image(cn_buf *b, uint64_t clients, const void *body, size_t len)
{
    cn_buf_reset(b);
    assert_int_equal(cn_buf_append(b, "RLT\x01", 4), 0);
    assert_int_equal(cn_buf_put_u32(b, 3), 0);
    put64(b, WINDOW);
    put64(b, clients);
    assert_int_equal(cn_buf_append(b, body, len), 0);
    put64(b, XXH3_64bits(b->data, b->len));
}

static void expect_load(const cn_buf *img, int want)
{
    rl_table *u = rl_table_new(3, WINDOW);
    assert_int_equal(rl_load(u, img->data, img->len, 0, WALL), want);
    if (want < 0)
        assert_int_equal(rl_client_count(u), 0);
    rl_table_free(u);
}

static void test_corrupt_images(void **state)
{
    (void)state;
    rl_table *t = saved_table();
    cn_buf img, bad;
    cn_buf_init(&img);
    cn_buf_init(&bad);
    assert_int_equal(rl_save(t, 400, WALL, &img), 0);
    rl_table_free(t);

    /* Every truncation and every flipped bit is caught; the table stays empty. */
    for (size_t n = 0; n < img.len; n++) {
        rl_table *u = rl_table_new(3, WINDOW);
        int rc = rl_load(u, img.data, n, 300, WALL);
        assert_int_equal(rc, CN_ECORRUPT);
        assert_int_equal(rl_client_count(u), 0);
        rl_table_free(u);
    }
    for (size_t n = 0; n < img.len * 8; n++) {
        cn_buf_reset(&bad);
        assert_int_equal(cn_buf_append(&bad, img.data, img.len), 0);
        bad.data[n / 8] ^= (char)(1 << (n % 8));
        rl_table *u = rl_table_new(3, WINDOW);
        int rc = rl_load(u, bad.data, bad.len, 300, WALL);
        assert_true(rc == CN_ECORRUPT || (n / 8 == 3 && rc == CN_EVERSION));
        assert_int_equal(rl_client_count(u), 0);
        rl_table_free(u);
    }

    /* Well-checksummed images that rl_save would never write. */
    static const unsigned char key[] = {ERL_BINARY_EXT, 0, 0, 0, 1, 'x'};
    static const unsigned char key_noncanonical[] = {ERL_BIT_BINARY_EXT, 0, 0, 0, 1, 8, 'x'};
    cn_buf body;
    cn_buf_init(&body);
#define CLIENT(k, n)                                                    \
    do {                                                                \
        assert_int_equal(cn_buf_put_u32(&body, sizeof k), 0);          \
        assert_int_equal(cn_buf_append(&body, k, sizeof k), 0);        \
        assert_int_equal(cn_buf_put_u32(&body, n), 0);                 \
    } while (0)
    CLIENT(key, 2);
    put64(&body, WALL - 10);
    put64(&body, WALL - 5);
    hand_image(&bad, 1, body.data, body.len);
    expect_load(&bad, 0); /* the baseline is valid */
    hand_image(&bad, 2, body.data, body.len);
    expect_load(&bad, CN_ECORRUPT); /* fewer clients than announced */
    hand_image(&bad, 0, body.data, body.len);
    expect_load(&bad, CN_ECORRUPT); /* bytes after the last client */
    CLIENT(key, 1);
    put64(&body, WALL - 1);
    hand_image(&bad, 2, body.data, body.len);
    expect_load(&bad, CN_ECORRUPT); /* the same key twice */

    cn_buf_reset(&body);
    CLIENT(key, 2);
    put64(&body, WALL - 5);
    put64(&body, WALL - 10);
    hand_image(&bad, 1, body.data, body.len);
    expect_load(&bad, CN_ECORRUPT); /* stamps out of order */

    cn_buf_reset(&body);
    CLIENT(key_noncanonical, 1);
    put64(&body, WALL - 5);
    hand_image(&bad, 1, body.data, body.len);
    expect_load(&bad, CN_ECORRUPT); /* a key that is not canonical */

    cn_buf_reset(&body);
    CLIENT(key, 0x7FFFFFFF);
    put64(&body, WALL - 5);
    hand_image(&bad, 1, body.data, body.len);
    expect_load(&bad, CN_ECORRUPT); /* more stamps announced than present */

    hand_image(&bad, 0, "", 0);
    expect_load(&bad, 0);
    bad.data[3] = 2;
    expect_load(&bad, CN_EVERSION);
#undef CLIENT
    cn_buf_free(&body);
    cn_buf_free(&img);
    cn_buf_free(&bad);
}

/* ---- memory ---------------------------------------------------------------- */

#ifndef UNDER_ASAN
/* Heap in use, from the arenas and from mmap: large tables come from the latter. */
static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* Resident bytes of this process: the arena is mapped outside malloc, so RSS is
 * what counts (and what the bench compares with the BEAM). */
static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (f != NULL) {
        if (fscanf(f, "%lu %lu", &size, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}
#endif

static void test_memory_per_client_skipped_under_asan(void **state)
{
    (void)state;
#ifdef UNDER_ASAN
    skip();
#else
    const unsigned n = 1000000;
    size_t before = rss_bytes();
    rl_table *t = rl_table_new(MAX, 60000);
    for (unsigned i = 0; i < n; i++) {
        id k = bin_id(100000 + i);
        ok_req(t, &k, 0, MAX - 1);
    }
    assert_int_equal(rl_client_count(t), n);
    double per_client = (double)(rss_bytes() - before) / n;
    print_message("  %u clients like \"client-123456\": %.1f bytes of RSS each\n", n, per_client);
    /* 20 bytes of entry and 16.8 of index at this count (2^21 slots). */
    assert_true(per_client <= 48.0);
    rl_table_free(t);
#endif
}

/* A burst grows a ring to max_requests; the sweep after it calms down shrinks it. */
static void test_rings_shrink_after_bursts_skipped_under_asan(void **state)
{
    (void)state;
#ifdef UNDER_ASAN
    skip();
#else
    const unsigned n = 1000;
    size_t before = heap_in_use();
    rl_table *t = rl_table_new(1000, WINDOW);
    for (unsigned i = 0; i < n; i++) {
        id k = bin_id(i);
        for (unsigned r = 0; r < 512; r++)
            check(t, &k, 0, &(uint32_t){0});
    }
    size_t burst = heap_in_use() - before;
    for (unsigned i = 0; i < n; i++) {
        id k = bin_id(i);
        ok_req(t, &k, WINDOW, 1000 - 1);
    }
    sweep_all(t, WINDOW, SIZE_MAX);
    size_t calm = heap_in_use() - before;
    print_message("  1000 clients: %zu bytes after a burst of 512, %zu after the sweep\n",
                  burst, calm);
    /* Stamps are 32 bits: a full ring of 512 is at least 2 KiB. */
    assert_true(burst > (size_t)n * 512 * 4);
    assert_true(calm < (size_t)n * 128);
    rl_table_free(t);
#endif
}

/* A client id of exactly RL_MAX_ID_BYTES is a client; one byte more is refused
 * before anything is decoded or stored, in both forms of the check. */
static void test_id_size_limit(void **state)
{
    (void)state;
    rl_table *t = rl_table_new(MAX, WINDOW);
    uint32_t remaining = 77;
    size_t cap = RL_MAX_ID_BYTES + 1;
    char *b = malloc(cap);
    assert_non_null(b);
    b[0] = ERL_BINARY_EXT;
    memset(b + 5, 'x', cap - 5);
    for (size_t len = RL_MAX_ID_BYTES; len <= cap; len++) {
        cn_set_u32(b + 1, (uint32_t)(len - 5));
        int want = len <= RL_MAX_ID_BYTES ? 1 : CN_EDECODE;
        assert_int_equal(rl_check_n(t, b, len, 0, 0, &remaining), want);
        assert_int_equal(rl_check(t, b, 0, 0, &remaining), want);
    }
    assert_int_equal(rl_client_count(t), 1);
    assert_int_equal(remaining, MAX - 2);
    free(b);
    rl_table_free(t);
}

/* A nested id whose inner fields lie is refused by the bounded check, which walks
 * the id before decoding it. */
static void test_lying_id_refused(void **state)
{
    (void)state;
    rl_table *t = rl_table_new(MAX, WINDOW);
    uint32_t remaining;
    /* {<<"ab">>} whose binary claims 4 GiB. */
    static const unsigned char lie[] = {ERL_SMALL_TUPLE_EXT, 1, ERL_BINARY_EXT, 0xFF, 0xFF, 0xFF, 0xFF, 'a', 'b'};
    assert_int_equal(rl_check_n(t, (const char *)lie, sizeof lie, 0, 0, &remaining), CN_EDECODE);
    assert_int_equal(rl_check_n(t, (const char *)lie, sizeof lie, -1, 0, &remaining), CN_EDECODE);
    assert_int_equal(rl_client_count(t), 0);
    rl_table_free(t);
}

/* ---- the compact layout ------------------------------------------------- */

/* A binary id of `len` bytes with a pattern set by `seed`, in a heap buffer. */
static char *big_bin(size_t len, unsigned seed, size_t *out_len)
{
    char *b = malloc(5 + len);
    assert_non_null(b);
    b[0] = ERL_BINARY_EXT;
    cn_set_u32(b + 1, (uint32_t)len);
    for (size_t i = 0; i < len; i++)
        b[5 + i] = (char)(seed * 31 + i * 7);
    *out_len = 5 + len;
    return b;
}

/* The same bytes inside a one-tuple: a key stored whole, not as a binary. */
static char *big_tuple(size_t len, unsigned seed, size_t *out_len)
{
    size_t n;
    char *inner = big_bin(len, seed, &n);
    char *b = malloc(2 + n);
    assert_non_null(b);
    b[0] = ERL_SMALL_TUPLE_EXT;
    b[1] = 1;
    memcpy(b + 2, inner, n);
    free(inner);
    *out_len = 2 + n;
    return b;
}

static int check_raw(rl_table *t, const char *b, size_t len, int64_t now, uint32_t *remaining)
{
    return rl_check_n(t, b, len, 0, now, remaining);
}

/* Runs one request for the binary (tuple = 0) or one-tuple (tuple = 1) id of
 * `len` bytes and asserts the reply. Returns 0 when that id is above the limit. */
static int len_req(rl_table *t, size_t len, int tuple, int64_t now, uint32_t want)
{
    if (tuple && len + 7 > RL_MAX_ID_BYTES)
        return 0;
    size_t n;
    char *b = tuple ? big_tuple(len, 1, &n) : big_bin(len, 1, &n);
    uint32_t remaining = 12345;
    int rc = check_raw(t, b, n, now, &remaining);
    free(b);
    if (rc != 1 || remaining != want)
        fail_msg("id of %zu bytes (tuple %d) at %lld: rc %d remaining %u, want %u", len, tuple,
                 (long long)now, rc, remaining, want);
    return 1;
}

/* Every key length up to 600 (the header varint grows at 16), around 2048 (where
 * it grows again), then steps up to the 64 KiB id limit, as binaries (stored
 * without their head) and as one-tuples (stored whole). Each id is one client
 * through admission, the move to a ring, the sweep back to one stamp, the
 * compaction that the moves leave work for, and a save and load. */
static void test_keys_of_every_length(void **state)
{
    (void)state;
    static size_t lens[2048];
    size_t n = 0, clients = 0;
    for (size_t l = 0; l <= 600; l++)
        lens[n++] = l;
    for (size_t l = 601; l < RL_MAX_ID_BYTES - 8; l = l * 5 / 4 + 3)
        lens[n++] = l;
    size_t edges[] = {2040, 2041, 2047, 2048, 2049, RL_MAX_ID_BYTES - 8, RL_MAX_ID_BYTES - 7,
                      RL_MAX_ID_BYTES - 6, RL_MAX_ID_BYTES - 5};
    for (size_t e = 0; e < sizeof edges / sizeof edges[0]; e++)
        lens[n++] = edges[e];
    rl_table *t = rl_table_new(MAX, WINDOW);
    for (size_t i = 0; i < n; i++)
        for (int tuple = 0; tuple < 2; tuple++)
            clients += (size_t)len_req(t, lens[i], tuple, 0, MAX - 1);
    assert_int_equal(rl_client_count(t), clients);
    for (size_t i = 0; i < n; i++)
        for (int tuple = 0; tuple < 2; tuple++)
            len_req(t, lens[i], tuple, 1, MAX - 2);
    /* At WINDOW the stamp at 0 has expired: every ring is back to one stamp (1). */
    sweep_all(t, WINDOW, 64);
    assert_int_equal(rl_client_count(t), clients);
    for (size_t i = 0; i < n; i++)
        for (int tuple = 0; tuple < 2; tuple++)
            len_req(t, lens[i], tuple, WINDOW, MAX - 2);
    cn_buf img;
    cn_buf_init(&img);
    assert_int_equal(rl_save(t, WINDOW, WALL, &img), 0);
    rl_table *u = rl_table_new(MAX, WINDOW);
    assert_int_equal(rl_load(u, img.data, img.len, WINDOW, WALL), 0);
    assert_int_equal(rl_client_count(u), clients);
    for (size_t i = 0; i < n; i++)
        for (int tuple = 0; tuple < 2; tuple++)
            len_req(u, lens[i], tuple, WINDOW, MAX - 3);
    cn_buf_free(&img);
    rl_table_free(u);
    rl_table_free(t);
}

/*
 * Growth, deletion and compaction at a size that fills several arena segments:
 * two clients in three go idle, so after the sweep every segment is mostly
 * garbage and is moved. Every survivor keeps its stamps, every idle client starts
 * over, across several doublings and a shrink of the index.
 */
static void test_growth_deletion_compaction(void **state)
{
    (void)state;
    const unsigned n = 400000;
    rl_table *t = rl_table_new(4, WINDOW);
    for (unsigned i = 0; i < n; i++) {
        id k = bin_id(i);
        ok_req(t, &k, 0, 3);
    }
    for (unsigned i = 0; i < n; i += 3) {
        id k = bin_id(i);
        ok_req(t, &k, 500, 2);
    }
    /* Budgets of 1000 leave compaction and the sweep interleaved over many slices. */
    int slices = sweep_all(t, WINDOW, 1000);
    assert_true(slices > (int)(n / 1000));
    assert_int_equal(rl_client_count(t), (n + 2) / 3);
    for (unsigned i = 0; i < n; i++) {
        id k = bin_id(i);
        ok_req(t, &k, WINDOW, i % 3 == 0 ? 2 : 3);
    }
    assert_int_equal(rl_client_count(t), n);
    /* Everyone idle: all deleted, the index shrinks, the table still works. */
    sweep_all(t, 3 * WINDOW, 777);
    assert_int_equal(rl_client_count(t), 0);
    sweep_all(t, 3 * WINDOW, 777);
    for (unsigned i = 0; i < 100; i++) {
        id k = bin_id(i);
        ok_req(t, &k, 3 * WINDOW, 3);
        ok_req(t, &k, 3 * WINDOW, 2);
    }
    rl_table_free(t);
}

/* Stamps are milliseconds modulo 2^32: windows that straddle a wrap, and clocks
 * far from zero in either direction, behave as with 64-bit time. */
static void test_stamps_across_wrap(void **state)
{
    (void)state;
    const int64_t bases[] = {((int64_t)1 << 32) - 300, ((int64_t)1 << 31) - 300,
                             ((int64_t)7 << 32) - 1, -((int64_t)1 << 32) - 500,
                             INT64_MAX / 2, -(INT64_MAX / 2)};
    for (size_t b = 0; b < sizeof bases / sizeof bases[0]; b++) {
        int64_t t0 = bases[b];
        rl_table *t = rl_table_new(3, WINDOW);
        id a = bin_id(1), c = bin_id(2);
        ok_req(t, &a, t0, 2);
        ok_req(t, &a, t0 + 400, 1);
        ok_req(t, &a, t0 + 800, 0);
        limited_req(t, &a, t0 + WINDOW - 1);
        ok_req(t, &a, t0 + WINDOW, 0);
        ok_req(t, &c, t0 + 5, 2);
        /* One inline stamp one millisecond before it expires, and at expiry. */
        sweep_all(t, t0 + WINDOW + 4, SIZE_MAX);
        assert_int_equal(rl_client_count(t), 2);
        sweep_all(t, t0 + WINDOW + 5, SIZE_MAX);
        assert_int_equal(rl_client_count(t), 1);
        cn_buf img;
        cn_buf_init(&img);
        assert_int_equal(rl_save(t, t0 + WINDOW + 5, WALL, &img), 0);
        rl_table *u = rl_table_new(3, WINDOW);
        /* Loaded into a process whose clock is on the other side of a wrap. */
        int64_t t1 = ((int64_t)3 << 32) - 100;
        assert_int_equal(rl_load(u, img.data, img.len, t1, WALL), 0);
        /* A's stamps were 605, 205 and 5 ms old. */
        limited_req(u, &a, t1 + 394);
        ok_req(u, &a, t1 + 395, 0);
        cn_buf_free(&img);
        rl_table_free(u);
        rl_table_free(t);
    }
}

/* The 32-bit tag the table computes for a binary id: XXH3 of the bytes with seed 2
 * (rl_table.c's E_BIN), low half. Only used to find ids that collide. */
static uint32_t bin_tag(unsigned n)
{
    id k = bin_id(n);
    return (uint32_t)XXH3_64bits_withSeed(k.b + 5, k.len - 5, 2);
}

typedef struct tagged {
    uint32_t tag;
    unsigned n;
} tagged;

static int by_tag(const void *a, const void *b)
{
    const tagged *x = a, *y = b;
    return x->tag < y->tag ? -1 : x->tag > y->tag;
}

/* Ids with identical 32-bit tags (found by the birthday bound among 300000) are
 * distinct clients, and deleting one of them keeps the other. */
static void test_identical_hashes(void **state)
{
    (void)state;
    const unsigned n = 300000;
    tagged *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (unsigned i = 0; i < n; i++)
        v[i] = (tagged){bin_tag(i), i};
    qsort(v, n, sizeof *v, by_tag);
    unsigned pairs = 0;
    rl_table *t = rl_table_new(3, WINDOW);
    for (unsigned i = 1; i < n; i++) {
        if (v[i].tag != v[i - 1].tag)
            continue;
        id a = bin_id(v[i - 1].n), b = bin_id(v[i].n);
        int64_t now = 10 * pairs;
        ok_req(t, &a, now, 2);
        ok_req(t, &a, now, 1);
        ok_req(t, &b, now + 1, 2);
        ok_req(t, &a, now + 2, 0);
        limited_req(t, &a, now + 3);
        ok_req(t, &b, now + 3, 1);
        pairs++;
    }
    print_message("  %u pairs of ids with the same tag\n", pairs);
    assert_true(pairs >= 2);
    /* The second of each pair asks again after every first one's last request. */
    int64_t late = 10 * (int64_t)pairs + 5;
    for (unsigned i = 1; i < n; i++) {
        if (v[i].tag == v[i - 1].tag) {
            id b = bin_id(v[i].n);
            ok_req(t, &b, late, 0);
        }
    }
    /* The sweep deletes the first of each pair, whose stamps have all expired, and
     * must leave the second reachable with its one live stamp. */
    sweep_all(t, late + WINDOW - 1, SIZE_MAX);
    assert_int_equal(rl_client_count(t), pairs);
    for (unsigned i = 1; i < n; i++) {
        if (v[i].tag != v[i - 1].tag)
            continue;
        id a = bin_id(v[i - 1].n), b = bin_id(v[i].n);
        ok_req(t, &b, late + WINDOW - 1, 1);
        ok_req(t, &a, late + WINDOW - 1, 2);
    }
    free(v);
    rl_table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_remaining_counts_down),
        cmocka_unit_test(test_window_boundary),
        cmocka_unit_test(test_rejected_requests_not_counted),
        cmocka_unit_test(test_max_requests_one),
        cmocka_unit_test(test_clients_are_independent),
        cmocka_unit_test(test_same_term_is_one_client),
        cmocka_unit_test(test_int_and_float_are_two_clients),
        cmocka_unit_test(test_malformed_ids),
        cmocka_unit_test(test_id_size_limit),
        cmocka_unit_test(test_lying_id_refused),
        cmocka_unit_test(test_keys_of_every_length),
        cmocka_unit_test(test_growth_deletion_compaction),
        cmocka_unit_test(test_stamps_across_wrap),
        cmocka_unit_test(test_identical_hashes),
        cmocka_unit_test(test_many_clients_with_sweeps),
        cmocka_unit_test(test_sliced_sweep),
        cmocka_unit_test(test_sweep_across_growth),
        cmocka_unit_test(test_save_and_load),
        cmocka_unit_test(test_save_load_many),
        cmocka_unit_test(test_corrupt_images),
        cmocka_unit_test(test_memory_per_client_skipped_under_asan),
        cmocka_unit_test(test_rings_shrink_after_bursts_skipped_under_asan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

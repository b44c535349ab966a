/*
 * Issue 9, end to end over the fake peer: client ids a hostile peer may send to
 * the rate limiter, and what the node answers. The units behind them are tested
 * in test_term.c (the walker), test_term_key.c (the canonical key, its bounded
 * work) and test_rl_table.c (the size limit).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cnode/protocol.h"
#include "genserver/rate_limiter.h"
#include "genserver/rl_table.h"
#include "test/fake_peer.h"

#define NAME "rate_limiter"

typedef struct fx {
    fake_peer fp;
    rate_limiter_config cfg;    /* borrowed by the server for its life */
    gs_server *gs;
    unsigned next_ref;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    if (f == NULL || fp_setup(&f->fp, "k", "k", FP_FLAGS_ALIAS) != 0)
        return -1;
    f->cfg = (rate_limiter_config){.max_requests = 100, .window_ms = 60000};
    if (rate_limiter_start(f->fp.node, &f->cfg, NAME, NULL, &f->gs) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    if (cn_proc_whereis(f->fp.node, NAME))
        gs_stop(f->gs, "shutdown");
    fp_teardown(&f->fp);
    free(f);
    return 0;
}

/* GenServer.call(rate_limiter, {:check_rate, Id}) with Id's bytes as given. */
static void call_with_id(fx *f, const void *id, size_t len)
{
    ei_x_buff x;
    ei_x_new(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "check_rate");
    ei_x_append_buf(&x, id, (int)len);
    fp_request(&f->fp, "$gen_call", 1, ++f->next_ref, NAME, x.buff, (size_t)x.index);
    ei_x_free(&x);
}

static void expect_reply(fx *f, const char *want)
{
    char *got = fp_next_reply_text(&f->fp);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

/* :"日本" is a client like any other: itself on the second call, not another atom. */
static void utf8_atom_id(void **state)
{
    fx *f = *state;
    static const unsigned char nihon[] = {ERL_SMALL_ATOM_UTF8_EXT, 6, 0xE6, 0x97, 0xA5, 0xE6, 0x9C, 0xAC};
    static const unsigned char nihon_long[] = {ERL_ATOM_UTF8_EXT, 0, 6, 0xE6, 0x97, 0xA5, 0xE6, 0x9C, 0xAC};
    static const unsigned char nichi[] = {ERL_SMALL_ATOM_UTF8_EXT, 3, 0xE6, 0x97, 0xA5};
    call_with_id(f, nihon, sizeof nihon);
    expect_reply(f, "{ok,99}");
    call_with_id(f, nihon_long, sizeof nihon_long);
    expect_reply(f, "{ok,98}");
    call_with_id(f, nichi, sizeof nichi);
    expect_reply(f, "{ok,99}");
}

/* An id above RL_MAX_ID_BYTES answers bad_client_id and is not counted: the same
 * id cut to the limit is a fresh client afterwards. */
static void oversized_id(void **state)
{
    fx *f = *state;
    size_t len = RL_MAX_ID_BYTES + 1;
    unsigned char *b = malloc(len);
    assert_non_null(b);
    b[0] = ERL_BINARY_EXT;
    cn_set_u32(b + 1, (uint32_t)(len - 5));
    memset(b + 5, 'x', len - 5);
    call_with_id(f, b, len);
    expect_reply(f, "{error,bad_client_id}");
    cn_set_u32(b + 1, (uint32_t)(len - 6));
    call_with_id(f, b, len - 1);
    expect_reply(f, "{ok,99}");
    free(b);
}

/*
 * The remote segfault: a fun whose Size covers the frame but whose module atom
 * claims 200 bytes. The frame is refused as malformed (the connection drops, as
 * for any malformed frame) and the server is untouched.
 */
static void lying_fun_id(void **state)
{
    fx *f = *state;
    unsigned char fun[] = {
        ERL_NEW_FUN_EXT, 0, 0, 0, 62, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        0, 0, 0, 0, 0, 0, 0, 1, ERL_SMALL_ATOM_UTF8_EXT, 1, 'm', ERL_SMALL_INTEGER_EXT, 0,
        ERL_INTEGER_EXT, 0, 0, 0, 5, ERL_NEW_PID_EXT, ERL_SMALL_ATOM_UTF8_EXT, 1, 'n',
        0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, ERL_BINARY_EXT, 0, 0, 0, 2, 'x', 'y'};
    assert_int_equal(cn_get_u32(fun + 1), sizeof fun - 1);
    /* Honest, the fun is a client id like any other. */
    call_with_id(f, fun, sizeof fun);
    expect_reply(f, "{ok,99}");
    fun[31] = 200;
    call_with_id(f, fun, sizeof fun);
    assert_null(fp_next_reply_text(&f->fp));
    assert_true(f->fp.closed);
    assert_non_null(cn_proc_whereis(f->fp.node, NAME));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(utf8_atom_id, setup, teardown),
        cmocka_unit_test_setup_teardown(oversized_id, setup, teardown),
        cmocka_unit_test_setup_teardown(lying_fun_id, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

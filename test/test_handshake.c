/*
 * Unit tests of the handshake state machine: the two roles against each other
 * over in-memory queues (everything at once, byte by byte, odd chunks), scripted
 * peers for the exact OTP wire images, and every refusal path.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cnode/buf.h"
#include "cnode/error.h"
#include "cnode/handshake.h"
#include "cnode/protocol.h"

#define ACC_NAME "cnode@127.0.0.1"
#define CON_NAME "probe@127.0.0.1"
#define COOKIE "secret"

/* A fixed challenge source, so the bytes we send are reproducible. */
struct fixed_random {
    uint32_t values[4];
    int next;
};

static uint32_t fixed_random32(void *ctx)
{
    struct fixed_random *r = ctx;
    return r->values[r->next++ % 4];
}

static const char *status_from_ctx(void *ctx, const char *peer_name)
{
    (void)peer_name;
    return ctx;
}

static cn_hs_config config(cn_hs_role role, const char *name, const char *cookie,
                           struct fixed_random *r)
{
    cn_hs_config c = {
        .role = role,
        .our_name = name,
        .cookie = cookie,
        .our_flags = CN_DFLAGS,
        .our_creation = role == CN_HS_ACCEPT ? 0x11223344u : 0x55667788u,
        /* Without a fixed sequence, the module's own source (OpenSSL) is used. */
        .random32 = r != NULL ? fixed_random32 : NULL,
        .random_ctx = r,
    };
    return c;
}

/* One end of an in-memory connection: what it has received and what it sent. */
struct side {
    cn_hs hs;
    cn_buf in;  /* received, not yet consumed by the machine */
    cn_buf out; /* sent, not yet delivered to the other side */
    int err;
};

static void side_init(struct side *s, const cn_hs_config *cfg)
{
    assert_int_equal(cn_hs_init(&s->hs, cfg), 0);
    cn_buf_init(&s->in);
    cn_buf_init(&s->out);
    s->err = 0;
}

static void side_free(struct side *s)
{
    cn_buf_free(&s->in);
    cn_buf_free(&s->out);
}

/* Moves at most chunk bytes from one side's output to the other's input and feeds them. */
static int deliver(struct side *from, struct side *to, size_t chunk)
{
    if (from->out.len == 0 || to->err != 0)
        return 0;
    size_t n = from->out.len < chunk ? from->out.len : chunk;
    assert_int_equal(cn_buf_append(&to->in, from->out.data, n), 0);
    cn_buf_consume(&from->out, n);
    int rc = cn_hs_feed(&to->hs, to->in.data, to->in.len, &to->out);
    if (rc < 0)
        to->err = rc;
    else
        cn_buf_consume(&to->in, (size_t)rc);
    return 1;
}

static void run_pair(struct side *acc, struct side *con, size_t chunk)
{
    assert_int_equal(cn_hs_start(&con->hs, &con->out), 0);
    for (int i = 0; i < 100000; i++) {
        int moved = deliver(con, acc, chunk);
        moved |= deliver(acc, con, chunk);
        if (!moved)
            return;
    }
    fail_msg("handshake did not settle");
}

static void assert_pair_done(struct side *acc, struct side *con)
{
    assert_int_equal(acc->err, 0);
    assert_int_equal(con->err, 0);
    assert_true(cn_hs_done(&acc->hs));
    assert_true(cn_hs_done(&con->hs));
    assert_string_equal(acc->hs.peer_name, CON_NAME);
    assert_string_equal(con->hs.peer_name, ACC_NAME);
    assert_int_equal(acc->hs.peer_creation, 0x55667788u);
    assert_int_equal(con->hs.peer_creation, 0x11223344u);
    assert_true(acc->hs.peer_flags == CN_DFLAGS);
    assert_true(con->hs.flags == CN_DFLAGS);
    assert_int_equal(acc->in.len, 0);
    assert_int_equal(con->in.len, 0);
    assert_int_equal(cn_hs_error(&acc->hs)[0], '\0');
}

static void pair_with_chunk(size_t chunk)
{
    struct fixed_random ra = {{0xdeadbeef, 1, 2, 3}, 0}, rc = {{4294967295u, 7, 8, 9}, 0};
    cn_hs_config ac = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, &ra);
    cn_hs_config cc = config(CN_HS_CONNECT, CON_NAME, COOKIE, &rc);
    cc.expect_peer = ACC_NAME;
    struct side acc, con;
    side_init(&acc, &ac);
    side_init(&con, &cc);
    run_pair(&acc, &con, chunk);
    assert_pair_done(&acc, &con);
    side_free(&acc);
    side_free(&con);
}

static void test_pair_all_at_once(void **state)
{
    (void)state;
    pair_with_chunk(SIZE_MAX);
}

static void test_pair_byte_by_byte(void **state)
{
    (void)state;
    pair_with_chunk(1);
}

static void test_pair_odd_chunks(void **state)
{
    (void)state;
    pair_with_chunk(2);
    pair_with_chunk(3);
    pair_with_chunk(7);
    pair_with_chunk(13);
}

/* The default challenge source (OpenSSL) also works end to end. */
static void test_pair_default_random(void **state)
{
    (void)state;
    cn_hs_config ac = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, NULL);
    cn_hs_config cc = config(CN_HS_CONNECT, CON_NAME, COOKIE, NULL);
    struct side acc, con;
    side_init(&acc, &ac);
    side_init(&con, &cc);
    run_pair(&acc, &con, SIZE_MAX);
    assert_pair_done(&acc, &con);
    side_free(&acc);
    side_free(&con);
}

/* Expected values computed by erlang:md5(Cookie ++ integer_to_list(Challenge)) on OTP 25. */
static void test_digest_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *cookie;
        uint32_t challenge;
        unsigned char md5[16];
    } v[] = {
        {"cookie", 123456,
         {188, 120, 105, 197, 140, 75, 14, 203, 182, 125, 150, 213, 3, 75, 38, 39}},
        {"secret", 0, {23, 94, 199, 122, 127, 99, 8, 37, 144, 152, 125, 13, 139, 5, 26, 255}},
        {"secret", 4294967295u,
         {93, 253, 24, 30, 105, 170, 88, 124, 200, 18, 235, 51, 62, 101, 54, 182}},
        {"t6337e92b96f62d300df01457", 2718281828u,
         {121, 151, 25, 215, 174, 54, 242, 163, 24, 178, 113, 195, 172, 52, 44, 230}},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        unsigned char d[CN_HS_DIGEST_LEN];
        assert_int_equal(cn_hs_digest(v[i].cookie, v[i].challenge, d), 0);
        assert_memory_equal(d, v[i].md5, 16);
    }
}

/* ---- scripted peers ------------------------------------------------------- */

/* Appends one handshake message (length prefix added) built from raw bytes. */
static void put_msg(cn_buf *b, const void *p, size_t n)
{
    assert_int_equal(cn_buf_put_u16(b, (uint16_t)n), 0);
    assert_int_equal(cn_buf_append(b, p, n), 0);
}

static void put_status(cn_buf *b, const char *text)
{
    char m[80];
    m[0] = 's';
    memcpy(m + 1, text, strlen(text));
    put_msg(b, m, strlen(text) + 1);
}

/* An 'N' challenge as an OTP 25 acceptor sends it. */
static void put_challenge(cn_buf *b, uint64_t flags, uint32_t challenge, const char *name)
{
    cn_buf m;
    cn_buf_init(&m);
    cn_buf_put_u8(&m, 'N');
    cn_buf_put_u64(&m, flags);
    cn_buf_put_u32(&m, challenge);
    cn_buf_put_u32(&m, 0x0a0b0c0d);
    cn_buf_put_u16(&m, (uint16_t)strlen(name));
    cn_buf_append(&m, name, strlen(name));
    put_msg(b, m.data, m.len);
    cn_buf_free(&m);
}

static void put_digest_msg(cn_buf *b, char tag, const uint32_t *challenge, const char *cookie,
                           uint32_t of)
{
    unsigned char m[21];
    size_t n = 0;
    m[n++] = (unsigned char)tag;
    if (challenge != NULL) {
        cn_set_u32(m + n, *challenge);
        n += 4;
    }
    assert_int_equal(cn_hs_digest(cookie, of, m + n), 0);
    put_msg(b, m, n + 16);
}

/* Feeds the whole buffer and expects every byte consumed. */
static void feed_all(cn_hs *hs, cn_buf *in, cn_buf *out)
{
    int rc = cn_hs_feed(hs, in->data, in->len, out);
    assert_int_equal(rc, (int)in->len);
    cn_buf_reset(in);
}

static void feed_expect(cn_hs *hs, cn_buf *in, cn_buf *out, int want)
{
    int rc = cn_hs_feed(hs, in->data, in->len, out);
    assert_int_equal(rc, want);
    cn_buf_reset(in);
}

/* Checks that out starts with a status message carrying text, and drops it. */
static void expect_status(cn_buf *out, const char *text)
{
    size_t tl = strlen(text);
    assert_true(out->len >= tl + 3);
    assert_int_equal(cn_get_u16(out->data), tl + 1);
    assert_int_equal(out->data[2], 's');
    assert_memory_equal(out->data + 3, text, tl);
    cn_buf_consume(out, tl + 3);
}

/* Checks our 'N' challenge at the front of out; returns the challenge and drops it. */
static uint32_t expect_challenge(cn_buf *out, uint32_t want_challenge)
{
    size_t nlen = strlen(ACC_NAME);
    assert_true(out->len >= 2 + 19 + nlen);
    assert_int_equal(cn_get_u16(out->data), 19 + nlen);
    const char *m = out->data + 2;
    assert_int_equal(m[0], 'N');
    assert_true(cn_get_u64(m + 1) == CN_DFLAGS);
    uint32_t ch = cn_get_u32(m + 9);
    assert_int_equal(ch, want_challenge);
    assert_int_equal(cn_get_u32(m + 13), 0x11223344u);
    assert_int_equal(cn_get_u16(m + 17), nlen);
    assert_memory_equal(m + 19, ACC_NAME, nlen);
    cn_buf_consume(out, 2 + 19 + nlen);
    return ch;
}

static void expect_ack(cn_buf *out, uint32_t of)
{
    unsigned char d[16];
    assert_int_equal(cn_hs_digest(COOKIE, of, d), 0);
    assert_int_equal(out->len, 2 + 17);
    assert_int_equal(cn_get_u16(out->data), 17);
    assert_int_equal(out->data[2], 'a');
    assert_memory_equal(out->data + 3, d, 16);
    cn_buf_consume(out, 19);
}

/*
 * The send_name an OTP 25 node (erts 13.1.5, this machine) really sent for
 * net_adm:ping from probe@127.0.0.1, captured on the wire with its length prefix:
 * flags 0x0000000d07df7fbd (all mandatory flags plus MANDATORY_25_DIGEST, SPAWN,
 * V4_NC, ALIAS), creation 0x6b06cc62.
 */
static const unsigned char otp25_send_name[] = {
    0x00, 0x1e, 'N', 0x00, 0x00, 0x00, 0x0d, 0x07, 0xdf, 0x7f, 0xbd, 0x6b, 0x06, 0xcc, 0x62,
    0x00, 0x0f, 'p', 'r', 'o', 'b', 'e', '@', '1', '2', '7', '.', '0', '.', '0', '.', '1'};

static void test_accept_otp25_send_name(void **state)
{
    (void)state;
    struct fixed_random r = {{0xcafef00d, 0, 0, 0}, 0};
    cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, &r);
    cn_hs hs;
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);

    cn_buf_append(&in, otp25_send_name, sizeof otp25_send_name);
    feed_all(&hs, &in, &out);
    assert_string_equal(hs.peer_name, "probe@127.0.0.1");
    assert_int_equal(hs.peer_creation, 0x6b06cc62u);
    assert_true(hs.peer_flags == 0x0000000d07df7fbdULL);
    expect_status(&out, "ok");
    uint32_t ours = expect_challenge(&out, 0xcafef00d);
    assert_int_equal(out.len, 0);

    /* The reply is followed by the first distribution frame: a tick (four zeros). */
    uint32_t theirs = 987654321;
    put_digest_msg(&in, 'r', &theirs, COOKIE, ours);
    cn_buf_append(&in, "\0\0\0\0", 4);
    feed_expect(&hs, &in, &out, 2 + 21);
    assert_true(cn_hs_done(&hs));
    expect_ack(&out, theirs);
    assert_true(hs.flags == (CN_DFLAGS & 0x0000000d07df7fbdULL));

    /* Done means done: nothing more is consumed. */
    assert_int_equal(cn_hs_feed(&hs, "\0\0\0\0", 4, &out), 0);
    assert_int_equal(out.len, 0);
    cn_buf_free(&in);
    cn_buf_free(&out);
}

/* An old 'n' send_name (OTP 23/24 without epmd) with DFLAG_HANDSHAKE_23. */
static void put_old_name(cn_buf *b, uint32_t flags, const char *name)
{
    cn_buf m;
    cn_buf_init(&m);
    cn_buf_put_u8(&m, 'n');
    cn_buf_put_u16(&m, 5);
    cn_buf_put_u32(&m, flags);
    cn_buf_append(&m, name, strlen(name));
    put_msg(b, m.data, m.len);
    cn_buf_free(&m);
}

static void put_complement(cn_buf *b, uint32_t flags_high, uint32_t creation)
{
    unsigned char m[9] = {'c'};
    cn_set_u32(m + 1, flags_high);
    cn_set_u32(m + 5, creation);
    put_msg(b, m, sizeof m);
}

static void test_accept_old_name_with_complement(void **state)
{
    (void)state;
    struct fixed_random r = {{42, 0, 0, 0}, 0};
    cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, &r);
    cn_hs hs;
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);

    put_old_name(&in, (uint32_t)CN_DFLAGS, "old@127.0.0.1");
    feed_all(&hs, &in, &out);
    expect_status(&out, "ok");
    uint32_t ours = expect_challenge(&out, 42);
    assert_true(hs.peer_flags == (CN_DFLAGS & 0xffffffffULL));

    /* Complement and reply arrive together, split in the middle of the reply. */
    put_complement(&in, (uint32_t)(CN_DFLAGS >> 32), 0x01020304);
    uint32_t theirs = 7;
    put_digest_msg(&in, 'r', &theirs, COOKIE, ours);
    size_t whole = in.len;
    assert_int_equal(cn_hs_feed(&hs, in.data, whole - 5, &out), 2 + 9);
    assert_false(cn_hs_done(&hs));
    assert_int_equal(hs.peer_creation, 0x01020304u);
    assert_true(hs.peer_flags == CN_DFLAGS);
    cn_buf_consume(&in, 2 + 9);
    feed_all(&hs, &in, &out);
    assert_true(cn_hs_done(&hs));
    expect_ack(&out, theirs);
    assert_string_equal(hs.peer_name, "old@127.0.0.1");
    cn_buf_free(&in);
    cn_buf_free(&out);
}

static void test_accept_old_name_reply_without_complement(void **state)
{
    (void)state;
    struct fixed_random r = {{42, 0, 0, 0}, 0};
    cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, &r);
    cn_hs hs;
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    put_old_name(&in, (uint32_t)CN_DFLAGS, "old@127.0.0.1");
    feed_all(&hs, &in, &out);
    uint32_t theirs = 7;
    put_digest_msg(&in, 'r', &theirs, COOKIE, 42);
    feed_expect(&hs, &in, &out, CN_EPROTO);
    /* The error is sticky. */
    assert_int_equal(cn_hs_feed(&hs, "", 0, &out), CN_EPROTO);
    assert_non_null(strstr(cn_hs_error(&hs), "complement"));
    cn_buf_free(&in);
    cn_buf_free(&out);
}

/* A pre-OTP 23 peer (no HANDSHAKE_23) lacks an OTP 25 mandatory flag: not_allowed. */
static void test_accept_old_name_without_handshake23(void **state)
{
    (void)state;
    cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, NULL);
    cn_hs hs;
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    put_old_name(&in, (uint32_t)(CN_DFLAGS & ~(DFLAG_HANDSHAKE_23 | DFLAG_MANDATORY_25_DIGEST)), "r22@127.0.0.1");
    feed_expect(&hs, &in, &out, CN_EPROTO);
    expect_status(&out, "not_allowed");
    assert_int_equal(out.len, 0);
    assert_non_null(strstr(cn_hs_error(&hs), "mandatory"));
    cn_buf_free(&in);
    cn_buf_free(&out);
}

/* A complement of the wrong size is refused. */
static void test_accept_complement_malformed(void **state)
{
    (void)state;
    cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, NULL);
    cn_hs hs;
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    put_old_name(&in, (uint32_t)CN_DFLAGS, "old@127.0.0.1");
    feed_all(&hs, &in, &out);
    unsigned char bad[8] = {'c', 0, 0, 0, 0, 0, 0, 0};
    put_msg(&in, bad, sizeof bad); /* one byte short */
    feed_expect(&hs, &in, &out, CN_EPROTO);
    cn_buf_free(&in);
    cn_buf_free(&out);
}

static void send_name_with_flags(cn_buf *b, uint64_t flags, const char *name)
{
    cn_buf m;
    cn_buf_init(&m);
    cn_buf_put_u8(&m, 'N');
    cn_buf_put_u64(&m, flags);
    cn_buf_put_u32(&m, 1);
    cn_buf_put_u16(&m, (uint16_t)strlen(name));
    cn_buf_append(&m, name, strlen(name));
    put_msg(b, m.data, m.len);
    cn_buf_free(&m);
}

static void test_accept_missing_mandatory_flags(void **state)
{
    (void)state;
    cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, NULL);
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);

    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    /* A peer that lacks a mandatory flag has no digest bit either. */
    send_name_with_flags(&in, CN_DFLAGS & ~(DFLAG_BIG_CREATION | DFLAG_MANDATORY_25_DIGEST), CON_NAME);
    feed_expect(&hs, &in, &out, CN_EPROTO);
    expect_status(&out, "not_allowed");

    /* The single MANDATORY_25_DIGEST bit (0x4000000) stands for the whole set. */
    struct fixed_random r = {{5, 0, 0, 0}, 0};
    cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, &r);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    send_name_with_flags(&in, 0x4000000ULL | DFLAG_PUBLISHED, CON_NAME);
    feed_all(&hs, &in, &out);
    expect_status(&out, "ok");
    assert_true((hs.peer_flags & DFLAG_MANDATORY_25) == DFLAG_MANDATORY_25);
    cn_buf_free(&in);
    cn_buf_free(&out);
}

static void test_connect_missing_mandatory_flags(void **state)
{
    (void)state;
    cn_hs_config cfg = config(CN_HS_CONNECT, CON_NAME, COOKIE, NULL);
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    assert_int_equal(cn_hs_start(&hs, &out), 0);
    cn_buf_reset(&out);
    put_status(&in, "ok");
    put_challenge(&in, CN_DFLAGS & ~(DFLAG_MAP_TAG | DFLAG_MANDATORY_25_DIGEST), 1, ACC_NAME);
    feed_expect(&hs, &in, &out, CN_EPROTO);
    assert_int_equal(out.len, 0);
    cn_buf_free(&in);
    cn_buf_free(&out);
}

/*
 * What OTP 28 and 29 advertise, from erts' DFLAG_DIST_DEFAULT (erts_internal:get_dflags()
 * on 29.1.2: 0x6d07df7fbc): MANDATORY_25_DIGEST, ALIAS, ALTACT_SIG and 29's
 * NATIVE_RECORDS (bit 38) among them. We advertise the digest and ALTACT_SIG too.
 */
#define OTP29_FLAGS 0x6d07df7fbcULL
#define DFLAG_NATIVE_RECORDS (0x40ULL << 32)

static void test_we_advertise_altact_sig_and_digest(void **state)
{
    (void)state;
    assert_true((CN_DFLAGS & DFLAG_ALTACT_SIG) == (1ULL << 37));
    assert_true((CN_DFLAGS & DFLAG_MANDATORY_25_DIGEST) == 0x4000000ULL);
    assert_true((CN_DFLAGS & DFLAG_NATIVE_RECORDS) == 0);
    cn_hs_config cfg = config(CN_HS_CONNECT, CON_NAME, COOKIE, NULL);
    cn_hs hs;
    cn_buf out;
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    assert_int_equal(cn_hs_start(&hs, &out), 0);
    /* send_name: length, 'N', flags:8 ... */
    assert_true(out.len >= 2 + 9);
    assert_int_equal(out.data[2], 'N');
    uint64_t sent = cn_get_u64(out.data + 3);
    assert_true((sent & DFLAG_ALTACT_SIG) != 0);
    assert_true((sent & DFLAG_MANDATORY_25_DIGEST) != 0);
    cn_buf_free(&out);
}

/* Against an OTP 29 acceptor's flags, ALTACT_SIG is negotiated and NATIVE_RECORDS is not. */
static void test_connect_otp29_negotiates_altact_sig(void **state)
{
    (void)state;
    struct fixed_random r = {{9, 0, 0, 0}, 0};
    cn_hs_config cfg = config(CN_HS_CONNECT, CON_NAME, COOKIE, &r);
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    assert_int_equal(cn_hs_start(&hs, &out), 0);
    cn_buf_reset(&out);
    put_status(&in, "ok");
    put_challenge(&in, OTP29_FLAGS, 1, ACC_NAME);
    feed_all(&hs, &in, &out);
    put_digest_msg(&in, 'a', NULL, COOKIE, 9);
    feed_all(&hs, &in, &out);
    assert_true(cn_hs_done(&hs));
    assert_true((hs.flags & DFLAG_ALTACT_SIG) != 0);
    assert_true((hs.flags & DFLAG_ALIAS) != 0);
    assert_true((hs.flags & DFLAG_NATIVE_RECORDS) == 0);
    cn_buf_free(&in);
    cn_buf_free(&out);
}

/*
 * The digest documented as becoming mandatory: a peer that sends it in place of
 * the eleven OTP 25 mandatory flags is accepted in every message that carries
 * flags (the challenge when we connect, send_name and old 'n' when we accept),
 * as dist_util:expand_mandatory_25_flag/1 accepts it.
 */
#define DIGEST_ONLY(flags) (((flags) & ~DFLAG_MANDATORY_25) | DFLAG_MANDATORY_25_DIGEST)

static void test_connect_digest_only_peer(void **state)
{
    (void)state;
    struct fixed_random r = {{9, 0, 0, 0}, 0};
    cn_hs_config cfg = config(CN_HS_CONNECT, CON_NAME, COOKIE, &r);
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    assert_int_equal(cn_hs_start(&hs, &out), 0);
    cn_buf_reset(&out);
    put_status(&in, "ok");
    put_challenge(&in, DIGEST_ONLY(OTP29_FLAGS), 1, ACC_NAME);
    feed_all(&hs, &in, &out);
    assert_true(out.len > 0 && out.data[2] == 'r');
    assert_true((hs.peer_flags & DFLAG_MANDATORY_25) == DFLAG_MANDATORY_25);
    put_digest_msg(&in, 'a', NULL, COOKIE, 9);
    feed_all(&hs, &in, &out);
    assert_true(cn_hs_done(&hs));
    assert_true((hs.flags & DFLAG_ALTACT_SIG) != 0);
    cn_buf_free(&in);
    cn_buf_free(&out);
}

static void test_accept_digest_only_peer(void **state)
{
    (void)state;
    struct fixed_random r = {{5, 0, 0, 0}, 0};
    cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, &r);
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    send_name_with_flags(&in, DIGEST_ONLY(OTP29_FLAGS), CON_NAME);
    feed_all(&hs, &in, &out);
    expect_status(&out, "ok");
    uint32_t ours = expect_challenge(&out, 5);
    uint32_t theirs = 11;
    put_digest_msg(&in, 'r', &theirs, COOKIE, ours);
    feed_all(&hs, &in, &out);
    assert_true(cn_hs_done(&hs));
    expect_ack(&out, theirs);
    assert_true((hs.flags & DFLAG_ALTACT_SIG) != 0);
    assert_true((hs.peer_flags & DFLAG_MANDATORY_25) == DFLAG_MANDATORY_25);

    /* The old 'n' form: the digest is in the low 32 bits, ALTACT_SIG in the complement. */
    r.next = 0;
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    put_old_name(&in, (uint32_t)DIGEST_ONLY(OTP29_FLAGS), "old@127.0.0.1");
    feed_all(&hs, &in, &out);
    expect_status(&out, "ok");
    ours = expect_challenge(&out, 5);
    put_complement(&in, (uint32_t)(OTP29_FLAGS >> 32), 0x01020304);
    put_digest_msg(&in, 'r', &theirs, COOKIE, ours);
    feed_all(&hs, &in, &out);
    assert_true(cn_hs_done(&hs));
    expect_ack(&out, theirs);
    assert_true((hs.flags & DFLAG_ALTACT_SIG) != 0);
    cn_buf_free(&in);
    cn_buf_free(&out);
}

/* Without the digest, a peer missing one OTP 25 flag is still refused (the digest is no wildcard). */
static void test_digest_absent_still_checks_each_flag(void **state)
{
    (void)state;
    cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, NULL);
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    send_name_with_flags(&in, (OTP29_FLAGS & ~(DFLAG_MANDATORY_25_DIGEST | DFLAG_UTF8_ATOMS)), CON_NAME);
    feed_expect(&hs, &in, &out, CN_EPROTO);
    expect_status(&out, "not_allowed");
    cn_buf_free(&in);
    cn_buf_free(&out);
}

/* Runs the pair with the given acceptor status; returns with both sides settled. */
static void pair_with_status(const char *status, int alive_continue, struct side *acc,
                             struct side *con)
{
    struct fixed_random ra = {{1, 2, 3, 4}, 0}, rc = {{5, 6, 7, 8}, 0};
    cn_hs_config ac = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, &ra);
    ac.status_for = status_from_ctx;
    ac.status_ctx = (void *)status;
    cn_hs_config cc = config(CN_HS_CONNECT, CON_NAME, COOKIE, &rc);
    cc.alive_continue = alive_continue;
    side_init(acc, &ac);
    side_init(con, &cc);
    run_pair(acc, con, 1);
}

static void test_status_refusals(void **state)
{
    (void)state;
    static const char *const refusals[] = {"nok", "not_allowed"};
    for (size_t i = 0; i < 2; i++) {
        struct side acc, con;
        pair_with_status(refusals[i], 0, &acc, &con);
        assert_int_equal(acc.err, CN_ENOTALIVE);
        assert_int_equal(con.err, CN_ENOTALIVE);
        assert_non_null(strstr(cn_hs_error(&con.hs), refusals[i]));
        assert_non_null(strstr(cn_hs_error(&acc.hs), CON_NAME));
        side_free(&acc);
        side_free(&con);
    }
}

static void test_status_alive(void **state)
{
    (void)state;
    struct side acc, con;
    /* We answer "false": both sides give up. */
    pair_with_status("alive", 0, &acc, &con);
    assert_int_equal(acc.err, CN_ENOTALIVE);
    assert_int_equal(con.err, CN_ENOTALIVE);
    side_free(&acc);
    side_free(&con);
    /* We answer "true": the handshake goes on. */
    pair_with_status("alive", 1, &acc, &con);
    assert_pair_done(&acc, &con);
    side_free(&acc);
    side_free(&con);
    pair_with_status("ok_simultaneous", 0, &acc, &con);
    assert_pair_done(&acc, &con);
    side_free(&acc);
    side_free(&con);
}

static void test_accept_alive_bad_reply(void **state)
{
    (void)state;
    cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, NULL);
    cfg.status_for = status_from_ctx;
    cfg.status_ctx = "alive";
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    send_name_with_flags(&in, CN_DFLAGS, CON_NAME);
    feed_all(&hs, &in, &out);
    expect_status(&out, "alive");
    put_status(&in, "maybe");
    feed_expect(&hs, &in, &out, CN_EPROTO);
    cn_buf_free(&in);
    cn_buf_free(&out);
}

static void test_wrong_cookie_acceptor_refuses(void **state)
{
    (void)state;
    struct fixed_random ra = {{1, 2, 3, 4}, 0}, rc = {{5, 6, 7, 8}, 0};
    cn_hs_config ac = config(CN_HS_ACCEPT, ACC_NAME, "right", &ra);
    cn_hs_config cc = config(CN_HS_CONNECT, CON_NAME, "wrong", &rc);
    struct side acc, con;
    side_init(&acc, &ac);
    side_init(&con, &cc);
    run_pair(&acc, &con, SIZE_MAX);
    assert_int_equal(acc.err, CN_ECOOKIE);
    /* No ack was sent, so the connecting side is still waiting. */
    assert_int_equal(con.err, 0);
    assert_false(cn_hs_done(&con.hs));
    assert_int_equal(acc.out.len, 0);
    side_free(&acc);
    side_free(&con);
}

static void test_wrong_cookie_connector_refuses(void **state)
{
    (void)state;
    struct fixed_random r = {{31337, 0, 0, 0}, 0};
    cn_hs_config cfg = config(CN_HS_CONNECT, CON_NAME, COOKIE, &r);
    cfg.expect_peer = ACC_NAME;
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    assert_int_equal(cn_hs_start(&hs, &out), 0);

    /* Our send_name, byte for byte. */
    size_t nlen = strlen(CON_NAME);
    assert_int_equal(out.len, 2 + 15 + nlen);
    assert_int_equal(cn_get_u16(out.data), 15 + nlen);
    assert_int_equal(out.data[2], 'N');
    assert_true(cn_get_u64(out.data + 3) == CN_DFLAGS);
    assert_int_equal(cn_get_u32(out.data + 11), 0x55667788u);
    assert_int_equal(cn_get_u16(out.data + 15), nlen);
    assert_memory_equal(out.data + 17, CON_NAME, nlen);
    cn_buf_reset(&out);

    put_status(&in, "ok");
    put_challenge(&in, CN_DFLAGS, 123456, ACC_NAME);
    feed_all(&hs, &in, &out);
    /* Our reply: our challenge, then MD5(cookie ++ "123456"). */
    unsigned char want[16];
    cn_hs_digest(COOKIE, 123456, want);
    assert_int_equal(out.len, 2 + 21);
    assert_int_equal(out.data[2], 'r');
    assert_int_equal(cn_get_u32(out.data + 3), 31337);
    assert_memory_equal(out.data + 7, want, 16);
    cn_buf_reset(&out);

    put_digest_msg(&in, 'a', NULL, "not-the-cookie", 31337);
    feed_expect(&hs, &in, &out, CN_ECOOKIE);
    assert_false(cn_hs_done(&hs));
    cn_buf_free(&in);
    cn_buf_free(&out);
}

/* The connecting side leaves the frames that follow the ack for the caller. */
static void test_connect_leaves_frames(void **state)
{
    (void)state;
    struct fixed_random r = {{99, 0, 0, 0}, 0};
    cn_hs_config cfg = config(CN_HS_CONNECT, CON_NAME, COOKIE, &r);
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    assert_int_equal(cn_hs_start(&hs, &out), 0);
    put_status(&in, "ok");
    put_challenge(&in, CN_DFLAGS, 1, ACC_NAME);
    put_digest_msg(&in, 'a', NULL, COOKIE, 99);
    size_t hs_bytes = in.len;
    cn_buf_append(&in, "\0\0\0\0\0\0\0\1p", 9);
    /* Status, challenge and ack all arrive in one read, with frames behind them. */
    int rc = cn_hs_feed(&hs, in.data, in.len, &out);
    assert_int_equal(rc, (int)hs_bytes);
    assert_true(cn_hs_done(&hs));
    assert_int_equal(hs.peer_creation, 0x0a0b0c0d);
    cn_buf_free(&in);
    cn_buf_free(&out);
}

static void test_connect_peer_name_mismatch(void **state)
{
    (void)state;
    cn_hs_config cfg = config(CN_HS_CONNECT, CON_NAME, COOKIE, NULL);
    cfg.expect_peer = "other@127.0.0.1";
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    assert_int_equal(cn_hs_start(&hs, &out), 0);
    cn_buf_reset(&out);
    put_status(&in, "ok");
    put_challenge(&in, CN_DFLAGS, 1, ACC_NAME);
    feed_expect(&hs, &in, &out, CN_EPROTO);
    assert_non_null(strstr(cn_hs_error(&hs), "other@127.0.0.1"));
    assert_int_equal(out.len, 0);
    cn_buf_free(&in);
    cn_buf_free(&out);
}

/* An 'N' send_name whose name field is given raw, with a declared length that may lie. */
static void put_name_raw(cn_buf *b, const char *name, size_t n, size_t declared)
{
    cn_buf m;
    cn_buf_init(&m);
    cn_buf_put_u8(&m, 'N');
    cn_buf_put_u64(&m, CN_DFLAGS);
    cn_buf_put_u32(&m, 1);
    cn_buf_put_u16(&m, (uint16_t)declared);
    cn_buf_append(&m, name, n);
    put_msg(b, m.data, m.len);
    cn_buf_free(&m);
}

static void expect_accept_eproto(const char *what, cn_buf *in)
{
    cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, NULL);
    cn_hs hs;
    cn_buf out;
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    int rc = cn_hs_feed(&hs, in->data, in->len, &out);
    if (rc != CN_EPROTO)
        fail_msg("%s: got %d", what, rc);
    assert_int_equal(out.len, 0);
    assert_true(cn_hs_error(&hs)[0] != '\0');
    cn_buf_reset(in);
    cn_buf_free(&out);
}

/* Every malformed first message makes a fresh acceptor fail with CN_EPROTO. */
static void test_accept_malformed(void **state)
{
    (void)state;
    cn_buf in;
    cn_buf_init(&in);

    /* Bad length prefixes fail at once, before any body arrives. */
    cn_buf_append(&in, "\x00\x00", 2);
    expect_accept_eproto("empty message", &in);
    cn_buf_put_u16(&in, CN_HS_MAX_MSG + 1);
    cn_buf_put_u8(&in, 'N');
    expect_accept_eproto("oversized length", &in);
    cn_buf_put_u16(&in, 0xffff);
    expect_accept_eproto("maximum length", &in);

    put_msg(&in, "x", 1);
    expect_accept_eproto("unknown tag", &in);
    put_msg(&in, "N\0\0\0\0\0\0\0\0\0\0\0\0\0", 14);
    expect_accept_eproto("'N' one byte short of its fixed part", &in);
    put_msg(&in, "n\0\x05\0\0\0", 6);
    expect_accept_eproto("'n' one byte short of its fixed part", &in);
    put_msg(&in, "r\0\0\0\x01" "0123456789abcdef", 21);
    expect_accept_eproto("challenge reply instead of name", &in);

    put_name_raw(&in, "x@y", 3, 4);
    expect_accept_eproto("name length beyond message", &in);
    put_name_raw(&in, "host", 4, 4);
    expect_accept_eproto("name without '@'", &in);
    put_name_raw(&in, "@h", 2, 2);
    expect_accept_eproto("empty alive part", &in);
    put_name_raw(&in, "h@", 2, 2);
    expect_accept_eproto("empty host part", &in);
    put_name_raw(&in, "a@b@c", 5, 5);
    expect_accept_eproto("two '@'", &in);
    put_name_raw(&in, "a@\0b", 4, 4);
    expect_accept_eproto("NUL in name", &in);
    put_name_raw(&in, "", 0, 0);
    expect_accept_eproto("empty name", &in);
    cn_buf_free(&in);
}

/*
 * The alive part is letters, digits, '-' and '_' only, as erts' is_node_name
 * requires: a BEAM answers any other name with status "nok" (OTP 25: "Cannot
 * get connection id for node 'a b@host'"), and so do we. The host may hold
 * anything but '@' and NUL.
 */
static void test_accept_alive_part_as_erts(void **state)
{
    (void)state;
    static const char *refused[] = {"a b@host", "a\nb@host", "evil\nERROR x@127.0.0.1", "a.b@host",
                                    "a:b@host", "\xc3\xa9t\xc3\xa9@host", "a/b@host", "a\t@host"};
    cn_buf in;
    for (size_t k = 0; k < sizeof refused / sizeof refused[0]; k++) {
        cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, NULL);
        cn_hs hs;
        cn_buf out;
        cn_buf_init(&in);
        cn_buf_init(&out);
        assert_int_equal(cn_hs_init(&hs, &cfg), 0);
        send_name_with_flags(&in, CN_DFLAGS, refused[k]);
        feed_expect(&hs, &in, &out, CN_EPROTO);
        expect_status(&out, "nok");
        assert_non_null(strstr(cn_hs_error(&hs), "cannot get connection id"));
        /* The error text, bound for the log, has the name escaped. */
        assert_null(strchr(cn_hs_error(&hs), '\n'));
        cn_buf_free(&in);
        cn_buf_free(&out);
    }
    static const char *accepted[] = {"Az-09_x@host", "a@h o\nst.example", "a@\xc3\xa9"};
    for (size_t k = 0; k < sizeof accepted / sizeof accepted[0]; k++) {
        cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, NULL);
        cn_hs hs;
        cn_buf out;
        cn_buf_init(&in);
        cn_buf_init(&out);
        assert_int_equal(cn_hs_init(&hs, &cfg), 0);
        send_name_with_flags(&in, CN_DFLAGS, accepted[k]);
        feed_all(&hs, &in, &out);
        assert_string_equal(hs.peer_name, accepted[k]);
        cn_buf_free(&in);
        cn_buf_free(&out);
    }
}

/* A 256-byte name is one byte too long, even inside a well-formed message. */
static void test_accept_name_too_long(void **state)
{
    (void)state;
    char name[257];
    memset(name, 'a', 256);
    name[128] = '@';
    name[256] = '\0';
    cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, NULL);
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    send_name_with_flags(&in, CN_DFLAGS, name);
    feed_expect(&hs, &in, &out, CN_EPROTO);
    /* 255 bytes is fine. */
    name[255] = '\0';
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    send_name_with_flags(&in, CN_DFLAGS, name);
    feed_all(&hs, &in, &out);
    assert_int_equal(strlen(hs.peer_name), 255);
    cn_buf_free(&in);
    cn_buf_free(&out);
}

/* Incomplete messages consume nothing and change nothing. */
static void test_truncated_waits(void **state)
{
    (void)state;
    cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, NULL);
    cn_hs hs;
    cn_buf out;
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    for (size_t n = 0; n < sizeof otp25_send_name; n++)
        assert_int_equal(cn_hs_feed(&hs, (const char *)otp25_send_name, n, &out), 0);
    assert_int_equal(out.len, 0);
    assert_int_equal(hs.peer_name[0], '\0');
    assert_int_equal(cn_hs_feed(&hs, (const char *)otp25_send_name, sizeof otp25_send_name, &out),
                     (int)sizeof otp25_send_name);
    cn_buf_free(&out);
}

static void expect_connect_eproto(const char *what, cn_buf *in)
{
    cn_hs_config cfg = config(CN_HS_CONNECT, CON_NAME, COOKIE, NULL);
    cn_hs hs;
    cn_buf out;
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    assert_int_equal(cn_hs_start(&hs, &out), 0);
    assert_int_equal(cn_hs_feed(&hs, "\x00\x03sok", 5, &out), 5);
    cn_buf_reset(&out);
    int rc = cn_hs_feed(&hs, in->data, in->len, &out);
    if (rc != CN_EPROTO)
        fail_msg("%s: got %d", what, rc);
    assert_int_equal(out.len, 0);
    cn_buf_reset(in);
    cn_buf_free(&out);
}

/* Every malformed challenge makes a connecting side (after "sok") fail with CN_EPROTO. */
static void test_connect_malformed(void **state)
{
    (void)state;
    cn_buf in, m;
    cn_buf_init(&in);
    cn_buf_init(&m);

    put_msg(&in, "N\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 18);
    expect_connect_eproto("challenge one byte short of its fixed part", &in);

    /* A version 5 challenge: 'n', version, 32-bit flags, challenge, name. */
    cn_buf_put_u8(&m, 'n');
    cn_buf_put_u16(&m, 5);
    cn_buf_put_u32(&m, (uint32_t)CN_DFLAGS);
    cn_buf_put_u32(&m, 1);
    cn_buf_append(&m, ACC_NAME, strlen(ACC_NAME));
    put_msg(&in, m.data, m.len);
    expect_connect_eproto("version 5 challenge", &in);

    cn_buf_reset(&m);
    cn_buf_put_u8(&m, 'N');
    cn_buf_put_u64(&m, CN_DFLAGS);
    cn_buf_put_u32(&m, 1);
    cn_buf_put_u32(&m, 1);
    cn_buf_put_u16(&m, 4);
    cn_buf_append(&m, "x@y", 3);
    put_msg(&in, m.data, m.len);
    expect_connect_eproto("challenge name length beyond message", &in);

    put_challenge(&in, CN_DFLAGS, 1, "nohost");
    expect_connect_eproto("challenge name without '@'", &in);

    put_msg(&in, "sok", 3);
    expect_connect_eproto("status instead of challenge", &in);
    cn_buf_free(&in);
    cn_buf_free(&m);
}

static void test_connect_bad_status_and_ack(void **state)
{
    (void)state;
    cn_hs_config cfg = config(CN_HS_CONNECT, CON_NAME, COOKIE, NULL);
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);

    /* Unknown status, and "named:" which we never asked for. */
    static const char *const statuses[] = {"bogus\x01", "named:", "ok "};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(cn_hs_init(&hs, &cfg), 0);
        assert_int_equal(cn_hs_start(&hs, &out), 0);
        put_status(&in, statuses[i]);
        feed_expect(&hs, &in, &out, CN_EPROTO);
    }
    /* An ack one byte short. */
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    assert_int_equal(cn_hs_start(&hs, &out), 0);
    put_status(&in, "ok");
    put_challenge(&in, CN_DFLAGS, 1, ACC_NAME);
    feed_all(&hs, &in, &out);
    put_msg(&in, "a0123456789abcde", 16);
    feed_expect(&hs, &in, &out, CN_EPROTO);
    cn_buf_free(&in);
    cn_buf_free(&out);
}

static void test_accept_reply_wrong_length(void **state)
{
    (void)state;
    cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, NULL);
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    send_name_with_flags(&in, CN_DFLAGS, CON_NAME);
    feed_all(&hs, &in, &out);
    put_msg(&in, "r\0\0\0\x01" "0123456789abcdefX", 22);
    feed_expect(&hs, &in, &out, CN_EPROTO);
    cn_buf_free(&in);
    cn_buf_free(&out);
}

static void test_config_and_misuse(void **state)
{
    (void)state;
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[10] = '@';
    longname[sizeof longname - 1] = '\0';
    cn_hs hs;
    cn_buf out;
    cn_buf_init(&out);

    cn_hs_config cfg = config(CN_HS_CONNECT, longname, COOKIE, NULL);
    assert_int_equal(cn_hs_init(&hs, &cfg), -EINVAL);
    assert_int_equal(cn_hs_start(&hs, &out), -EINVAL);
    cfg = config(CN_HS_CONNECT, "nohost", COOKIE, NULL);
    assert_int_equal(cn_hs_init(&hs, &cfg), -EINVAL);
    cfg = config(CN_HS_CONNECT, CON_NAME, NULL, NULL);
    assert_int_equal(cn_hs_init(&hs, &cfg), -EINVAL);
    assert_non_null(strstr(cn_hs_error(&hs), "cookie"));

    /* start belongs to the connecting role, and only once. */
    cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, NULL);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    assert_int_equal(cn_hs_start(&hs, &out), -EINVAL);
    cfg = config(CN_HS_CONNECT, CON_NAME, COOKIE, NULL);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    assert_int_equal(cn_hs_start(&hs, &out), 0);
    assert_int_equal(cn_hs_start(&hs, &out), -EINVAL);
    /* A connecting side fed before it started has a peer that spoke first. */
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    assert_int_equal(cn_hs_feed(&hs, "", 0, &out), 0);
    assert_int_equal(cn_hs_feed(&hs, "\x00\x03sok", 5, &out), CN_EPROTO);
    cn_buf_free(&out);
}

/* A refusing status_for: the refusal goes out, the peer never gets a challenge. */
static void test_accept_refusal_sends_status_only(void **state)
{
    (void)state;
    cn_hs_config cfg = config(CN_HS_ACCEPT, ACC_NAME, COOKIE, NULL);
    cfg.status_for = status_from_ctx;
    cfg.status_ctx = "not_allowed";
    cn_hs hs;
    cn_buf in, out;
    cn_buf_init(&in);
    cn_buf_init(&out);
    assert_int_equal(cn_hs_init(&hs, &cfg), 0);
    in.len = 0;
    cn_buf_append(&in, otp25_send_name, sizeof otp25_send_name);
    feed_expect(&hs, &in, &out, CN_ENOTALIVE);
    expect_status(&out, "not_allowed");
    assert_int_equal(out.len, 0);
    cn_buf_free(&in);
    cn_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest_vectors),
        cmocka_unit_test(test_pair_all_at_once),
        cmocka_unit_test(test_pair_byte_by_byte),
        cmocka_unit_test(test_pair_odd_chunks),
        cmocka_unit_test(test_pair_default_random),
        cmocka_unit_test(test_accept_otp25_send_name),
        cmocka_unit_test(test_accept_old_name_with_complement),
        cmocka_unit_test(test_accept_old_name_reply_without_complement),
        cmocka_unit_test(test_accept_old_name_without_handshake23),
        cmocka_unit_test(test_accept_complement_malformed),
        cmocka_unit_test(test_accept_missing_mandatory_flags),
        cmocka_unit_test(test_connect_missing_mandatory_flags),
        cmocka_unit_test(test_we_advertise_altact_sig_and_digest),
        cmocka_unit_test(test_connect_otp29_negotiates_altact_sig),
        cmocka_unit_test(test_connect_digest_only_peer),
        cmocka_unit_test(test_accept_digest_only_peer),
        cmocka_unit_test(test_digest_absent_still_checks_each_flag),
        cmocka_unit_test(test_status_refusals),
        cmocka_unit_test(test_status_alive),
        cmocka_unit_test(test_accept_alive_bad_reply),
        cmocka_unit_test(test_accept_refusal_sends_status_only),
        cmocka_unit_test(test_wrong_cookie_acceptor_refuses),
        cmocka_unit_test(test_wrong_cookie_connector_refuses),
        cmocka_unit_test(test_connect_leaves_frames),
        cmocka_unit_test(test_connect_peer_name_mismatch),
        cmocka_unit_test(test_accept_malformed),
        cmocka_unit_test(test_accept_alive_part_as_erts),
        cmocka_unit_test(test_accept_name_too_long),
        cmocka_unit_test(test_truncated_waits),
        cmocka_unit_test(test_connect_malformed),
        cmocka_unit_test(test_connect_bad_status_and_ack),
        cmocka_unit_test(test_accept_reply_wrong_length),
        cmocka_unit_test(test_config_and_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

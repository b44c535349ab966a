/*
 * The distribution handshake state machine. Message layouts follow the
 * "Distribution Protocol" chapter of the erts documentation and OTP 25.3's
 * lib/kernel/src/dist_util.erl; see handshake.h for the message sequence.
 */
#include "handshake.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "error.h"
#include "log.h"
#include "protocol.h"

enum hs_state {
    HS_CON_START,     /* connecting, send_name not sent yet */
    HS_CON_STATUS,    /* connecting, waiting for the status */
    HS_CON_CHALLENGE, /* connecting, waiting for the challenge */
    HS_CON_ACK,       /* connecting, waiting for the challenge ack */
    HS_ACC_NAME,      /* accepting, waiting for send_name */
    HS_ACC_ALIVE,     /* accepting, sent "alive", waiting for "true"/"false" */
    HS_ACC_COMPLEMENT, /* accepting, old 'n' peer, waiting for the complement */
    HS_ACC_REPLY,     /* accepting, waiting for the challenge reply */
    HS_DONE,
    HS_FAILED
};

/* The fixed parts of the messages, after the tag byte. */
#define NAME_N_FIXED 15      /* 'N' flags:8 creation:4 nlen:2 */
#define NAME_OLD_FIXED 7     /* 'n' version:2 flags:4 */
#define CHALLENGE_FIXED 19   /* 'N' flags:8 challenge:4 creation:4 nlen:2 */
#define COMPLEMENT_LEN 9     /* 'c' flags_high:4 creation:4 */
#define REPLY_LEN 21         /* 'r' challenge:4 digest:16 */
#define ACK_LEN 17           /* 'a' digest:16 */
#define MAX_STATUS 64

/* A message under construction. Big enough for the largest message we send. */
struct msg {
    unsigned char b[CHALLENGE_FIXED + CN_HS_MAX_NAME];
    size_t n;
};

static void put8(struct msg *m, uint8_t v)
{
    m->b[m->n++] = v;
}

static void put16(struct msg *m, uint16_t v)
{
    put8(m, (uint8_t)(v >> 8));
    put8(m, (uint8_t)v);
}

static void put32(struct msg *m, uint32_t v)
{
    cn_set_u32(m->b + m->n, v);
    m->n += 4;
}

static void put64(struct msg *m, uint64_t v)
{
    put32(m, (uint32_t)(v >> 32));
    put32(m, (uint32_t)v);
}

static void put_bytes(struct msg *m, const void *p, size_t n)
{
    memcpy(m->b + m->n, p, n);
    m->n += n;
}

/*
 * Appends a message with its length prefix. A message is at most CN_HS_MAX_MSG
 * bytes, so the buffer always takes it (running out of memory ends the program,
 * cnode/mem.h). Returns 0, as the other send functions' callers expect.
 */
static int send_msg(const cn_hs *hs, cn_buf *out, const struct msg *m)
{
    cn_buf_reserve(out, m->n + 4);
    if (hs->cfg.len4)
        cn_buf_put_u32(out, (uint32_t)m->n);
    else
        cn_buf_put_u16(out, (uint16_t)m->n);
    cn_buf_append(out, m->b, m->n);
    return 0;
}

static int fail(cn_hs *hs, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(cn_hs *hs, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(hs->errtext, sizeof hs->errtext, fmt, ap);
    va_end(ap);
    hs->err = code;
    hs->state = HS_FAILED;
    return code;
}

/*
 * The peer's node name escaped for an error text (log.h): a name may hold line
 * breaks, which the BEAM accepts after the '@'. The buffer is a compound literal,
 * alive until the end of the enclosing block, so fail() can take it.
 */
#define ESC_SIZE 256
#define PEER(hs) cn_log_escape_str((char[ESC_SIZE]){0}, ESC_SIZE, (hs)->peer_name)

int cn_hs_digest(const char *cookie, uint32_t challenge, unsigned char digest[CN_HS_DIGEST_LEN])
{
    size_t clen = strlen(cookie);
    char text[10 + 1];
    int tlen = snprintf(text, sizeof text, "%" PRIu32, challenge);

    /* Hash cookie and challenge text as one stream without a temporary buffer. */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int dlen = 0;
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, cookie, clen) == 1 &&
             EVP_DigestUpdate(ctx, text, (size_t)tlen) == 1 &&
             EVP_DigestFinal_ex(ctx, digest, &dlen) == 1 && dlen == CN_HS_DIGEST_LEN;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : -EIO;
}

static int new_challenge(cn_hs *hs, uint32_t *out)
{
    if (hs->cfg.random32 != NULL) {
        *out = hs->cfg.random32(hs->cfg.random_ctx);
        return 0;
    }
    unsigned char r[4];
    if (RAND_bytes(r, sizeof r) != 1)
        return fail(hs, -EIO, "no random bytes for the challenge");
    *out = cn_get_u32(r);
    return 0;
}

/*
 * A node name as dist_util accepts one in a handshake for a static name:
 * exactly one '@' with text on both sides. NUL bytes are refused too, since
 * the name becomes a C string.
 */
static int valid_name(const char *s, size_t n)
{
    if (n == 0 || n > CN_HS_MAX_NAME || memchr(s, '\0', n) != NULL)
        return 0;
    const char *at = memchr(s, '@', n);
    if (at == NULL || at == s || at == s + n - 1)
        return 0;
    return memchr(at + 1, '@', (size_t)(s + n - at - 1)) == NULL;
}

/*
 * And as erts accepts it (is_node_name in erts' dist.c): the alive part is
 * letters, digits, '-' and '_' only. A name that passes dist_util but not this
 * ("a b@host", one holding a newline) gets status "nok" from a BEAM, whose
 * net_kernel logs "Cannot get connection id for node 'a b@host'" (verified on
 * OTP 25.2.3), and so from us.
 */
static int alive_ok(const char *name)
{
    const char *p = name;
    while (*p == '-' || *p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
           (*p >= '0' && *p <= '9'))
        p++;
    return p > name && *p == '@';
}

static int take_peer_name(cn_hs *hs, const unsigned char *name, size_t n)
{
    if (!valid_name((const char *)name, n)) {
        char shown[48];
        return fail(hs, CN_EPROTO, "invalid peer node name '%s' (%zu bytes)",
                    cn_log_escape(shown, sizeof shown, (const char *)name, n), n);
    }
    memcpy(hs->peer_name, name, n);
    hs->peer_name[n] = '\0';
    return 0;
}

/*
 * From OTP 25 a node may advertise DFLAG_MANDATORY_25_DIGEST (protocol.h) instead
 * of the whole mandatory set, and the erts documentation says it will become the
 * mandatory form. OTP 25 to 29 send both, but a later node may send only the one
 * bit, so the peer's flags are expanded before they are checked, as dist_util.erl's
 * expand_mandatory_25_flag/1 does.
 */
static uint64_t expand_flags(uint64_t flags)
{
    return (flags & DFLAG_MANDATORY_25_DIGEST) ? flags | DFLAG_MANDATORY_25 : flags;
}

/* The OTP 25 mandatory flags the peer lacks; mask limits the check to what it sent. */
static uint64_t missing_flags(const cn_hs *hs, uint64_t mask)
{
    return DFLAG_MANDATORY_25 & mask & ~hs->peer_flags;
}

static int send_status(cn_hs *hs, cn_buf *out, const char *status)
{
    struct msg m = {.n = 0};
    size_t n = strlen(status);
    if (n > MAX_STATUS)
        return fail(hs, -EINVAL, "status text longer than %d bytes", MAX_STATUS);
    put8(&m, 's');
    put_bytes(&m, status, n);
    return send_msg(hs, out, &m);
}

static int send_challenge(cn_hs *hs, cn_buf *out)
{
    int rc = new_challenge(hs, &hs->our_challenge);
    if (rc < 0)
        return rc;
    size_t nlen = strlen(hs->cfg.our_name);
    struct msg m = {.n = 0};
    put8(&m, 'N');
    put64(&m, hs->cfg.our_flags);
    put32(&m, hs->our_challenge);
    put32(&m, hs->cfg.our_creation);
    put16(&m, (uint16_t)nlen);
    put_bytes(&m, hs->cfg.our_name, nlen);
    return send_msg(hs, out, &m);
}

/* Sends the challenge reply or ack: optional challenge, then the digest of theirs. */
static int send_digest(cn_hs *hs, cn_buf *out, char tag, uint32_t theirs)
{
    unsigned char d[CN_HS_DIGEST_LEN];
    if (cn_hs_digest(hs->cfg.cookie, theirs, d) < 0)
        return fail(hs, -EIO, "MD5 failed");
    struct msg m = {.n = 0};
    put8(&m, (uint8_t)tag);
    if (tag == 'r')
        put32(&m, hs->our_challenge);
    put_bytes(&m, d, sizeof d);
    return send_msg(hs, out, &m);
}

/* Checks a digest the peer computed over our challenge; constant time. */
static int check_digest(cn_hs *hs, const unsigned char *got)
{
    unsigned char want[CN_HS_DIGEST_LEN];
    if (cn_hs_digest(hs->cfg.cookie, hs->our_challenge, want) < 0)
        return fail(hs, -EIO, "MD5 failed");
    if (CRYPTO_memcmp(want, got, sizeof want) != 0)
        return fail(hs, CN_ECOOKIE, "digest from %s does not match our cookie",
                    hs->peer_name[0] ? PEER(hs) : "peer");
    return 0;
}

static int finish(cn_hs *hs)
{
    hs->flags = hs->cfg.our_flags & hs->peer_flags;
    hs->state = HS_DONE;
    return 0;
}

/* Decodes either send_name format into the peer fields. */
static int parse_name(cn_hs *hs, const unsigned char *m, size_t n)
{
    if (m[0] == 'N') {
        if (n < NAME_N_FIXED)
            return fail(hs, CN_EPROTO, "send_name truncated (%zu bytes)", n);
        size_t nlen = cn_get_u16(m + 13);
        if (NAME_N_FIXED + nlen > n)
            return fail(hs, CN_EPROTO, "send_name name length %zu exceeds message", nlen);
        hs->peer_flags = expand_flags(cn_get_u64(m + 1));
        hs->peer_creation = cn_get_u32(m + 9);
        /* Bytes after the name are allowed by the protocol and ignored. */
        return take_peer_name(hs, m + NAME_N_FIXED, nlen);
    }
    if (m[0] == 'n') {
        if (n < NAME_OLD_FIXED)
            return fail(hs, CN_EPROTO, "old send_name truncated (%zu bytes)", n);
        /* The version field is ignored, as OTP does: the flags say what counts. */
        hs->peer_flags = expand_flags(cn_get_u32(m + 3));
        hs->peer_old_name = 1;
        return take_peer_name(hs, m + NAME_OLD_FIXED, n - NAME_OLD_FIXED);
    }
    return fail(hs, CN_EPROTO, "expected send_name, got tag %u", m[0]);
}

/* After status ok or alive/true: challenge, then complement or reply. */
static int accept_continue(cn_hs *hs, cn_buf *out)
{
    int rc = send_challenge(hs, out);
    if (rc < 0)
        return rc;
    hs->state = hs->peer_old_name ? HS_ACC_COMPLEMENT : HS_ACC_REPLY;
    return 0;
}

static int on_name(cn_hs *hs, const unsigned char *m, size_t n, cn_buf *out)
{
    int rc = parse_name(hs, m, n);
    if (rc < 0)
        return rc;
    if (!alive_ok(hs->peer_name)) {
        rc = send_status(hs, out, "nok");
        if (rc < 0)
            return rc;
        return fail(hs, CN_EPROTO, "cannot get connection id for node '%s': its alive part is not [-_A-Za-z0-9]+",
                    PEER(hs));
    }
    /* An old 'n' only carries the low 32 flag bits; the rest come in 'c'. */
    uint64_t missing = missing_flags(hs, hs->peer_old_name ? 0xffffffffULL : ~0ULL);
    if (missing != 0 || (hs->peer_flags & DFLAG_NAME_ME)) {
        rc = send_status(hs, out, "not_allowed");
        if (rc < 0)
            return rc;
        if (missing != 0)
            return fail(hs, CN_EPROTO, "%s lacks mandatory flags 0x%" PRIx64, PEER(hs),
                        missing);
        return fail(hs, CN_EPROTO, "%s asks for a dynamic name, which we do not assign",
                    PEER(hs));
    }
    const char *status = hs->cfg.status_for ? hs->cfg.status_for(hs->cfg.status_ctx, hs->peer_name)
                                            : NULL;
    if (status == NULL)
        status = "ok";
    rc = send_status(hs, out, status);
    if (rc < 0)
        return rc;
    if (strcmp(status, "ok") == 0 || strcmp(status, "ok_simultaneous") == 0)
        return accept_continue(hs, out);
    if (strcmp(status, "alive") == 0) {
        hs->state = HS_ACC_ALIVE;
        return 0;
    }
    return fail(hs, CN_ENOTALIVE, "refused %s with status '%s'", PEER(hs), status);
}

static int is_status(const unsigned char *m, size_t n, const char *text)
{
    size_t tl = strlen(text);
    return n == tl + 1 && memcmp(m + 1, text, tl) == 0;
}

static int on_alive_reply(cn_hs *hs, const unsigned char *m, size_t n, cn_buf *out)
{
    if (m[0] == 's' && is_status(m, n, "true"))
        return accept_continue(hs, out);
    if (m[0] == 's' && is_status(m, n, "false"))
        return fail(hs, CN_ENOTALIVE, "%s gave up after status alive", PEER(hs));
    return fail(hs, CN_EPROTO, "expected 'true' or 'false' from %s after status alive",
                PEER(hs));
}

static int on_complement(cn_hs *hs, const unsigned char *m, size_t n)
{
    if (m[0] != 'c' || n != COMPLEMENT_LEN)
        return fail(hs, CN_EPROTO, "expected complement from %s (tag %u, %zu bytes)",
                    PEER(hs), m[0], n);
    hs->peer_flags = expand_flags(hs->peer_flags | ((uint64_t)cn_get_u32(m + 1) << 32));
    hs->peer_creation = cn_get_u32(m + 5);
    uint64_t missing = missing_flags(hs, ~0ULL);
    if (missing != 0)
        return fail(hs, CN_EPROTO, "%s lacks mandatory flags 0x%" PRIx64, PEER(hs), missing);
    hs->state = HS_ACC_REPLY;
    return 0;
}

static int on_reply(cn_hs *hs, const unsigned char *m, size_t n, cn_buf *out)
{
    if (m[0] != 'r' || n != REPLY_LEN)
        return fail(hs, CN_EPROTO, "expected challenge reply from %s (tag %u, %zu bytes)",
                    PEER(hs), m[0], n);
    int rc = check_digest(hs, m + 5);
    if (rc < 0)
        return rc;
    rc = send_digest(hs, out, 'a', cn_get_u32(m + 1));
    return rc < 0 ? rc : finish(hs);
}

static int on_status(cn_hs *hs, const unsigned char *m, size_t n, cn_buf *out)
{
    if (m[0] != 's')
        return fail(hs, CN_EPROTO, "expected status, got tag %u", m[0]);
    if (is_status(m, n, "ok") || is_status(m, n, "ok_simultaneous")) {
        hs->state = HS_CON_CHALLENGE;
        return 0;
    }
    if (is_status(m, n, "alive")) {
        int rc = send_status(hs, out, hs->cfg.alive_continue ? "true" : "false");
        if (rc < 0)
            return rc;
        if (!hs->cfg.alive_continue)
            return fail(hs, CN_ENOTALIVE, "peer already has a connection from us (alive)");
        hs->state = HS_CON_CHALLENGE;
        return 0;
    }
    char shown[4 * MAX_STATUS + 4];
    cn_log_escape(shown, sizeof shown, (const char *)m + 1, n - 1);
    if (is_status(m, n, "nok") || is_status(m, n, "not_allowed"))
        return fail(hs, CN_ENOTALIVE, "peer refused the connection: %s", shown);
    return fail(hs, CN_EPROTO, "unexpected status '%s'", shown);
}

static int on_challenge(cn_hs *hs, const unsigned char *m, size_t n, cn_buf *out)
{
    if (m[0] != 'N' || n < CHALLENGE_FIXED)
        return fail(hs, CN_EPROTO, "expected version 6 challenge (tag %u, %zu bytes)", m[0], n);
    size_t nlen = cn_get_u16(m + 17);
    if (CHALLENGE_FIXED + nlen > n)
        return fail(hs, CN_EPROTO, "challenge name length %zu exceeds message", nlen);
    int rc = take_peer_name(hs, m + CHALLENGE_FIXED, nlen);
    if (rc < 0)
        return rc;
    if (hs->cfg.expect_peer != NULL && strcmp(hs->cfg.expect_peer, hs->peer_name) != 0)
        return fail(hs, CN_EPROTO, "dialed %s but %s answered", hs->cfg.expect_peer,
                    PEER(hs));
    hs->peer_flags = expand_flags(cn_get_u64(m + 1));
    hs->peer_creation = cn_get_u32(m + 13);
    uint64_t missing = missing_flags(hs, ~0ULL);
    if (missing != 0)
        return fail(hs, CN_EPROTO, "%s lacks mandatory flags 0x%" PRIx64, PEER(hs), missing);
    rc = new_challenge(hs, &hs->our_challenge);
    if (rc < 0)
        return rc;
    rc = send_digest(hs, out, 'r', cn_get_u32(m + 9));
    if (rc < 0)
        return rc;
    hs->state = HS_CON_ACK;
    return 0;
}

static int on_ack(cn_hs *hs, const unsigned char *m, size_t n)
{
    if (m[0] != 'a' || n != ACK_LEN)
        return fail(hs, CN_EPROTO, "expected challenge ack from %s (tag %u, %zu bytes)",
                    PEER(hs), m[0], n);
    int rc = check_digest(hs, m + 1);
    return rc < 0 ? rc : finish(hs);
}

/* Handles one whole message (without its length prefix) in the current state. */
static int step(cn_hs *hs, const unsigned char *m, size_t n, cn_buf *out)
{
    switch (hs->state) {
    case HS_CON_START:
        return fail(hs, CN_EPROTO, "peer spoke before our send_name");
    case HS_CON_STATUS:
        return on_status(hs, m, n, out);
    case HS_CON_CHALLENGE:
        return on_challenge(hs, m, n, out);
    case HS_CON_ACK:
        return on_ack(hs, m, n);
    case HS_ACC_NAME:
        return on_name(hs, m, n, out);
    case HS_ACC_ALIVE:
        return on_alive_reply(hs, m, n, out);
    case HS_ACC_COMPLEMENT:
        return on_complement(hs, m, n);
    case HS_ACC_REPLY:
        return on_reply(hs, m, n, out);
    default:
        return fail(hs, CN_EPROTO, "handshake in an impossible state");
    }
}

int cn_hs_init(cn_hs *hs, const cn_hs_config *cfg)
{
    memset(hs, 0, sizeof *hs);
    hs->cfg = *cfg;
    hs->state = cfg->role == CN_HS_CONNECT ? HS_CON_START : HS_ACC_NAME;
    const char *name = cfg->our_name;
    if (name == NULL || !valid_name(name, strlen(name)))
        return fail(hs, -EINVAL, "our node name must be alive@host, at most %d bytes",
                    CN_HS_MAX_NAME);
    if (cfg->cookie == NULL)
        return fail(hs, -EINVAL, "no cookie");
    return 0;
}

int cn_hs_start(cn_hs *hs, cn_buf *out)
{
    if (hs->state == HS_FAILED)
        return hs->err;
    if (hs->state != HS_CON_START)
        return -EINVAL;
    size_t nlen = strlen(hs->cfg.our_name);
    struct msg m = {.n = 0};
    put8(&m, 'N');
    put64(&m, hs->cfg.our_flags);
    put32(&m, hs->cfg.our_creation);
    put16(&m, (uint16_t)nlen);
    put_bytes(&m, hs->cfg.our_name, nlen);
    int rc = send_msg(hs, out, &m);
    if (rc < 0)
        return rc;
    hs->state = HS_CON_STATUS;
    return 0;
}

int cn_hs_feed(cn_hs *hs, const char *data, size_t len, cn_buf *out)
{
    size_t used = 0;
    /* One message per turn; stopping at HS_DONE leaves the frames behind it. */
    while (hs->state != HS_DONE) {
        if (hs->state == HS_FAILED)
            return hs->err;
        size_t plen = hs->cfg.len4 ? 4 : 2;
        if (len - used < plen)
            break;
        size_t mlen = plen == 4 ? cn_get_u32(data + used) : cn_get_u16(data + used);
        if (mlen == 0 || mlen > CN_HS_MAX_MSG)
            return fail(hs, CN_EPROTO, "handshake message of %zu bytes", mlen);
        if (len - used - plen < mlen)
            break;
        int rc = step(hs, (const unsigned char *)data + used + plen, mlen, out);
        if (rc < 0)
            return hs->state == HS_FAILED ? rc : fail(hs, rc, "%s", cn_strerror(rc));
        used += plen + mlen;
    }
    /* At most a handful of messages of at most CN_HS_MAX_MSG bytes fit before done. */
    return (int)used;
}

int cn_hs_done(const cn_hs *hs)
{
    return hs->state == HS_DONE;
}

const char *cn_hs_error(const cn_hs *hs)
{
    return hs->errtext;
}

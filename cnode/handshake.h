/*
 * The Erlang distribution handshake (version 6, OTP 23 and later) as a pure state
 * machine: no sockets, no timers, no allocation beyond the caller's output buffer.
 *
 * The caller owns the transport. It feeds whatever bytes arrived to cn_hs_feed(),
 * writes whatever the machine appended to `out`, and repeats until cn_hs_done()
 * is true or an error comes back. This keeps the handshake testable byte by byte
 * and lets the connection layer run it on libuv without blocking.
 *
 * Both roles are supported:
 *
 *   CN_HS_CONNECT (we dialed, node A in the erts documentation)
 *     cn_hs_start: send_name 'N'
 *     recv status 's' (answering 'alive' with 'strue' or 'sfalse')
 *     recv challenge 'N', send challenge_reply 'r'
 *     recv challenge_ack 'a'                                     -> done
 *
 *   CN_HS_ACCEPT (the peer dialed us, node B)
 *     recv send_name 'N' (or the old 'n', see below)
 *     send status 's', and if it was 'alive' recv the peer's 'strue'/'sfalse'
 *     send challenge 'N'
 *     recv complement 'c' (only after an old 'n' name)
 *     recv challenge_reply 'r', send challenge_ack 'a'            -> done
 *
 * Every handshake message on the wire carries a 2-byte big-endian length prefix
 * (4 bytes over TLS, see len4); the machine reads and writes those prefixes
 * itself. After the handshake the connection switches to 4-byte frames, which
 * are not this module's business.
 *
 * The old 'n' send_name (version u16, flags u32, name) is accepted because OTP 23
 * and 24 nodes that do not use epmd may send it. Such a peer gets the same 'N'
 * challenge and must answer with the complement 'c' (flags-high u32, creation u32)
 * before its reply, as OTP 25.3's dist_util does. A peer without
 * DFLAG_HANDSHAKE_23 would need a version 5 'n' challenge, but HANDSHAKE_23 is one
 * of the OTP 25 mandatory flags, so such a peer is refused with 'not_allowed'
 * instead, again as OTP 25 does.
 */
#ifndef CN_HANDSHAKE_H
#define CN_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Handshake messages larger than this (without the length prefix) are refused. */
#define CN_HS_MAX_MSG 2048
/* Node names longer than this (in bytes) are refused, ours and the peer's. */
#define CN_HS_MAX_NAME 255
/* Length of an MD5 digest. */
#define CN_HS_DIGEST_LEN 16

typedef enum cn_hs_role { CN_HS_ACCEPT, CN_HS_CONNECT } cn_hs_role;

typedef struct cn_hs_config {
    cn_hs_role role;
    /* Our full node name, "alive@host". Borrowed: must outlive the handshake. */
    const char *our_name;
    /* The cookie, as text. Borrowed: must outlive the handshake. */
    const char *cookie;
    /* The capability flags we advertise, normally CN_DFLAGS from protocol.h. */
    uint64_t our_flags;
    /* Our incarnation, as epmd handed it out at registration. */
    uint32_t our_creation;
    /*
     * Source of our challenge. NULL means OpenSSL's RAND_bytes. Tests inject a
     * fixed sequence here to get reproducible bytes.
     */
    uint32_t (*random32)(void *ctx);
    void *random_ctx;
    /*
     * Accepting role only: the status to send once the peer's name is known, for
     * example "ok", "ok_simultaneous", "nok", "alive" or "not_allowed". NULL (as
     * callback or as return value) means "ok". The returned string is borrowed
     * and must stay valid until cn_hs_feed() returns. With "alive" the peer
     * answers "true" (continue) or "false" (give up).
     */
    const char *(*status_for)(void *ctx, const char *peer_name);
    void *status_ctx;
    /*
     * Connecting role only: the node we dialed. When set, the name in the peer's
     * challenge must equal it. Borrowed.
     */
    const char *expect_peer;
    /*
     * Connecting role only: how to answer an "alive" status (the peer believes a
     * connection from us is still up). Nonzero answers "true", which tells the
     * peer to drop its old connection and continue; that is right when the
     * caller knows it has no live connection to that node, and is what OTP does
     * for an attempt it really started. Zero answers "false" and the handshake
     * fails with CN_ENOTALIVE.
     */
    int alive_continue;
    /*
     * Nonzero: 4-byte length prefixes instead of 2. OTP's TLS distribution
     * (inet_tls_dist) opens its sockets with {packet, 4} and never switches, so
     * its handshake messages carry 4-byte lengths.
     */
    int len4;
} cn_hs_config;

/*
 * The state of one handshake. Caller-allocated (embed it in the connection).
 * Fields below `data` are private, except the results documented as readable.
 */
typedef struct cn_hs {
    void *data; /* for the caller; never touched by this module */

    cn_hs_config cfg;
    int state;
    int err;           /* the sticky error once the machine failed, else 0 */
    int peer_old_name; /* the peer sent the old 'n' send_name */
    uint32_t our_challenge;

    /* Results, readable once cn_hs_done() is true (some are filled earlier). */
    char peer_name[CN_HS_MAX_NAME + 1]; /* NUL-terminated */
    uint64_t peer_flags;                /* as advertised, MANDATORY_25_DIGEST expanded */
    uint64_t flags;                     /* negotiated: our_flags & peer_flags */
    uint32_t peer_creation;

    char errtext[192];
} cn_hs;

/*
 * Prepares a handshake. The config is copied, the strings in it are borrowed.
 * Nothing is allocated, so there is no matching free.
 * Returns 0, or -EINVAL when our name is missing, longer than CN_HS_MAX_NAME or
 * has no '@', or when the cookie is missing (cn_hs_error() says which).
 */
int cn_hs_init(cn_hs *hs, const cn_hs_config *cfg);

/*
 * Connecting role: appends our send_name message to out (owned by the caller).
 * Call once, right after the TCP connection is up.
 * Returns 0, or -EINVAL in the accepting role or when called twice.
 */
int cn_hs_start(cn_hs *hs, cn_buf *out);

/*
 * Feeds received bytes. Processes every whole handshake message at the front of
 * data, appends what we must send to out (whole messages only), and returns the
 * number of bytes consumed: 0 when the first message is still incomplete. The
 * caller keeps the unconsumed remainder and feeds it again, with more bytes
 * appended, when they arrive.
 *
 * It stops at the end of the handshake: bytes after the last handshake message
 * are not consumed, they are the first distribution frames. Once done, further
 * calls consume nothing and return 0.
 *
 * Errors (the machine then stays failed and returns the same code again):
 *   CN_ECOOKIE    the peer's digest does not match our cookie
 *   CN_EPROTO     malformed, truncated, oversized or unexpected message, bad or
 *                 mismatching node name, missing OTP 25 mandatory flags
 *   CN_ENOTALIVE  the peer refused us (nok, not_allowed, alive/false), or we
 *                 refused it through status_for
 *   -EIO          OpenSSL failed (random bytes or MD5)
 *   -EINVAL       status_for returned a status longer than 64 bytes, or
 *                 cn_hs_init() had refused the config
 * On error, out may still hold a final status message for the peer (for example
 * "not_allowed" for missing flags, or the refusing status); writing it before
 * closing is polite but optional.
 */
int cn_hs_feed(cn_hs *hs, const char *data, size_t len, cn_buf *out);

/* Nonzero once the handshake completed successfully. */
int cn_hs_done(const cn_hs *hs);

/* A human-readable reason for the last failure ("" when there was none). Owned by hs. */
const char *cn_hs_error(const cn_hs *hs);

/*
 * Computes the handshake digest: MD5 of the cookie bytes followed by the decimal
 * text of the unsigned 32-bit challenge. Writes CN_HS_DIGEST_LEN bytes to digest.
 * Returns 0, or -EIO if OpenSSL fails.
 */
int cn_hs_digest(const char *cookie, uint32_t challenge, unsigned char digest[CN_HS_DIGEST_LEN]);

#endif

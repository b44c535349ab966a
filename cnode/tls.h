/*
 * TLS distribution, as OTP's inet_tls_dist: the node's TCP connections carry
 * TLS (1.2 or 1.3, OpenSSL's default ciphers), and the distribution handshake
 * with its cookie check, then the frames, run inside it. epmd is unchanged.
 *
 * What is verified, as OTP's ssl does with the same options:
 *   verify_peer   the peer's certificate chain must lead to a CA of the
 *                 cacertfile and be within its validity dates. When we dialed
 *                 (the client side), the server's certificate must also name
 *                 the host part of the node we dialed, as OTP's client checks
 *                 its server_name_indication: a dNSName equal to the host, or
 *                 for an IP literal an iPAddress or a dNSName equal to its text.
 *                 When we accepted, no host name is checked: OTP's server
 *                 checks none unless told to (inet_tls_dist:verify_client/3 or
 *                 net_kernel:allow), and neither do we.
 *   fail_if_no_peer_cert  (accepting side, with verify_peer) a client that
 *                 sends no certificate is refused; without it, a client that
 *                 sends none is accepted and one that sends a bad one is not.
 *   verify_none   nothing about the peer is checked: TLS then only hides the
 *                 traffic from a passive listener.
 *
 * This header has two parts: the configuration and its start-up check, which
 * the program uses, and a TLS session over memory (no sockets, no loop), which
 * the node's TCP transport drives (tcp.c) and tests drive byte by byte, as the
 * distribution handshake (handshake.h) is driven.
 */
#ifndef CN_TLS_H
#define CN_TLS_H

#include <stddef.h>

#include "cnode/buf.h"

/* The options, named after the ssl options an Erlang operator writes. Strings borrowed. */
typedef struct cn_tls_config {
    const char *certfile;       /* PEM: our certificate, then any intermediates. Required. */
    const char *keyfile;        /* PEM private key; NULL: in certfile, as OTP's default */
    const char *cacertfile;     /* PEM CAs that sign peers; required with verify_peer */
    int verify_none;            /* nonzero: verify_none; zero: verify_peer (the default) */
    int no_fail_if_no_peer_cert; /* nonzero: fail_if_no_peer_cert false (it is true by default) */
} cn_tls_config;

/* The loaded configuration: an OpenSSL context shared by every connection of a node. */
typedef struct cn_tls_ctx cn_tls_ctx;

/*
 * Loads and checks cfg: the files exist and parse, the key matches the
 * certificate, our certificate is within its validity dates, the CA file
 * loads. Returns 0 and a context in *out (freed with cn_tls_ctx_free), or
 * CN_ETLS with one line saying why in why[0..whylen).
 */
int cn_tls_ctx_new(const cn_tls_config *cfg, cn_tls_ctx **out, char *why, size_t whylen);
void cn_tls_ctx_free(cn_tls_ctx *ctx);

/* ---- One connection's TLS, over memory ---- */

typedef struct cn_tls_session cn_tls_session;

/*
 * A session of ctx (borrowed, must outlive it). client: we dialed; then
 * verify_host (copied; NULL for none) is the host the server's certificate
 * must name under verify_peer. Never NULL; free with cn_tls_session_free.
 */
cn_tls_session *cn_tls_session_new(cn_tls_ctx *ctx, int client, const char *verify_host);
void cn_tls_session_free(cn_tls_session *s);

/* Bytes that arrived from the peer (copied). */
void cn_tls_session_put(cn_tls_session *s, const char *data, size_t len);
/*
 * Runs the TLS handshake on what was put: 1 once it is done, 0 while it needs
 * more from the peer, CN_ETLS when it failed (cn_tls_session_error says why).
 * A client calls it once before anything was put, to make its first message.
 */
int cn_tls_session_handshake(cn_tls_session *s);
/*
 * Decrypts into dst[0..cap): the bytes written, 0 when it needs more from the
 * peer, -ESHUTDOWN when the peer closed the session cleanly (close_notify),
 * CN_ETLS when a record was bad. Only after the handshake is done.
 */
long cn_tls_session_read(cn_tls_session *s, char *dst, size_t cap);
/* Encrypts len bytes (after the handshake): 0, or CN_ETLS. */
int cn_tls_session_write(cn_tls_session *s, const char *data, size_t len);
/* Appends close_notify to what is to be sent. */
void cn_tls_session_shutdown(cn_tls_session *s);
/* Moves the bytes to send to the peer (handshake, records, alerts) to the end of out. */
void cn_tls_session_take(cn_tls_session *s, cn_buf *out);
/* Nonzero when there are bytes to send. */
int cn_tls_session_pending(const cn_tls_session *s);
/* Why the session failed, one line (or "" when it did not). Owned by s. */
const char *cn_tls_session_error(const cn_tls_session *s);
/* The version negotiated ("TLSv1.3"), or "" before the handshake. */
const char *cn_tls_session_version(const cn_tls_session *s);
/* The cipher suite the handshake agreed on ("" before it is done). */
const char *cn_tls_session_cipher(const cn_tls_session *s);

#endif

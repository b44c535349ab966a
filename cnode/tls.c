/*
 * TLS distribution (tls.h): the configuration, a TLS session over memory, and
 * the layer that runs a session between a TCP connection (tcp.c) and the
 * distribution connection (conn.c).
 *
 * OpenSSL never touches a socket here. Each session has two memory BIOs: what
 * TCP reads is put into one, what OpenSSL writes is taken from the other and
 * written by TCP. So nothing blocks, no thread is needed, and a session can be
 * driven a byte at a time by a test. Once the TLS handshake is done, the
 * distribution handshake and frames run inside it exactly as over TCP, except
 * that the handshake's lengths are 4 bytes (transport.h, hs_len4), as OTP's
 * inet_tls_dist opens its sockets with {packet, 4}.
 *
 * Renegotiation is refused (SSL_OP_NO_RENEGOTIATION): a write then never
 * waits for a read, and no peer can make us redo handshakes. No session
 * tickets or cache: distribution connections are few and long-lived.
 *
 * Memory: the node owns its cn_tls_ctx; each connection's layer (tls_conn) is
 * made when its TCP connection is and freed with it (cn__tls_conn_free from
 * tcp.c's close callback).
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/mem.h"
#include "cnode/node_int.h"
#include "cnode/tls.h"

/* What one TCP read takes: the ciphertext is copied into the session at once. */
#define CIPHER_CHUNK (64 * 1024)
/* The room asked of the connection's read buffer for each decrypted piece: one record. */
#define PLAIN_CHUNK (16 * 1024)

struct cn_tls_ctx {
    SSL_CTX *ssl;
    char rbuf[CIPHER_CHUNK];    /* where TCP reads ciphertext for any connection of the node */
};

struct cn_tls_session {
    SSL *ssl;
    BIO *in, *out;              /* owned by ssl */
    char *host;                 /* the host the server's certificate must name, or NULL */
    int seen_first;             /* the peer's first byte has been looked at */
    int plaintext;              /* ... and it was not a TLS handshake record */
    char subject[128];          /* the peer's certificate's subject, once seen */
    char err[160 + 16 + 128];   /* a reason (fail: 160), ", subject ", the subject */
};

/* ---- Errors ---- */

/*
 * OpenSSL's reason for an error in its queue, which is then cleared: the first
 * (loading a file: "no start line" says more than the "PEM lib" after it) or
 * the last (a handshake: what ended it).
 */
static const char *ssl_reason(char *buf, size_t n, int first)
{
    unsigned long e = first ? ERR_peek_error() : ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r == NULL && e)
        ERR_error_string_n(e, buf, n);
    else
        snprintf(buf, n, "%s", r ? r : "unknown error");
    ERR_clear_error();
    return buf;
}

/* ---- The configuration ---- */

static int ctx_fail(char *why, size_t n, const char *fmt, const char *file)
{
    char r[160];
    int len = snprintf(why, n, fmt, file ? file : "");
    if (len >= 0 && (size_t)len < n)
        snprintf(why + len, n - (size_t)len, ": %s", ssl_reason(r, sizeof r, 1));
    return CN_ETLS;
}

/* A file we must read: a clearer reason than OpenSSL's when it is missing. */
static int readable(const char *what, const char *path, char *why, size_t n)
{
    if (access(path, R_OK) == 0)
        return 0;
    snprintf(why, n, "cannot read the %s %s: %s", what, path, strerror(errno));
    return CN_ETLS;
}

/* Our certificate must be valid now: an expired one would only fail later, at every peer. */
static int check_dates(SSL_CTX *ssl, const char *certfile, char *why, size_t n)
{
    X509 *x = SSL_CTX_get0_certificate(ssl);
    if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
        snprintf(why, n, "the certificate in %s has expired", certfile);
        return CN_ETLS;
    }
    if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
        snprintf(why, n, "the certificate in %s is not valid yet", certfile);
        return CN_ETLS;
    }
    return 0;
}

static int verify_cb(int ok, X509_STORE_CTX *store);

static int load_own(SSL_CTX *ssl, const cn_tls_config *cfg, char *why, size_t n)
{
    const char *key = cfg->keyfile ? cfg->keyfile : cfg->certfile;
    if (cfg->certfile == NULL) {
        snprintf(why, n, "TLS needs a certificate file (--tls-certfile)");
        return CN_ETLS;
    }
    if (readable("certificate file", cfg->certfile, why, n) < 0 || readable("key file", key, why, n) < 0)
        return CN_ETLS;
    if (SSL_CTX_use_certificate_chain_file(ssl, cfg->certfile) != 1)
        return ctx_fail(why, n, "cannot load the certificate file %s", cfg->certfile);
    int loaded = SSL_CTX_use_PrivateKey_file(ssl, key, SSL_FILETYPE_PEM) == 1;
    if (!loaded && ERR_GET_REASON(ERR_peek_error()) != X509_R_KEY_VALUES_MISMATCH)
        return ctx_fail(why, n, "cannot load the private key in %s", key);
    if (!loaded || SSL_CTX_check_private_key(ssl) != 1) {
        snprintf(why, n, "the key in %s does not match the certificate in %s", key, cfg->certfile);
        ERR_clear_error();
        return CN_ETLS;
    }
    return check_dates(ssl, cfg->certfile, why, n);
}

static int load_verify(SSL_CTX *ssl, const cn_tls_config *cfg, char *why, size_t n)
{
    if (cfg->verify_none) {
        SSL_CTX_set_verify(ssl, SSL_VERIFY_NONE, NULL);
        return 0;
    }
    if (cfg->cacertfile == NULL) {
        snprintf(why, n, "verify_peer needs a CA file (--tls-cacertfile)");
        return CN_ETLS;
    }
    if (readable("CA file", cfg->cacertfile, why, n) < 0)
        return CN_ETLS;
    if (SSL_CTX_load_verify_locations(ssl, cfg->cacertfile, NULL) != 1)
        return ctx_fail(why, n, "cannot load the CA file %s", cfg->cacertfile);
    /* Clients that hold several certificates pick one these CAs signed. */
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->cacertfile);
    if (names != NULL)
        SSL_CTX_set_client_CA_list(ssl, names);
    int mode = SSL_VERIFY_PEER | (cfg->no_fail_if_no_peer_cert ? 0 : SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    SSL_CTX_set_verify(ssl, mode, verify_cb);
    return 0;
}

int cn_tls_ctx_new(const cn_tls_config *cfg, cn_tls_ctx **out, char *why, size_t whylen)
{
    ERR_clear_error();
    SSL_CTX *ssl = SSL_CTX_new(TLS_method());
    if (ssl == NULL)
        return ctx_fail(why, whylen, "OpenSSL cannot make a TLS context%s", NULL);
    SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
    SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ssl, 0);
    int rc = load_own(ssl, cfg, why, whylen);
    if (rc == 0)
        rc = load_verify(ssl, cfg, why, whylen);
    if (rc < 0) {
        SSL_CTX_free(ssl);
        return rc;
    }
    cn_tls_ctx *ctx = cn_calloc(1, sizeof *ctx);
    ctx->ssl = ssl;
    *out = ctx;
    return 0;
}

void cn_tls_ctx_free(cn_tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

/* ---- The session ---- */

/* Does the server's certificate name host? An IP literal may be named either way. */
static int names_host(X509 *cert, const char *host)
{
    if (X509_check_host(cert, host, 0, 0, NULL) == 1)
        return 1;
    return X509_check_ip_asc(cert, host, 0) == 1;
}

/*
 * OpenSSL's chain verification, plus the host check of a client: the leaf of a
 * chain that verified must name the host we dialed (tls.h says why).
 */
static int verify_cb(int ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    cn_tls_session *s = SSL_get_app_data(ssl);
    /* The subject names a refused peer in the log: OpenSSL keeps no certificate it refused. */
    X509 *leaf = X509_STORE_CTX_get0_cert(store);
    if (s != NULL && leaf != NULL && s->subject[0] == '\0')
        X509_NAME_oneline(X509_get_subject_name(leaf), s->subject, sizeof s->subject);
    if (!ok || X509_STORE_CTX_get_error_depth(store) != 0)
        return ok;
    if (s == NULL || s->host == NULL || names_host(X509_STORE_CTX_get_current_cert(store), s->host))
        return 1;
    X509_STORE_CTX_set_error(store, X509_V_ERR_HOSTNAME_MISMATCH);
    return 0;
}

cn_tls_session *cn_tls_session_new(cn_tls_ctx *ctx, int client, const char *verify_host)
{
    cn_tls_session *s = cn_calloc(1, sizeof *s);
    s->ssl = SSL_new(ctx->ssl);
    s->in = BIO_new(BIO_s_mem());
    s->out = BIO_new(BIO_s_mem());
    if (s->ssl == NULL || s->in == NULL || s->out == NULL)
        cn_oom(sizeof *s);
    /* An empty input is "more to come", not the end of the stream. */
    BIO_set_mem_eof_return(s->in, -1);
    BIO_set_mem_eof_return(s->out, -1);
    SSL_set_bio(s->ssl, s->in, s->out);
    SSL_set_app_data(s->ssl, s);
    if (client) {
        SSL_set_connect_state(s->ssl);
        if (verify_host != NULL) {
            s->host = cn_strdup(verify_host);
            /* SNI carries DNS names only (RFC 6066): an IP literal is not sent. */
            unsigned char ip[16];
            if (inet_pton(AF_INET, verify_host, ip) != 1 && inet_pton(AF_INET6, verify_host, ip) != 1)
                SSL_set_tlsext_host_name(s->ssl, verify_host);
        }
    } else {
        SSL_set_accept_state(s->ssl);
    }
    return s;
}

void cn_tls_session_free(cn_tls_session *s)
{
    if (s == NULL)
        return;
    SSL_free(s->ssl);
    free(s->host);
    free(s);
}

void cn_tls_session_put(cn_tls_session *s, const char *data, size_t len)
{
    if (!s->seen_first && len > 0) {
        s->seen_first = 1;
        /*
         * A TLS stream starts with a record of content type 20 to 23 (a handshake,
         * or an alert that refuses ours); plain distribution starts with a length.
         */
        unsigned char type = (unsigned char)data[0];
        s->plaintext = type < 20 || type > 23;
    }
    while (len > 0) {
        int n = len > INT32_MAX ? INT32_MAX : (int)len;
        if (BIO_write(s->in, data, n) != n)
            cn_oom((size_t)n);
        data += n;
        len -= (size_t)n;
    }
}

/* The session failed: why, in s->err, with the peer's certificate subject when known. */
static int fail(cn_tls_session *s)
{
    char r[160] = "";
    const char *subject = s->subject;
    long vr = SSL_get_verify_result(s->ssl);
    if (s->plaintext)
        snprintf(r, sizeof r, "the peer sent plaintext, not TLS (a node without -proto_dist inet_tls?)");
    else if (vr != X509_V_OK)
        snprintf(r, sizeof r, "the peer's certificate: %s", X509_verify_cert_error_string(vr));
    else
        ssl_reason(r, sizeof r, 0);
    ERR_clear_error();
    snprintf(s->err, sizeof s->err, "%s%s%s", r, *subject ? ", subject " : "", subject);
    return CN_ETLS;
}

int cn_tls_session_handshake(cn_tls_session *s)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(s->ssl);
    if (rc == 1)
        return 1;
    if (SSL_get_error(s->ssl, rc) == SSL_ERROR_WANT_READ && !s->plaintext)
        return 0;
    return fail(s);
}

/*
 * SSL_get_error needs an empty error queue before the call it explains. The
 * queue is nearly always empty already (every failure here clears it), and
 * peeking costs less than clearing its sixteen slots on every record: about 1 %
 * of the node's CPU at 64 callers over TLS.
 */
static void clear_errors(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

long cn_tls_session_read(cn_tls_session *s, char *dst, size_t cap)
{
    size_t n = 0;
    clear_errors();
    if (SSL_read_ex(s->ssl, dst, cap, &n) == 1)
        return (long)n;
    switch (SSL_get_error(s->ssl, 0)) {
    case SSL_ERROR_WANT_READ: return 0;
    case SSL_ERROR_ZERO_RETURN: return -ESHUTDOWN;
    default: return fail(s);
    }
}

int cn_tls_session_write(cn_tls_session *s, const char *data, size_t len)
{
    size_t n = 0;
    clear_errors();
    /* A memory BIO takes everything, so one call writes it all or fails. */
    if (len > 0 && (SSL_write_ex(s->ssl, data, len, &n) != 1 || n != len))
        return fail(s);
    return 0;
}

void cn_tls_session_shutdown(cn_tls_session *s)
{
    ERR_clear_error();
    SSL_shutdown(s->ssl);
    ERR_clear_error();
}

void cn_tls_session_take(cn_tls_session *s, cn_buf *out)
{
    size_t n = BIO_ctrl_pending(s->out);
    if (n == 0)
        return;
    cn_buf_reserve(out, n);
    int got = BIO_read(s->out, out->data + out->len, (int)n);
    assert(got == (int)n);
    out->len += (size_t)got;
}

int cn_tls_session_pending(const cn_tls_session *s)
{
    return BIO_ctrl_pending(s->out) > 0;
}

const char *cn_tls_session_error(const cn_tls_session *s)
{
    return s->err;
}

const char *cn_tls_session_version(const cn_tls_session *s)
{
    return SSL_is_init_finished(s->ssl) ? SSL_get_version(s->ssl) : "";
}

const char *cn_tls_session_cipher(const cn_tls_session *s)
{
    return SSL_is_init_finished(s->ssl) ? SSL_get_cipher_name(s->ssl) : "";
}

/* ---- The layer between tcp.c and conn.c ---- */

struct cn__tls_conn {
    cn_conn *conn;
    struct cn__tcp_conn *tcp;
    cn_tls_ctx *ctx;
    cn_tls_session *s;
    int client;
    int hs_done;            /* the TLS handshake is done */
    int closing;            /* the connection closes: no more reports but the owed write */
    int flying;             /* flight is handed to TCP */
    int owed;               /* the connection's write is encrypted, its completion not yet reported */
    int owed_flying;        /* ... and its ciphertext is all in flight */
    cn_buf pend, flight;    /* ciphertext to send, and being sent */
};

cn__tls_conn *cn__tls_conn_new(cn_conn *c, struct cn__tcp_conn *t, int client)
{
    cn__tls_conn *l = cn_calloc(1, sizeof *l);
    l->conn = c;
    l->tcp = t;
    l->ctx = c->node->tls;
    l->client = client;
    const char *at = client ? strchr(c->dialed, '@') : NULL;
    l->s = cn_tls_session_new(l->ctx, client, at ? at + 1 : NULL);
    cn_buf_init(&l->pend);
    cn_buf_init(&l->flight);
    return l;
}

void cn__tls_conn_free(cn__tls_conn *l)
{
    if (l == NULL)
        return;
    cn_tls_session_free(l->s);
    cn_buf_free(&l->pend);
    cn_buf_free(&l->flight);
    free(l);
}

/* Hands what is pending to TCP unless a write is in flight. 0, or TCP's error. */
static int kick(cn__tls_conn *l)
{
    if (l->flying || l->closing)
        return 0;
    cn_tls_session_take(l->s, &l->pend);
    if (l->pend.len == 0)
        return 0;
    cn_buf tmp = l->flight;
    l->flight = l->pend;
    l->pend = tmp;
    l->pend.len = 0;
    l->flying = 1;
    l->owed_flying = l->owed;
    /* TCP may report the write done before it returns (cn__tls_conn_written). */
    int rc = cn__tcp_write_raw(l->tcp, l->flight.data, l->flight.len);
    if (rc < 0) {
        l->flying = 0;
        l->owed_flying = 0;
        l->flight.len = 0;
    }
    return rc;
}

/* A failure of TCP outside the connection's own write: the stream ends. */
static void tcp_failed(cn__tls_conn *l, int rc)
{
    if (l->owed) {
        l->owed = 0;
        cn_conn_written(l->conn, rc);
    } else {
        cn_conn_ended(l->conn, rc);
    }
}

void cn__tls_conn_written(cn__tls_conn *l, int status)
{
    assert(l->flying);
    l->flying = 0;
    l->flight.len = 0;
    cn_buf_shrink(&l->flight, CN_BUF_KEEP);
    int owed = l->owed_flying || (l->closing && l->owed);
    l->owed_flying = 0;
    if (owed)
        l->owed = 0;
    if (l->closing) {
        if (owed)
            cn_conn_written(l->conn, 0);
        return;
    }
    if (status < 0) {
        if (owed)
            cn_conn_written(l->conn, status);
        else
            cn_conn_ended(l->conn, status);
        return;
    }
    if (owed)
        cn_conn_written(l->conn, 0);
    int rc = l->closing ? 0 : kick(l);
    if (rc < 0)
        tcp_failed(l, rc);
}

int cn__tls_conn_write(cn__tls_conn *l, const char *data, size_t len)
{
    assert(!l->owed && l->hs_done);
    if (cn_tls_session_write(l->s, data, len) < 0) {
        char e[CN_LOG_ESC_MAX];
        CN_WARN("tls", "cannot encrypt for %s: %s", cn_log_escape_str(e, sizeof e, l->conn->addr),
                cn_tls_session_error(l->s));
        return CN_ETLS;
    }
    l->owed = 1;
    int rc = kick(l);
    if (rc < 0)
        l->owed = 0;
    return rc;
}

/*
 * The session failed: one line with the peer's address, the alert that says
 * why sent if TCP takes it at once, and the stream ends.
 */
static void refuse(cn__tls_conn *l)
{
    cn_conn *c = l->conn;
    char e1[CN_LOG_ESC_MAX], e2[CN_LOG_ESC_MAX];
    const char *why = cn_log_escape_str(e2, sizeof e2, cn_tls_session_error(l->s));
    CN_METRIC_INC(CN_MET_REFUSED_TLS);
    if (l->client)
        CN_WARN("tls", "TLS with %s (%s) failed: %s", cn_log_escape_str(e1, sizeof e1, c->dialed), c->addr, why);
    else
        CN_WARN("tls", "refused %s: TLS: %s", cn_log_escape_str(e1, sizeof e1, c->addr), why);
    if (!l->flying) {
        cn_tls_session_take(l->s, &l->pend);
        cn__tcp_try_write(l->tcp, l->pend.data, l->pend.len);
        l->pend.len = 0;
    }
    cn_conn_ended(c, CN_ETLS);
}

void cn__tls_conn_start(cn__tls_conn *l)
{
    int rc = cn_tls_session_handshake(l->s);
    assert(rc <= 0);
    if (rc < 0) {
        refuse(l);
        return;
    }
    rc = kick(l);
    if (rc < 0)
        tcp_failed(l, rc);
}

void cn__tls_conn_read_buf(cn__tls_conn *l, char **base, size_t *len)
{
    *base = l->ctx->rbuf;
    *len = sizeof l->ctx->rbuf;
}

/* Decrypts everything the session holds into the connection's read buffer. */
static void pump(cn__tls_conn *l)
{
    cn_conn *c = l->conn;
    while (!l->closing) {
        char *base;
        size_t room;
        cn_conn_read_buf(c, PLAIN_CHUNK, &base, &room);
        long n = cn_tls_session_read(l->s, base, room);
        if (n > 0) {
            cn_conn_read_done(c, (size_t)n);
            continue;
        }
        if (n == 0) {
            int rc = kick(l);   /* a record may need an answer (a TLS 1.3 key update) */
            if (rc < 0)
                tcp_failed(l, rc);
        } else if (n == -ESHUTDOWN) {
            cn_conn_ended(c, 0);
        } else {
            refuse(l);
        }
        return;
    }
}

/* The TLS handshake is done: the distribution handshake starts inside it. */
static void tls_up(cn__tls_conn *l)
{
    char e[CN_LOG_ESC_MAX];
    l->hs_done = 1;
    CN_DEBUG("tls", "%s with %s, cipher %s", cn_tls_session_version(l->s),
             cn_log_escape_str(e, sizeof e, l->conn->addr), cn_tls_session_cipher(l->s));
    if (l->client)
        cn__conn_connected(l->conn);
}

void cn__tls_conn_read_done(cn__tls_conn *l, size_t n)
{
    assert(!l->closing);
    cn_tls_session_put(l->s, l->ctx->rbuf, n);
    if (!l->hs_done) {
        int rc = cn_tls_session_handshake(l->s);
        if (rc < 0) {
            refuse(l);
            return;
        }
        int wrc = kick(l);
        if (wrc < 0) {
            tcp_failed(l, wrc);
            return;
        }
        if (rc == 0 || l->closing)
            return;
        tls_up(l);
    }
    pump(l);
}

void cn__tls_conn_close(cn__tls_conn *l)
{
    if (l->closing)
        return;
    l->closing = 1;
    /* close_notify, when it can go at once; a peer that misses it sees the TCP close. */
    if (l->hs_done && !l->flying) {
        cn_tls_session_shutdown(l->s);
        cn_tls_session_take(l->s, &l->pend);
        cn__tcp_try_write(l->tcp, l->pend.data, l->pend.len);
        l->pend.len = 0;
    }
}

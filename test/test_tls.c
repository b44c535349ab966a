/*
 * TLS distribution (cnode/tls.h), at three levels.
 *
 * The configuration: what cn_tls_ctx_new refuses at start-up (a missing file, a
 * key that does not match, an expired certificate of ours, verify_peer without
 * a CA) and what it takes (a key inside the certificate file, as OTP's default).
 *
 * The session over memory, both roles: a handshake and records delivered whole,
 * one byte at a time, and split at every byte boundary of a record in both
 * directions; over a socket pair in odd-sized reads; and what each side refuses
 * (a certificate of another CA, an expired one, a server that does not name the
 * host dialed, a plaintext peer, a corrupted record), each with its reason.
 *
 * The transport: two nodes in one loop over loopback TCP, one dialing the other
 * (--connect through a fake epmd), messages both ways, one of them large; and a
 * node refusing a dialer of another CA, with the dialer's address in the log,
 * while the same node goes on serving a good one.
 *
 * The certificates are made here with OpenSSL's API in a temporary directory: a
 * CA, a rogue CA, and leaves signed by them.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "cnode/buf.h"
#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/node.h"
#include "cnode/proc.h"
#include "cnode/tls.h"
#include "test/fake_epmd.h"

/* ---- Certificates for the run ---- */

static char dir[64];

static const char *path(const char *file)
{
    static char bufs[8][160];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, file);
    return b;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    assert_non_null(e);
    assert_int_equal(X509_add_ext(x, e, -1), 1);
    X509_EXTENSION_free(e);
}

/*
 * A certificate for key named cn, valid from `from` to `to` seconds from now,
 * signed by issuer (with ikey), or a self-signed CA when issuer is NULL.
 */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *ikey, long from, long to,
                       const char *san)
{
    static long serial = 1;
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), from);
    X509_gmtime_adj(X509_getm_notAfter(x), to);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    if (issuer == NULL)
        add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
    if (san != NULL)
        add_ext(x, issuer ? issuer : x, NID_subject_alt_name, san);
    assert_true(X509_sign(x, ikey ? ikey : key, EVP_sha256()) > 0);
    return x;
}

static void write_pem(const char *name, X509 *x, EVP_PKEY *key, int key_inside)
{
    char file[64];
    snprintf(file, sizeof file, "%s.pem", name);
    FILE *f = fopen(path(file), "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    if (key_inside)
        assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    snprintf(file, sizeof file, "%s.key", name);
    f = fopen(path(file), "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
}

static const char *const SAN_HERE = "IP:127.0.0.1,DNS:localhost";

/* A leaf named cn signed by ca/ca_key, valid from..to seconds from now. */
static void leaf(const char *cn, X509 *ca, EVP_PKEY *ca_key, long from, long to, const char *san, int key_inside)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    X509 *x = make_cert(k, cn, ca, ca_key, from, to, san);
    write_pem(cn, x, k, key_inside);
    X509_free(x);
    EVP_PKEY_free(k);
}

static const char *const FILES[] = {"ca", "rogue_ca", "server", "client", "rogue", "expired", "ip_only",
                                    "dns_only", "otherhost", "combined"};

static int make_certs(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/cnode_tls_XXXXXX");
    assert_non_null(mkdtemp(dir));
    EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *rogue_key = EVP_EC_gen("P-256");
    X509 *ca = make_cert(ca_key, "ca", NULL, NULL, -60, 86400, NULL);
    X509 *rogue = make_cert(rogue_key, "rogue_ca", NULL, NULL, -60, 86400, NULL);
    write_pem("ca", ca, ca_key, 0);
    write_pem("rogue_ca", rogue, rogue_key, 0);
    leaf("server", ca, ca_key, -60, 86400, SAN_HERE, 0);
    leaf("client", ca, ca_key, -60, 86400, SAN_HERE, 0);
    leaf("rogue", rogue, rogue_key, -60, 86400, SAN_HERE, 0);
    leaf("expired", ca, ca_key, -7200, -3600, SAN_HERE, 0);
    leaf("ip_only", ca, ca_key, -60, 86400, "IP:127.0.0.1", 0);
    leaf("dns_only", ca, ca_key, -60, 86400, "DNS:127.0.0.1", 0);
    leaf("otherhost", ca, ca_key, -60, 86400, "DNS:elsewhere.example", 0);
    leaf("combined", ca, ca_key, -60, 86400, SAN_HERE, 1);
    X509_free(ca);
    X509_free(rogue);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(rogue_key);
    return 0;
}

static int remove_certs(void **state)
{
    (void)state;
    char file[64];
    for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++) {
        snprintf(file, sizeof file, "%s.pem", FILES[i]);
        unlink(path(file));
        snprintf(file, sizeof file, "%s.key", FILES[i]);
        unlink(path(file));
    }
    unlink(path("stderr.log"));
    return rmdir(dir);
}

/* ---- Sessions over memory ---- */

static cn_tls_config config(const char *name, const char *ca)
{
    static char cert[8][160], key[8][160];
    static int next;
    int i = next++ % 8;
    snprintf(cert[i], sizeof cert[i], "%s/%s.pem", dir, name);
    snprintf(key[i], sizeof key[i], "%s/%s.key", dir, name);
    cn_tls_config cfg = {.certfile = cert[i], .keyfile = key[i], .cacertfile = ca ? path(ca) : NULL};
    return cfg;
}

static cn_tls_ctx *ctx_of(const cn_tls_config *cfg)
{
    char why[512] = "";
    cn_tls_ctx *ctx = NULL;
    int rc = cn_tls_ctx_new(cfg, &ctx, why, sizeof why);
    if (rc != 0)
        fail_msg("cn_tls_ctx_new: %s", why);
    return ctx;
}

typedef struct pair {
    cn_tls_ctx *cctx, *sctx;
    cn_tls_session *c, *s;
    int cst, sst;               /* each side's handshake: 0 going, 1 done, < 0 failed */
} pair;

/* A client with certificate ccert and a server with scert, both trusting ca.pem. */
static void pair_new(pair *p, const char *ccert, const char *scert, const char *host)
{
    memset(p, 0, sizeof *p);
    cn_tls_config cc = config(ccert, "ca.pem"), sc = config(scert, "ca.pem");
    p->cctx = ctx_of(&cc);
    p->sctx = ctx_of(&sc);
    p->c = cn_tls_session_new(p->cctx, 1, host);
    p->s = cn_tls_session_new(p->sctx, 0, NULL);
}

static void pair_free(pair *p)
{
    cn_tls_session_free(p->c);
    cn_tls_session_free(p->s);
    cn_tls_ctx_free(p->cctx);
    cn_tls_ctx_free(p->sctx);
}

/*
 * Moves what `from` has to send into `to`, step bytes at a time (0: at once),
 * running to's handshake after each piece while it is going.
 */
static void deliver(cn_tls_session *from, cn_tls_session *to, size_t step, int *st)
{
    cn_buf b;
    cn_buf_init(&b);
    cn_tls_session_take(from, &b);
    for (size_t off = 0; off < b.len;) {
        size_t n = step == 0 || step > b.len - off ? b.len - off : step;
        cn_tls_session_put(to, b.data + off, n);
        off += n;
        if (*st == 0)
            *st = cn_tls_session_handshake(to);
    }
    cn_buf_free(&b);
}

/* Runs the handshake to its end, either way; returns 1 when both sides are done. */
static int handshake(pair *p, size_t step)
{
    p->cst = cn_tls_session_handshake(p->c);
    assert_int_equal(p->cst, 0);
    for (int round = 0; round < 10 && p->cst >= 0 && p->sst >= 0 && (p->cst != 1 || p->sst != 1); round++) {
        deliver(p->c, p->s, step, &p->sst);
        deliver(p->s, p->c, step, &p->cst);
    }
    /* A refusal's alert reaches the other side. */
    deliver(p->c, p->s, step, &p->sst);
    deliver(p->s, p->c, step, &p->cst);
    return p->cst == 1 && p->sst == 1;
}

/* Everything `to` can decrypt now, appended to out; returns read's last result. */
static long drain(cn_tls_session *to, cn_buf *out)
{
    for (;;) {
        cn_buf_reserve(out, 16384);
        long n = cn_tls_session_read(to, out->data + out->len, out->cap - out->len);
        if (n <= 0)
            return n;
        out->len += (size_t)n;
    }
}

/* len patterned bytes from `from` to `to`, step bytes at a time; asserts they arrive intact. */
static void send_and_check(cn_tls_session *from, cn_tls_session *to, size_t len, size_t step)
{
    char *msg = test_malloc(len);
    for (size_t i = 0; i < len; i++)
        msg[i] = (char)(i * 7 + 3);
    assert_int_equal(cn_tls_session_write(from, msg, len), 0);
    cn_buf got, wire;
    cn_buf_init(&got);
    cn_buf_init(&wire);
    cn_tls_session_take(from, &wire);
    for (size_t off = 0; off < wire.len;) {
        size_t n = step == 0 || step > wire.len - off ? wire.len - off : step;
        cn_tls_session_put(to, wire.data + off, n);
        off += n;
        assert_int_equal(drain(to, &got), 0);
    }
    assert_int_equal(got.len, len);
    assert_memory_equal(got.data, msg, len);
    cn_buf_free(&got);
    cn_buf_free(&wire);
    test_free(msg);
}

static void handshake_and_records_whole(void **state)
{
    (void)state;
    pair p;
    pair_new(&p, "client", "server", "127.0.0.1");
    assert_true(handshake(&p, 0));
    assert_string_equal(cn_tls_session_version(p.c), "TLSv1.3");
    /* Both ends name the one suite they agreed on, a TLS 1.3 one. */
    assert_string_equal(cn_tls_session_cipher(p.c), cn_tls_session_cipher(p.s));
    assert_non_null(strstr(cn_tls_session_cipher(p.c), "TLS_"));
    send_and_check(p.c, p.s, 100, 0);
    send_and_check(p.s, p.c, 100, 0);
    /* A message larger than a record crosses as several. */
    send_and_check(p.c, p.s, 200000, 0);
    send_and_check(p.s, p.c, 200000, 0);
    pair_free(&p);
}

static void handshake_and_records_a_byte_at_a_time(void **state)
{
    (void)state;
    pair p;
    pair_new(&p, "client", "server", "127.0.0.1");
    assert_true(handshake(&p, 1));
    send_and_check(p.c, p.s, 40000, 1);
    send_and_check(p.s, p.c, 40000, 1);
    pair_free(&p);
}

/* One record, cut in two at byte k, for every k: nothing comes out until its last byte. */
static void split_every_boundary(cn_tls_session *from, cn_tls_session *to)
{
    char msg[300], out[400];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (char)i;
    cn_buf wire;
    cn_buf_init(&wire);
    assert_int_equal(cn_tls_session_write(from, msg, sizeof msg), 0);
    cn_tls_session_take(from, &wire);
    size_t len = wire.len;
    for (size_t k = 1; k < len; k++) {
        if (k > 1) {
            wire.len = 0;
            assert_int_equal(cn_tls_session_write(from, msg, sizeof msg), 0);
            cn_tls_session_take(from, &wire);
            assert_int_equal(wire.len, len);
        }
        cn_tls_session_put(to, wire.data, k);
        assert_int_equal(cn_tls_session_read(to, out, sizeof out), 0);
        cn_tls_session_put(to, wire.data + k, len - k);
        assert_int_equal(cn_tls_session_read(to, out, sizeof out), (long)sizeof msg);
        assert_memory_equal(out, msg, sizeof msg);
        assert_int_equal(cn_tls_session_read(to, out, sizeof out), 0);
    }
    cn_buf_free(&wire);
}

static void records_split_at_every_byte_both_ways(void **state)
{
    (void)state;
    pair p;
    pair_new(&p, "client", "server", "127.0.0.1");
    assert_true(handshake(&p, 0));
    split_every_boundary(p.c, p.s);
    split_every_boundary(p.s, p.c);
    pair_free(&p);
}

/* The handshake's flights, each cut in two at every byte: a fresh pair per cut. */
static void handshake_split_at_every_byte(void **state)
{
    (void)state;
    pair p;
    pair_new(&p, "client", "server", "127.0.0.1");
    assert_int_equal(cn_tls_session_handshake(p.c), 0);
    cn_buf hello;
    cn_buf_init(&hello);
    cn_tls_session_take(p.c, &hello);
    size_t len = hello.len;
    pair_free(&p);
    /* The ClientHello: every cut point leaves the server waiting, then going on. */
    for (size_t k = 1; k < len; k++) {
        pair_new(&p, "client", "server", "127.0.0.1");
        assert_int_equal(cn_tls_session_handshake(p.c), 0);
        hello.len = 0;
        cn_tls_session_take(p.c, &hello);
        assert_int_equal(hello.len, len);
        cn_tls_session_put(p.s, hello.data, k);
        assert_int_equal(cn_tls_session_handshake(p.s), 0);
        assert_false(cn_tls_session_pending(p.s));
        cn_tls_session_put(p.s, hello.data + k, hello.len - k);
        assert_int_equal(cn_tls_session_handshake(p.s), 0);
        assert_true(cn_tls_session_pending(p.s));
        deliver(p.s, p.c, 0, &p.cst);
        assert_int_equal(p.cst, 1);
        deliver(p.c, p.s, 0, &p.sst);
        assert_int_equal(p.sst, 1);
        pair_free(&p);
    }
    cn_buf_free(&hello);
}

/* ---- Over a socket pair ---- */

/* Writes what from has to fd, reads the other end in 7-byte pieces into to. */
static void through(int wfd, int rfd, cn_tls_session *from, cn_tls_session *to, int *st)
{
    cn_buf b;
    cn_buf_init(&b);
    cn_tls_session_take(from, &b);
    assert_int_equal(write(wfd, b.data, b.len), (ssize_t)b.len);
    char piece[7];
    for (size_t got = 0; got < b.len;) {
        ssize_t n = read(rfd, piece, sizeof piece);
        assert_true(n > 0);
        got += (size_t)n;
        cn_tls_session_put(to, piece, (size_t)n);
        if (*st == 0)
            *st = cn_tls_session_handshake(to);
    }
    cn_buf_free(&b);
}

static void over_a_socket_pair(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    pair p;
    pair_new(&p, "client", "server", "127.0.0.1");
    assert_int_equal(cn_tls_session_handshake(p.c), 0);
    for (int round = 0; round < 10 && (p.cst != 1 || p.sst != 1); round++) {
        through(sv[0], sv[1], p.c, p.s, &p.sst);
        through(sv[1], sv[0], p.s, p.c, &p.cst);
    }
    assert_int_equal(p.cst, 1);
    assert_int_equal(p.sst, 1);
    static char msg[50000];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (char)(i % 251);
    for (int dir_ = 0; dir_ < 2; dir_++) {
        cn_tls_session *from = dir_ ? p.s : p.c, *to = dir_ ? p.c : p.s;
        int done = 1;
        assert_int_equal(cn_tls_session_write(from, msg, sizeof msg), 0);
        through(sv[dir_], sv[1 - dir_], from, to, &done);
        cn_buf got;
        cn_buf_init(&got);
        assert_int_equal(drain(to, &got), 0);
        assert_int_equal(got.len, sizeof msg);
        assert_memory_equal(got.data, msg, sizeof msg);
        cn_buf_free(&got);
    }
    pair_free(&p);
    close(sv[0]);
    close(sv[1]);
}

/* ---- What a session refuses ---- */

/*
 * A client made with OpenSSL directly, for the certificates our own
 * configuration refuses to present (an expired one) and for none at all.
 */
typedef struct raw_client {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *in, *out;
} raw_client;

static void raw_new(raw_client *r, const char *cert)
{
    r->ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(r->ctx);
    if (cert != NULL) {
        char file[64];
        snprintf(file, sizeof file, "%s.pem", cert);
        assert_int_equal(SSL_CTX_use_certificate_file(r->ctx, path(file), SSL_FILETYPE_PEM), 1);
        snprintf(file, sizeof file, "%s.key", cert);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(r->ctx, path(file), SSL_FILETYPE_PEM), 1);
    }
    r->ssl = SSL_new(r->ctx);
    r->in = BIO_new(BIO_s_mem());
    r->out = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(r->in, -1);
    SSL_set_bio(r->ssl, r->in, r->out);
    SSL_set_connect_state(r->ssl);
}

static void raw_free(raw_client *r)
{
    SSL_free(r->ssl);
    SSL_CTX_free(r->ctx);
}

/* Runs the raw client against server session s; returns s's handshake result. */
static int raw_handshake(raw_client *r, cn_tls_session *s)
{
    int st = 0;
    char buf[16384];
    for (int round = 0; round < 10 && st == 0; round++) {
        SSL_do_handshake(r->ssl);
        int n;
        while ((n = BIO_read(r->out, buf, sizeof buf)) > 0)
            cn_tls_session_put(s, buf, (size_t)n);
        st = cn_tls_session_handshake(s);
        cn_buf b;
        cn_buf_init(&b);
        cn_tls_session_take(s, &b);
        BIO_write(r->in, b.data, (int)b.len);
        cn_buf_free(&b);
    }
    /* TLS 1.3: the client's certificate comes with its last flight. */
    if (st == 1) {
        SSL_do_handshake(r->ssl);
        int n;
        while ((n = BIO_read(r->out, buf, sizeof buf)) > 0)
            cn_tls_session_put(s, buf, (size_t)n);
        if (cn_tls_session_read(s, buf, sizeof buf) == CN_ETLS)
            st = CN_ETLS;
    }
    return st;
}

/* A client presenting cert (NULL: none) to a server configured by scfg; s's result and error. */
static int against_server(const char *cert, cn_tls_config scfg, char *why, size_t n)
{
    cn_tls_ctx *sctx = ctx_of(&scfg);
    cn_tls_session *s = cn_tls_session_new(sctx, 0, NULL);
    raw_client r;
    raw_new(&r, cert);
    int st = raw_handshake(&r, s);
    snprintf(why, n, "%s", cn_tls_session_error(s));
    raw_free(&r);
    cn_tls_session_free(s);
    cn_tls_ctx_free(sctx);
    return st;
}

static void refused_by_server(const char *ccert, const char *reason)
{
    char why[256];
    assert_int_equal(against_server(ccert, config("server", "ca.pem"), why, sizeof why), CN_ETLS);
    if (strstr(why, reason) == NULL)
        fail_msg("server's error '%s' lacks '%s'", why, reason);
}

static void a_certificate_of_another_ca_is_refused(void **state)
{
    (void)state;
    refused_by_server("rogue", "unable to get local issuer certificate, subject /CN=rogue");
    /* And between two of our own sessions, the client hears why in the alert. */
    pair p = {0};
    cn_tls_config cc = config("rogue", "ca.pem"), sc = config("server", "ca.pem");
    p.cctx = ctx_of(&cc);
    p.sctx = ctx_of(&sc);
    p.c = cn_tls_session_new(p.cctx, 1, "127.0.0.1");
    p.s = cn_tls_session_new(p.sctx, 0, NULL);
    assert_false(handshake(&p, 0));
    assert_int_equal(p.sst, CN_ETLS);
    assert_true(p.cst < 0 || cn_tls_session_read(p.c, (char[16]){0}, 16) == CN_ETLS);
    assert_non_null(strstr(cn_tls_session_error(p.c), "unknown ca"));
    pair_free(&p);
}

static void an_expired_certificate_is_refused(void **state)
{
    (void)state;
    refused_by_server("expired", "certificate has expired, subject /CN=expired");
}

/* fail_if_no_peer_cert: on by default, and off when told. */
static void a_client_without_a_certificate(void **state)
{
    (void)state;
    refused_by_server(NULL, "peer did not return a certificate");
    char why[256];
    cn_tls_config sc = config("server", "ca.pem");
    sc.no_fail_if_no_peer_cert = 1;
    assert_int_equal(against_server(NULL, sc, why, sizeof why), 1);
    /* A certificate that does not verify is still refused. */
    assert_int_equal(against_server("rogue", sc, why, sizeof why), CN_ETLS);
}

static void a_plaintext_peer_is_refused(void **state)
{
    (void)state;
    pair p;
    pair_new(&p, "client", "server", NULL);
    /* The first bytes of a plain distribution handshake: a 2-byte length, then 'N'. */
    static const char plain[] = {0, 20, 'N', 0, 0, 0, 0, 0, 0, 0, 0};
    cn_tls_session_put(p.s, plain, sizeof plain);
    assert_int_equal(cn_tls_session_handshake(p.s), CN_ETLS);
    assert_non_null(strstr(cn_tls_session_error(p.s), "plaintext"));
    pair_free(&p);
    /* A server that answers a client's hello with an alert speaks TLS: it is no plaintext peer. */
    pair_new(&p, "client", "server", NULL);
    assert_int_equal(cn_tls_session_handshake(p.c), 0);
    static const char alert[] = {21, 3, 3, 0, 2, 2, 40};
    cn_tls_session_put(p.c, alert, sizeof alert);
    assert_int_equal(cn_tls_session_handshake(p.c), CN_ETLS);
    assert_null(strstr(cn_tls_session_error(p.c), "plaintext"));
    assert_non_null(strstr(cn_tls_session_error(p.c), "handshake failure"));
    pair_free(&p);
}

/* The client checks the host it dialed against the server's certificate. */
static void hosts(const char *scert, const char *host, int ok)
{
    pair p;
    pair_new(&p, "client", scert, host);
    assert_int_equal(handshake(&p, 0), ok);
    if (!ok) {
        assert_int_equal(p.cst, CN_ETLS);
        assert_non_null(strstr(cn_tls_session_error(p.c), "hostname mismatch"));
    }
    pair_free(&p);
}

static void the_server_must_name_the_host_dialed(void **state)
{
    (void)state;
    hosts("server", "127.0.0.1", 1);
    hosts("server", "localhost", 1);
    hosts("ip_only", "127.0.0.1", 1);
    /* OTP's client compares the host as a string with the certificate's DNS names. */
    hosts("dns_only", "127.0.0.1", 1);
    hosts("otherhost", "127.0.0.1", 0);
    hosts("ip_only", "localhost", 0);
    /* The accepting side checks no host name, as OTP's: a client of any name is let in. */
    hosts("server", NULL, 1);
}

static void verify_none_checks_nothing(void **state)
{
    (void)state;
    cn_tls_config cc = config("rogue", NULL), sc = config("otherhost", NULL);
    cc.verify_none = sc.verify_none = 1;
    pair p = {0};
    p.cctx = ctx_of(&cc);
    p.sctx = ctx_of(&sc);
    p.c = cn_tls_session_new(p.cctx, 1, "127.0.0.1");
    p.s = cn_tls_session_new(p.sctx, 0, NULL);
    assert_true(handshake(&p, 0));
    send_and_check(p.c, p.s, 10, 0);
    pair_free(&p);
}

static void a_corrupted_record_ends_the_session(void **state)
{
    (void)state;
    pair p;
    pair_new(&p, "client", "server", "127.0.0.1");
    assert_true(handshake(&p, 0));
    assert_int_equal(cn_tls_session_write(p.c, "hello", 5), 0);
    cn_buf wire;
    cn_buf_init(&wire);
    cn_tls_session_take(p.c, &wire);
    wire.data[wire.len - 3] ^= 1;
    cn_tls_session_put(p.s, wire.data, wire.len);
    char out[16];
    assert_int_equal(cn_tls_session_read(p.s, out, sizeof out), CN_ETLS);
    assert_string_not_equal(cn_tls_session_error(p.s), "");
    cn_buf_free(&wire);
    pair_free(&p);
}

static void close_notify_is_a_clean_end(void **state)
{
    (void)state;
    pair p;
    pair_new(&p, "client", "server", "127.0.0.1");
    assert_true(handshake(&p, 0));
    cn_tls_session_shutdown(p.s);
    int st = 1;
    deliver(p.s, p.c, 0, &st);
    char out[16];
    assert_int_equal(cn_tls_session_read(p.c, out, sizeof out), -ESHUTDOWN);
    pair_free(&p);
}

/* ---- The configuration ---- */

static void refused_config(cn_tls_config cfg, const char *reason)
{
    char why[512] = "";
    cn_tls_ctx *ctx = (cn_tls_ctx *)&why; /* must stay untouched */
    assert_int_equal(cn_tls_ctx_new(&cfg, &ctx, why, sizeof why), CN_ETLS);
    assert_ptr_equal(ctx, (cn_tls_ctx *)&why);
    if (strstr(why, reason) == NULL)
        fail_msg("'%s' lacks '%s'", why, reason);
    assert_null(strchr(why, '\n'));
}

static void bad_configurations_are_refused_with_a_reason(void **state)
{
    (void)state;
    cn_tls_config cfg = config("server", "ca.pem");
    cfg.certfile = path("missing.pem");
    refused_config(cfg, "cannot read the certificate file");
    cfg = config("server", "ca.pem");
    cfg.keyfile = path("client.key");
    refused_config(cfg, "does not match the certificate");
    refused_config(config("expired", "ca.pem"), "has expired");
    refused_config(config("server", NULL), "needs a CA file");
    refused_config(config("server", "server.key"), "cannot load the CA file");
    cfg = config("server", "ca.pem");
    cfg.certfile = path("ca.key");
    refused_config(cfg, "cannot load the certificate file");
    cfg = config("server", "ca.pem");
    cfg.certfile = NULL;
    refused_config(cfg, "needs a certificate file");
}

static void good_configurations_load(void **state)
{
    (void)state;
    /* The key inside the certificate file, as OTP's keyfile defaults to certfile. */
    cn_tls_config cfg = {.certfile = path("combined.pem"), .cacertfile = path("ca.pem")};
    cn_tls_ctx_free(ctx_of(&cfg));
    /* verify_none needs no CA. */
    cfg = config("server", NULL);
    cfg.verify_none = 1;
    cn_tls_ctx_free(ctx_of(&cfg));
    cfg = config("server", "ca.pem");
    cfg.no_fail_if_no_peer_cert = 1;
    cn_tls_ctx_free(ctx_of(&cfg));
}

/* ---- Two nodes over loopback TCP ---- */

typedef struct duo {
    uv_loop_t loop;
    fake_epmd epmd;
    cn_node *a, *b;
    cn_proc *pa, *pb;
    int closes;
    size_t got_a, got_b;        /* bytes of the last message each received */
    int msgs_a, msgs_b;
} duo;

static void duo_message(cn_proc *p, const char *buf, size_t len)
{
    (void)buf;
    duo *d = cn_proc_data(p);
    if (p == d->pa) {
        d->msgs_a++;
        d->got_a = len;
    } else {
        d->msgs_b++;
        d->got_b = len;
    }
}

static const cn_proc_ops duo_ops = {.message = duo_message};

static cn_node *duo_node(duo *d, const char *name, const cn_tls_config *tls, cn_proc **p)
{
    cn_node_config cfg = {.name = name, .cookie = "k", .no_epmd = 1, .tls = tls};
    cn_node *n;
    assert_int_equal(cn_node_new(&d->loop, &cfg, &n), 0);
    assert_int_equal(cn_node_start(n, NULL), 0);
    *p = cn_proc_spawn(n, &duo_ops, d);
    assert_int_equal(cn_proc_register(*p, "sink"), 0);
    return n;
}

/* Node a accepts, node b dials it (through the fake epmd), each with its certificate. */
static void duo_start(duo *d, const char *acert, const char *bcert)
{
    memset(d, 0, sizeof *d);
    assert_int_equal(uv_loop_init(&d->loop), 0);
    static const fe_act ok[] = {FE_OK};
    fe_start(&d->loop, &d->epmd, ok, 1);
    cn_tls_config ac = config(acert, "ca.pem"), bc = config(bcert, "ca.pem");
    d->a = duo_node(d, "a@127.0.0.1", &ac, &d->pa);
    d->b = duo_node(d, "b@127.0.0.1", &bc, &d->pb);
    d->epmd.node_port = cn_node_port(d->a);
    assert_int_equal(cn_node_connect(d->b, "a@127.0.0.1"), 0);
}

static unsigned connections(cn_node *n)
{
    cn_node_stats st;
    cn_node_get_stats(n, &st);
    return st.connections;
}

static void on_closed(cn_node *n)
{
    duo *d = cn_node_data(n);
    d->closes++;
}

static void duo_stop(duo *d)
{
    cn_node_set_data(d->a, d);
    cn_node_set_data(d->b, d);
    cn_node_close(d->a, on_closed);
    cn_node_close(d->b, on_closed);
    fe_close(&d->epmd);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    assert_int_equal(d->closes, 2);
    assert_int_equal(cn_node_free(d->a), 0);
    assert_int_equal(cn_node_free(d->b), 0);
    assert_int_equal(uv_loop_close(&d->loop), 0);
}

/* Turns the loop until *n reaches want (bounded in turns, not in time). */
static void run_until(duo *d, const int *n, int want)
{
    for (int turn = 0; turn < 100000 && *n < want; turn++)
        uv_run(&d->loop, UV_RUN_ONCE);
    assert_true(*n >= want);
}

static void run_until_connected(duo *d)
{
    for (int turn = 0; turn < 100000 && (connections(d->a) == 0 || connections(d->b) == 0); turn++)
        uv_run(&d->loop, UV_RUN_ONCE);
    assert_int_equal(connections(d->a), 1);
    assert_int_equal(connections(d->b), 1);
}

/* A binary of n bytes as an external term, in x. */
static void binary_term(ei_x_buff *x, size_t n)
{
    char *data = test_calloc(1, n);
    ei_x_new_with_version(x);
    ei_x_encode_binary(x, data, (long)n);
    test_free(data);
}

static void two_nodes_talk_over_tls_both_ways(void **state)
{
    (void)state;
    duo d;
    duo_start(&d, "server", "client");
    run_until_connected(&d);
    ei_x_buff small, big;
    binary_term(&small, 10);
    binary_term(&big, 300000);
    /* The dialer to the acceptor, by name; the acceptor back to the dialer's pid. */
    assert_int_equal(cn_send_name(d.pb, "sink", "a@127.0.0.1", small.buff, (size_t)small.index), 0);
    assert_int_equal(cn_send_name(d.pb, "sink", "a@127.0.0.1", big.buff, (size_t)big.index), 0);
    run_until(&d, &d.msgs_a, 2);
    assert_int_equal(d.got_a, (size_t)big.index);
    erlang_pid to;
    cn_proc_pid(d.pb, &to);
    assert_int_equal(cn_send(d.pa, &to, big.buff, (size_t)big.index), 0);
    assert_int_equal(cn_send(d.pa, &to, small.buff, (size_t)small.index), 0);
    run_until(&d, &d.msgs_b, 2);
    assert_int_equal(d.got_b, (size_t)small.index);
    ei_x_free(&small);
    ei_x_free(&big);
    duo_stop(&d);
}

/* Runs f with stderr going to a file, and returns what was written (test_free it). */
static char *stderr_of(void (*f)(void *), void *arg)
{
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path("stderr.log"), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    f(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *in = fopen(path("stderr.log"), "r");
    char *text = test_calloc(1, 65536);
    size_t n = fread(text, 1, 65535, in);
    text[n] = '\0';
    fclose(in);
    return text;
}

/* How many refusals of a dialer the log (stderr, redirected) holds so far. */
static int refusals_logged(void)
{
    fflush(stderr);
    FILE *in = fopen(path("stderr.log"), "r");
    assert_non_null(in);
    char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, in);
    fclose(in);
    buf[n] = '\0';
    int count = 0;
    for (char *s = buf; (s = strstr(s, "refused 127.0.0.1:")) != NULL; s++)
        count++;
    return count;
}

/* A dialer of another CA is refused, and a good dialer is served by the same node. */
static void refusal_then_witness(void *arg)
{
    duo *d = arg;
    duo_start(d, "server", "rogue");
    /* Node b's target dials again after each refusal: two refusals, and the first is whole. */
    for (int turn = 0; turn < 100000 && refusals_logged() < 2; turn++)
        uv_run(&d->loop, UV_RUN_ONCE);
    assert_true(refusals_logged() >= 2);
    assert_int_equal(connections(d->a), 0);
    cn_tls_config cc = config("client", "ca.pem");
    cn_node_config cfg = {.name = "c@127.0.0.1", .cookie = "k", .no_epmd = 1, .tls = &cc};
    cn_node *c;
    assert_int_equal(cn_node_new(&d->loop, &cfg, &c), 0);
    assert_int_equal(cn_node_start(c, NULL), 0);
    assert_int_equal(cn_node_connect(c, "a@127.0.0.1"), 0);
    for (int turn = 0; turn < 100000 && connections(c) == 0; turn++)
        uv_run(&d->loop, UV_RUN_ONCE);
    assert_int_equal(connections(c), 1);
    assert_int_equal(connections(d->a), 1);
    cn_node_set_data(c, d);
    cn_node_close(c, on_closed);
    run_until(d, &d->closes, 1);
    assert_int_equal(cn_node_free(c), 0);
    d->closes = 0;
    duo_stop(d);
}

static void a_refused_dialer_is_logged_with_its_address(void **state)
{
    (void)state;
    duo d;
    cn_log_level old = cn_log_threshold;
    cn_log_threshold = CN_LOG_WARNING;
    char *log = stderr_of(refusal_then_witness, &d);
    cn_log_threshold = old;
    assert_non_null(strstr(log, "refused 127.0.0.1:"));
    assert_non_null(strstr(log, "TLS: the peer's certificate: unable to get local issuer certificate"));
    assert_non_null(strstr(log, "subject /CN=rogue"));
    test_free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_configurations_are_refused_with_a_reason),
        cmocka_unit_test(good_configurations_load),
        cmocka_unit_test(handshake_and_records_whole),
        cmocka_unit_test(handshake_and_records_a_byte_at_a_time),
        cmocka_unit_test(records_split_at_every_byte_both_ways),
        cmocka_unit_test(handshake_split_at_every_byte),
        cmocka_unit_test(over_a_socket_pair),
        cmocka_unit_test(a_certificate_of_another_ca_is_refused),
        cmocka_unit_test(an_expired_certificate_is_refused),
        cmocka_unit_test(a_client_without_a_certificate),
        cmocka_unit_test(a_plaintext_peer_is_refused),
        cmocka_unit_test(the_server_must_name_the_host_dialed),
        cmocka_unit_test(verify_none_checks_nothing),
        cmocka_unit_test(a_corrupted_record_ends_the_session),
        cmocka_unit_test(close_notify_is_a_clean_end),
        cmocka_unit_test(two_nodes_talk_over_tls_both_ways),
        cmocka_unit_test(a_refused_dialer_is_logged_with_its_address),
    };
    return cmocka_run_group_tests(tests, make_certs, remove_certs);
}

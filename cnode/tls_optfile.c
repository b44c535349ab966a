/*
 * erl's -ssl_dist_optfile (tls_optfile.h): a small reader of the Erlang terms
 * such a file holds (lists, tuples, atoms, strings, integers, % comments),
 * then the options it understands.
 *
 * The file is the operator's, not a peer's, but it is still read with bounds:
 * at most 1 MiB, nesting at most 16 deep.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnode/buf.h"
#include "cnode/error.h"
#include "cnode/mem.h"
#include "cnode/tls_optfile.h"

#define MAX_FILE (1024 * 1024)
#define MAX_DEPTH 16

enum { T_ATOM, T_STRING, T_INT, T_LIST, T_TUPLE };

typedef struct term {
    int type;
    char *text;                 /* atom or string, NUL-terminated */
    long num;
    struct term *kids;          /* list or tuple */
    size_t n;
} term;

typedef struct parser {
    const char *s, *end;
    int line;
    char *why;
    size_t whylen;
} parser;

static int perr(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int perr(parser *p, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->why, p->whylen, "line %d: %s", p->line, msg);
    return CN_ETLS;
}

static void term_free(term *t)
{
    for (size_t i = 0; i < t->n; i++)
        term_free(&t->kids[i]);
    free(t->kids);
    free(t->text);
}

/* Skips blanks and % comments, counting lines. */
static void skip(parser *p)
{
    while (p->s < p->end) {
        if (*p->s == '%') {
            while (p->s < p->end && *p->s != '\n')
                p->s++;
        } else if (isspace((unsigned char)*p->s)) {
            p->line += *p->s == '\n';
            p->s++;
        } else {
            return;
        }
    }
}

/* A quoted atom or a string, up to the closing quote; \\ and \" (and \', \n, \t) escaped. */
static int quoted(parser *p, char q, term *out)
{
    cn_buf b;
    cn_buf_init(&b);
    for (p->s++; p->s < p->end && *p->s != q; p->s++) {
        char c = *p->s;
        if (c == '\n')
            p->line++;
        if (c == '\\' && p->s + 1 < p->end) {
            c = *++p->s;
            c = c == 'n' ? '\n' : c == 't' ? '\t' : c;
        }
        cn_buf_append(&b, &c, 1);
    }
    if (p->s >= p->end) {
        cn_buf_free(&b);
        return perr(p, "unterminated %s", q == '"' ? "string" : "quoted atom");
    }
    p->s++;
    cn_buf_append(&b, "", 1);
    out->type = q == '"' ? T_STRING : T_ATOM;
    out->text = b.data;
    return 0;
}

static int word(parser *p, term *out)
{
    const char *start = p->s;
    while (p->s < p->end && (isalnum((unsigned char)*p->s) || *p->s == '_' || *p->s == '@'))
        p->s++;
    size_t n = (size_t)(p->s - start);
    if (isdigit((unsigned char)*start) || *start == '-') {
        char num[32];
        snprintf(num, sizeof num, "%.*s", (int)(n < 31 ? n : 31), start);
        char *end;
        errno = 0;
        out->type = T_INT;
        out->num = strtol(num, &end, 10);
        return *end || errno ? perr(p, "bad integer '%s'", num) : 0;
    }
    out->type = T_ATOM;
    out->text = cn_malloc(n + 1);
    memcpy(out->text, start, n);
    out->text[n] = '\0';
    return 0;
}

static int parse(parser *p, term *out, int depth);

/* The elements of a list or tuple up to `close`, comma separated. */
static int seq(parser *p, char close, term *out, int depth)
{
    out->type = close == ']' ? T_LIST : T_TUPLE;
    p->s++;
    skip(p);
    if (p->s < p->end && *p->s == close) {
        p->s++;
        return 0;
    }
    for (;;) {
        out->kids = cn_realloc(out->kids, (out->n + 1) * sizeof *out->kids);
        memset(&out->kids[out->n], 0, sizeof *out->kids);
        int rc = parse(p, &out->kids[out->n++], depth + 1);
        if (rc < 0)
            return rc;
        skip(p);
        if (p->s < p->end && *p->s == ',') {
            p->s++;
            continue;
        }
        if (p->s < p->end && *p->s == close) {
            p->s++;
            return 0;
        }
        return perr(p, "expected ',' or '%c'", close);
    }
}

static int parse(parser *p, term *out, int depth)
{
    skip(p);
    if (depth > MAX_DEPTH)
        return perr(p, "terms nested deeper than %d", MAX_DEPTH);
    if (p->s >= p->end)
        return perr(p, "the file ends inside a term");
    char c = *p->s;
    if (c == '[' || c == '{')
        return seq(p, c == '[' ? ']' : '}', out, depth);
    if (c == '"' || c == '\'')
        return quoted(p, c, out);
    if (isalnum((unsigned char)c) || c == '-')
        return word(p, out);
    return perr(p, "unexpected '%c'", c);
}

/* ---- The options ---- */

/* One section's options: NULL / -1 when the section does not set them. */
typedef struct section {
    const char *certfile, *keyfile, *cacertfile;
    int verify_none, fail;
} section;

static int is_atom(const term *t, const char *name)
{
    return t->type == T_ATOM && strcmp(t->text, name) == 0;
}

static int bool_value(const term *v, int *out)
{
    if (is_atom(v, "true") || is_atom(v, "false")) {
        *out = is_atom(v, "true");
        return 0;
    }
    return -1;
}

/* versions: only TLS 1.2 and 1.3, which the C node offers both of. */
static int versions_ok(const term *v)
{
    if (v->type != T_LIST)
        return 0;
    for (size_t i = 0; i < v->n; i++) {
        if (!is_atom(&v->kids[i], "tlsv1.2") && !is_atom(&v->kids[i], "tlsv1.3"))
            return 0;
    }
    return 1;
}

/* One {Key, Value} of a section into s. 0, or CN_ETLS with why. */
static int option(const term *o, section *s, char *why, size_t n)
{
    if (o->type != T_TUPLE || o->n != 2 || o->kids[0].type != T_ATOM) {
        snprintf(why, n, "an option is not a {Key, Value} pair");
        return CN_ETLS;
    }
    const char *k = o->kids[0].text;
    const term *v = &o->kids[1];
    const char **file = strcmp(k, "certfile") == 0 ? &s->certfile
                        : strcmp(k, "keyfile") == 0 ? &s->keyfile
                        : strcmp(k, "cacertfile") == 0 ? &s->cacertfile : NULL;
    int b;
    if (file != NULL && v->type == T_STRING)
        *file = v->text;
    else if (strcmp(k, "verify") == 0 && (is_atom(v, "verify_peer") || is_atom(v, "verify_none")))
        s->verify_none = is_atom(v, "verify_none");
    else if (strcmp(k, "fail_if_no_peer_cert") == 0 && bool_value(v, &b) == 0)
        s->fail = b;
    else if ((strcmp(k, "secure_renegotiate") == 0 || strcmp(k, "reuse_sessions") == 0) && bool_value(v, &b) == 0)
        ; /* the C node refuses renegotiation and keeps no sessions whatever they say */
    else if ((strcmp(k, "hibernate_after") == 0 && v->type == T_INT) || (strcmp(k, "versions") == 0 && versions_ok(v)))
        ; /* nothing to hibernate; both versions offered */
    else {
        snprintf(why, n, "the option %s (or its value) is not supported by the C node", k);
        return CN_ETLS;
    }
    return 0;
}

static int section_of(const term *opts, section *s, char *why, size_t n)
{
    if (opts->type != T_LIST) {
        snprintf(why, n, "a section's options are not a list");
        return CN_ETLS;
    }
    for (size_t i = 0; i < opts->n; i++) {
        int rc = option(&opts->kids[i], s, why, n);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* One value from the two sections: the server's, else the client's; both set must agree. */
static int merge_str(const char *name, const char *a, const char *b, char *dst, size_t cap, char *why,
                     size_t n)
{
    if (a && b && strcmp(a, b) != 0) {
        snprintf(why, n, "the server and client sections differ in %s; the C node has one for both", name);
        return CN_ETLS;
    }
    const char *v = a ? a : b;
    if (v != NULL && strlen(v) >= cap) {
        snprintf(why, n, "%s is too long", name);
        return CN_ETLS;
    }
    snprintf(dst, cap, "%s", v ? v : "");
    return 0;
}

static int merge_int(const char *name, int a, int b, int *has, int *dst, char *why, size_t n)
{
    if (a >= 0 && b >= 0 && a != b) {
        snprintf(why, n, "the server and client sections differ in %s; the C node has one for both", name);
        return CN_ETLS;
    }
    *has = a >= 0 || b >= 0;
    *dst = a >= 0 ? a : b;
    return 0;
}

static int interpret(const term *t, cn_tls_optfile *out, char *why, size_t n)
{
    section s[2] = {{NULL, NULL, NULL, -1, -1}, {NULL, NULL, NULL, -1, -1}};
    if (t->type != T_LIST) {
        snprintf(why, n, "the file is not a list of {server, Options} and {client, Options}");
        return CN_ETLS;
    }
    for (size_t i = 0; i < t->n; i++) {
        const term *e = &t->kids[i];
        int which = -1;
        if (e->type == T_TUPLE && e->n == 2)
            which = is_atom(&e->kids[0], "server") ? 0 : is_atom(&e->kids[0], "client") ? 1 : -1;
        if (which < 0) {
            snprintf(why, n, "an element is not {server, Options} or {client, Options}");
            return CN_ETLS;
        }
        int rc = section_of(&e->kids[1], &s[which], why, n);
        if (rc < 0)
            return rc;
    }
    int rc = merge_str("certfile", s[0].certfile, s[1].certfile, out->certfile, sizeof out->certfile, why, n);
    if (rc == 0)
        rc = merge_str("keyfile", s[0].keyfile, s[1].keyfile, out->keyfile, sizeof out->keyfile, why, n);
    if (rc == 0)
        rc = merge_str("cacertfile", s[0].cacertfile, s[1].cacertfile, out->cacertfile, sizeof out->cacertfile, why, n);
    if (rc == 0)
        rc = merge_int("verify", s[0].verify_none, s[1].verify_none, &out->has_verify, &out->verify_none, why, n);
    /* fail_if_no_peer_cert is a server option: the client section's is moot. */
    if (rc == 0)
        rc = merge_int("fail_if_no_peer_cert", s[0].fail, -1, &out->has_fail, &out->fail_if_no_peer_cert, why, n);
    return rc;
}

/* The file's text, NUL-terminated, in *text (freed by the caller). */
static int slurp(const char *path, char **text, size_t *len, char *why, size_t n)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(why, n, "cannot read %s: %s", path, strerror(errno));
        return CN_ETLS;
    }
    *text = cn_malloc(MAX_FILE + 1);
    *len = fread(*text, 1, MAX_FILE + 1, f);
    fclose(f);
    if (*len > MAX_FILE) {
        snprintf(why, n, "%s is larger than %d bytes", path, MAX_FILE);
        free(*text);
        return CN_ETLS;
    }
    (*text)[*len] = '\0';
    return 0;
}

int cn_tls_optfile_read(const char *path, cn_tls_optfile *out, char *why, size_t whylen)
{
    char *text;
    size_t len;
    memset(out, 0, sizeof *out);
    if (slurp(path, &text, &len, why, whylen) < 0)
        return CN_ETLS;
    char msg[384] = "";
    parser p = {text, text + len, 1, msg, sizeof msg};
    term t = {0};
    int rc = parse(&p, &t, 0);
    if (rc == 0) {
        skip(&p);
        if (p.s >= p.end || *p.s != '.')
            rc = perr(&p, "expected the term's final '.'");
    }
    if (rc == 0)
        rc = interpret(&t, out, msg, sizeof msg);
    if (rc < 0)
        snprintf(why, whylen, "%s: %s", path, msg);
    term_free(&t);
    free(text);
    return rc;
}

void cn_tls_optfile_apply(const cn_tls_optfile *f, cn_tls_config *cfg, int verify_set, int fail_set)
{
    if (cfg->certfile == NULL && *f->certfile)
        cfg->certfile = f->certfile;
    if (cfg->keyfile == NULL && *f->keyfile)
        cfg->keyfile = f->keyfile;
    if (cfg->cacertfile == NULL && *f->cacertfile)
        cfg->cacertfile = f->cacertfile;
    if (!verify_set && f->has_verify)
        cfg->verify_none = f->verify_none;
    if (!fail_set && f->has_fail)
        cfg->no_fail_if_no_peer_cert = !f->fail_if_no_peer_cert;
}

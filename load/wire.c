#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <ei.h>

#include "cnode/buf.h"
#include "cnode/epmd.h"
#include "cnode/error.h"
#include "cnode/handshake.h"
#include "cnode/mem.h"
#include "cnode/protocol.h"
#include "load/wire.h"

/* ---- Templates ---- */

/* A template under construction: ei's index into buf, and the frame being written. */
typedef struct tb {
    char *buf;
    int i;
    int frame;                  /* where the open frame's length field is */
    int bad;
} tb;

#define TB(b, call, ...) ((b)->bad |= ei_encode_##call((b)->buf, &(b)->i, __VA_ARGS__) < 0)

static void frame_open(tb *b)
{
    b->frame = b->i;
    b->i += 4;
    b->buf[b->i++] = (char)CN_PASS_THROUGH;
    b->bad |= ei_encode_version(b->buf, &b->i) < 0;
}

static void frame_close(tb *b)
{
    cn_set_u32(b->buf + b->frame, (uint32_t)(b->i - b->frame - 4));
}

/* The pid of slot 0, its number's offset recorded. NEW_PID_EXT ends with number, serial, creation. */
static void put_pid(tb *b, const erlang_pid *pid, ld_patch *p)
{
    TB(b, pid, pid);
    assert(p->npid < 3);
    p->pid[p->npid++] = (unsigned)b->i - 12;
}

/* A reference with ids 0: NEWER_REFERENCE_EXT ends with its three ids. */
static void put_ref(tb *b, const erlang_ref *ref, ld_patch *p)
{
    TB(b, ref, ref);
    assert(p->nref < 2);
    p->ref[p->nref++] = (unsigned)b->i - 12;
}

static void put_name(tb *b, const char *name)
{
    TB(b, atom_as, name, ERLANG_UTF8, ERLANG_UTF8);
}

static char *tb_done(tb *b, size_t *len)
{
    assert(!b->bad);
    *len = (size_t)b->i;
    return b->buf;
}

/* MONITOR_P or DEMONITOR_P {Op, Pid, Server, Ref}. */
static void monitor_frame(tb *b, long op, const erlang_pid *pid, const char *server, const erlang_ref *ref,
                          ld_patch *p)
{
    frame_open(b);
    TB(b, tuple_header, 4);
    TB(b, long, op);
    put_pid(b, pid, p);
    put_name(b, server);
    put_ref(b, ref, p);
    frame_close(b);
}

/* The control tuple of REG_SEND {6, Pid, '', Server}, in an open frame. */
static void reg_send_control(tb *b, const erlang_pid *pid, const char *server, ld_patch *p)
{
    TB(b, tuple_header, 4);
    TB(b, long, DOP_REG_SEND);
    put_pid(b, pid, p);
    TB(b, atom, "");
    put_name(b, server);
    b->bad |= ei_encode_version(b->buf, &b->i) < 0;
}

void ld_tmpl_init(ld_tmpl *t, const char *node_name, uint32_t creation, const char *server)
{
    size_t room = 1024 + 6 * strlen(node_name) + 2 * strlen(server);
    erlang_pid pid = {.num = LD_PID_BASE, .serial = 0, .creation = creation};
    erlang_ref ref = {.len = 3, .creation = creation};
    snprintf(pid.node, sizeof pid.node, "%s", node_name);
    snprintf(ref.node, sizeof ref.node, "%s", node_name);
    memset(t, 0, sizeof *t);

    tb b = {.buf = cn_malloc(room)};
    monitor_frame(&b, DOP_MONITOR_P, &pid, server, &ref, &t->call_patch);
    t->reg_send_at = (size_t)b.i;
    frame_open(&b);
    reg_send_control(&b, &pid, server, &t->call_patch);
    TB(&b, tuple_header, 3);
    TB(&b, atom, "$gen_call");
    TB(&b, tuple_header, 2);
    put_pid(&b, &pid, &t->call_patch);
    TB(&b, list_header, 1);
    TB(&b, atom, "alias");
    put_ref(&b, &ref, &t->call_patch);
    t->call = tb_done(&b, &t->call_len);   /* the REG_SEND's length is written per call */

    tb d = {.buf = cn_malloc(room)};
    monitor_frame(&d, DOP_DEMONITOR_P, &pid, server, &ref, &t->demon_patch);
    t->demon = tb_done(&d, &t->demon_len);

    ld_patch unused = {{0}, 0, {0}, 0};
    tb c = {.buf = cn_malloc(room)};
    frame_open(&c);
    reg_send_control(&c, &pid, "counter", &unused);
    TB(&c, tuple_header, 2);
    TB(&c, atom, "$gen_cast");
    TB(&c, atom, "increment");
    frame_close(&c);
    t->cast = tb_done(&c, &t->cast_len);
}

void ld_tmpl_free(ld_tmpl *t)
{
    free(t->call);
    free(t->demon);
    free(t->cast);
    memset(t, 0, sizeof *t);
}

static void patch(char *out, const ld_patch *p, unsigned slot, uint64_t seq)
{
    for (unsigned k = 0; k < p->npid; k++)
        cn_set_u32(out + p->pid[k], LD_PID_BASE + slot);
    for (unsigned k = 0; k < p->nref; k++) {
        cn_set_u32(out + p->ref[k], slot);
        cn_set_u32(out + p->ref[k] + 4, (uint32_t)seq);
        cn_set_u32(out + p->ref[k] + 8, (uint32_t)(seq >> 32));
    }
}

size_t ld_tmpl_call(const ld_tmpl *t, char *out, unsigned slot, uint64_t seq, const char *req, size_t req_len)
{
    memcpy(out, t->call, t->call_len);
    patch(out, &t->call_patch, slot, seq);
    memcpy(out + t->call_len, req, req_len);
    size_t len = t->call_len + req_len;
    cn_set_u32(out + t->reg_send_at, (uint32_t)(len - t->reg_send_at - 4));
    return len;
}

size_t ld_tmpl_demonitor(const ld_tmpl *t, char *out, unsigned slot, uint64_t seq)
{
    memcpy(out, t->demon, t->demon_len);
    patch(out, &t->demon_patch, slot, seq);
    return t->demon_len;
}

/* The decimal digits of v, at out: their count. */
static size_t put_decimal(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (size_t k = 0; k < n; k++)
        out[k] = tmp[n - 1 - k];
    return n;
}

size_t ld_encode_request(ld_request r, uint64_t id, char *buf)
{
    static const char increment[] = "\x77\x09increment";
    /* {check_rate, <<"client-N">>}: a 2-tuple, the atom, then BINARY_EXT and its length. */
    static const char check_rate[] = "\x68\x02\x77\x0a" "check_rate" "\x6d";
    if (r != LD_CHECK_RATE) {
        memcpy(buf, increment, sizeof increment - 1);
        return sizeof increment - 1;
    }
    size_t n = sizeof check_rate - 1;
    memcpy(buf, check_rate, n);
    memcpy(buf + n + 4, "client-", 7);
    size_t digits = put_decimal(buf + n + 4 + 7, id);
    cn_set_u32(buf + n, (uint32_t)(7 + digits));
    return n + 4 + 7 + digits;
}

/* ---- Replies ---- */

/* A bounds-checked walk over a frame's bytes. */
typedef struct rd {
    const unsigned char *p;
    size_t len, i;
    int bad;
} rd;

static unsigned rd_u8(rd *r)
{
    if (r->i + 1 > r->len) {
        r->bad = 1;
        return 0;
    }
    return r->p[r->i++];
}

static uint32_t rd_u32(rd *r)
{
    if (r->i + 4 > r->len) {
        r->bad = 1;
        return 0;
    }
    uint32_t v = cn_get_u32(r->p + r->i);
    r->i += 4;
    return v;
}

static void rd_skip(rd *r, size_t n)
{
    if (r->i + n > r->len)
        r->bad = 1;
    else
        r->i += n;
}

static unsigned rd_u16(rd *r)
{
    unsigned hi = rd_u8(r);     /* two statements: the operands of | are not sequenced */
    return (hi << 8) | rd_u8(r);
}

/* An atom of any of the four tags; its text in *text, *n. */
static void rd_atom(rd *r, const char **text, size_t *n)
{
    unsigned tag = rd_u8(r);
    size_t len = tag == ERL_SMALL_ATOM_UTF8_EXT || tag == ERL_SMALL_ATOM_EXT ? rd_u8(r)
                 : tag == ERL_ATOM_UTF8_EXT || tag == ERL_ATOM_EXT        ? rd_u16(r)
                                                                          : (r->bad = 1, 0);
    *text = (const char *)r->p + r->i;
    *n = len;
    rd_skip(r, len);
}

static void rd_skip_atom(rd *r)
{
    const char *t;
    size_t n;
    rd_atom(r, &t, &n);
}

static void rd_skip_pid(rd *r)
{
    unsigned tag = rd_u8(r);
    rd_skip_atom(r);
    rd_skip(r, tag == ERL_NEW_PID_EXT ? 12 : tag == ERL_PID_EXT ? 9 : (r->bad = 1, 0));
}

/* One of our references: its slot and sequence number. */
static void rd_ref(rd *r, ld_frame_info *info)
{
    unsigned tag = rd_u8(r);
    unsigned n = rd_u16(r);
    rd_skip_atom(r);
    rd_skip(r, tag == ERL_NEWER_REFERENCE_EXT ? 4 : tag == ERL_NEW_REFERENCE_EXT ? 1 : (r->bad = 1, 0));
    if (n != 3)
        r->bad = 1;
    info->slot = rd_u32(r);
    info->seq = rd_u32(r);
    info->seq |= (uint64_t)rd_u32(r) << 32;
}

/* After the control tuple: is the message {Tag, {error, _}}? (check_rate over its limit) */
static int rd_rejected(rd *r)
{
    const char *t;
    size_t n;
    if (rd_u8(r) != 131 || rd_u8(r) != ERL_SMALL_TUPLE_EXT || rd_u8(r) != 2 || rd_u8(r) != ERL_LIST_EXT ||
        rd_u32(r) != 1)
        return 0;
    rd_skip_atom(r);
    ld_frame_info tag;
    rd_ref(r, &tag);
    if (rd_u8(r) != ERL_SMALL_TUPLE_EXT || rd_u8(r) != 2)
        return 0;
    rd_atom(r, &t, &n);
    return !r->bad && n == 5 && memcmp(t, "error", 5) == 0;
}

/*
 * The usual reply: 112, then ALIAS_SEND {33, FromPid, Ref} or ALTACT_SIG_SEND
 * {37, Flags, FromPid, Ref} with only the alias flag, then the message.
 */
static ld_frame_kind fast_reply(const char *body, size_t len, ld_frame_info *info)
{
    rd r = {(const unsigned char *)body, len, 0, 0};
    if (rd_u8(&r) != CN_PASS_THROUGH || rd_u8(&r) != 131 || rd_u8(&r) != ERL_SMALL_TUPLE_EXT)
        return LD_FRAME_BAD;
    unsigned arity = rd_u8(&r);
    if (rd_u8(&r) != ERL_SMALL_INTEGER_EXT)
        return LD_FRAME_BAD;
    unsigned op = rd_u8(&r);
    if (op == DOP_ALTACT_SIG_SEND && arity == 4) {
        if (rd_u8(&r) != ERL_SMALL_INTEGER_EXT || rd_u8(&r) != CN_ALTACT_ALIAS)
            return LD_FRAME_BAD;
    } else if (op != DOP_ALIAS_SEND || arity != 3) {
        return LD_FRAME_BAD;
    }
    rd_skip_pid(&r);
    rd_ref(&r, info);
    if (r.bad)
        return LD_FRAME_BAD;
    info->rejected = rd_rejected(&r);
    return LD_FRAME_REPLY;
}

/* ei's decoding of a reference into info; -1 when it is not one of ours. */
static int ei_ref(const char *buf, int *i, ld_frame_info *info)
{
    erlang_ref ref;
    if (ei_decode_ref(buf, i, &ref) < 0 || ref.len != 3)
        return -1;
    info->slot = ref.n[0];
    info->seq = ref.n[1] | (uint64_t)ref.n[2] << 32;
    return 0;
}

/* Everything else, decoded with ei: a DOWN for one of our calls, or a reply in another shape. */
static ld_frame_kind slow_frame(const char *body, size_t len, ld_frame_info *info)
{
    int i = 1, ver, arity;
    long op;
    if (len == 0)
        return LD_FRAME_OTHER;
    if ((unsigned char)body[0] != CN_PASS_THROUGH || ei_decode_version(body, &i, &ver) < 0 ||
        ei_decode_tuple_header(body, &i, &arity) < 0 || arity < 1 || ei_decode_long(body, &i, &op) < 0)
        return LD_FRAME_BAD;
    /* {21, FromProc, ToPid, Ref, Reason} or, with EXIT_PAYLOAD, {28, FromProc, ToPid, Ref}. */
    if ((op == DOP_MONITOR_P_EXIT || op == DOP_PAYLOAD_MONITOR_P_EXIT) && arity >= 4)
        return ei_skip_term(body, &i) == 0 && ei_skip_term(body, &i) == 0 && ei_ref(body, &i, info) == 0
                   ? LD_FRAME_DOWN
                   : LD_FRAME_OTHER;
    if (op == DOP_ALIAS_SEND && arity == 3) {
        info->rejected = 0;
        return ei_skip_term(body, &i) == 0 && ei_ref(body, &i, info) == 0 ? LD_FRAME_REPLY : LD_FRAME_OTHER;
    }
    return LD_FRAME_OTHER;
}

ld_frame_kind ld_frame_read(const char *body, size_t len, ld_frame_info *info)
{
    info->rejected = 0;
    if (len > 0 && fast_reply(body, len, info) == LD_FRAME_REPLY)
        return LD_FRAME_REPLY;
    return slow_frame(body, len, info);
}

/* ---- Dialing ---- */

static int fail(char *err, size_t errlen, const char *what, const char *detail)
{
    snprintf(err, errlen, "%s: %s", what, detail);
    return -1;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_exact(int fd, char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int tcp_connect(const struct sockaddr_in *host, uint16_t port, unsigned timeout_ms)
{
    struct sockaddr_in a = *host;
    a.sin_port = htons(port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The distribution port of alive at host, from its epmd; 0 when unknown. */
static uint16_t epmd_port_of(const struct sockaddr_in *host, const char *alive, unsigned timeout_ms)
{
    int fd = tcp_connect(host, cn_epmd_port(), timeout_ms);
    if (fd < 0)
        return 0;
    cn_buf req;
    cn_buf_init(&req);
    char resp[512];
    size_t n = 0;
    cn_epmd_port2 p2 = {.result = 1};
    if (cn_epmd_encode_port_please2_req(&req, alive) == 0 && write_all(fd, req.data, req.len) == 0) {
        ssize_t r;
        while (n < sizeof resp && (r = read(fd, resp + n, sizeof resp - n)) > 0)
            n += (size_t)r;
        if (cn_epmd_decode_port2_resp(resp, n, &p2) <= 0)
            p2.result = 1;
    }
    cn_buf_free(&req);
    close(fd);
    return p2.result == 0 ? p2.port : 0;
}

static int resolve(const char *host, struct sockaddr_in *out)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, NULL, &hints, &res) != 0)
        return -1;
    *out = *(struct sockaddr_in *)res->ai_addr;
    freeaddrinfo(res);
    return 0;
}

/* The handshake on a connected socket, reading exactly its messages (none of the frames after). */
static int handshake(int fd, cn_hs *hs, char *err, size_t errlen)
{
    cn_buf out;
    cn_buf_init(&out);
    char msg[2 + CN_HS_MAX_MSG];
    int rc = cn_hs_start(hs, &out);
    while (rc >= 0 && !cn_hs_done(hs)) {
        if (write_all(fd, out.data, out.len) < 0 || read_exact(fd, msg, 2) < 0) {
            rc = fail(err, errlen, "handshake", "the connection failed");
            break;
        }
        cn_buf_reset(&out);
        size_t n = cn_get_u16(msg);
        if (n > CN_HS_MAX_MSG || read_exact(fd, msg + 2, n) < 0) {
            rc = fail(err, errlen, "handshake", "the connection failed");
            break;
        }
        if ((rc = cn_hs_feed(hs, msg, 2 + n, &out)) < 0)
            fail(err, errlen, "handshake", cn_hs_error(hs));
    }
    if (rc >= 0 && out.len > 0 && write_all(fd, out.data, out.len) < 0)
        rc = fail(err, errlen, "handshake", "the connection failed");
    cn_buf_free(&out);
    return rc < 0 ? -1 : 0;
}

int ld_dial(const char *target, const char *our_name, const char *cookie, uint32_t creation, unsigned timeout_ms,
            char *err, size_t errlen)
{
    char alive[256];
    const char *at = strchr(target, '@');
    err[0] = '\0';
    if (at == NULL || at == target || (size_t)(at - target) >= sizeof alive)
        return fail(err, errlen, target, "not a node name (name@host)");
    memcpy(alive, target, (size_t)(at - target));
    alive[at - target] = '\0';
    struct sockaddr_in host;
    if (resolve(at + 1, &host) < 0)
        return fail(err, errlen, at + 1, "cannot resolve the host");
    uint16_t port = epmd_port_of(&host, alive, timeout_ms);
    if (port == 0)
        return fail(err, errlen, target, "epmd does not know it");
    int fd = tcp_connect(&host, port, timeout_ms);
    if (fd < 0)
        return fail(err, errlen, target, strerror(errno));
    /* No atom cache and no fragments: every frame stays a plain pass-through frame. */
    cn_hs_config hc = {.role = CN_HS_CONNECT, .our_name = our_name, .cookie = cookie,
                       .our_flags = CN_DFLAGS & ~(DFLAG_DIST_HDR_ATOM_CACHE | DFLAG_FRAGMENTS),
                       .our_creation = creation, .expect_peer = target, .alive_continue = 1};
    cn_hs hs;
    if (cn_hs_init(&hs, &hc) < 0 || handshake(fd, &hs, err, errlen) < 0) {
        if (!cn_hs_done(&hs) && err[0] == '\0')
            fail(err, errlen, "handshake", cn_hs_error(&hs));
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * EPMD client: pure codecs for the requests and replies we use, and libuv glue
 * that registers this node and looks up others without ever blocking the loop.
 *
 * EPMD is always reached on the loopback for registration, as OTP's erl_epmd
 * does: 127.0.0.1 for an IPv4 node, ::1 for an IPv6 (inet6_tcp) one. Lookups go
 * to the host of the node looked up, as an address of the node's family. The port is ERL_EPMD_PORT from the environment when set,
 * else 4369, everywhere (erl does the same, and tests run a private epmd).
 *
 * Every request on the wire starts with a 2-byte big-endian length; replies have
 * none. Layouts follow the "Distribution Protocol" chapter of the erts docs.
 */
#ifndef CN_EPMD_H
#define CN_EPMD_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "buf.h"

/* Longest alive part (the name before '@') we send or accept, in bytes. */
#define CN_EPMD_MAX_ALIVE 255
/* Longest Extra field we accept in a PORT2_RESP; epmd itself keeps it short. */
#define CN_EPMD_MAX_EXTRA 1024
/* How long a registration or lookup may take before it fails with -ETIMEDOUT. */
#define CN_EPMD_TIMEOUT_MS 5000
/*
 * Renewing a registration that epmd dropped: the first attempt this long after
 * the loss, each next one twice as long after the last failed, at most
 * CN_EPMD_RETRY_MAX_MS apart. OTP's erl_epmd waits 2 s between attempts; the
 * cap here is lower so that the name is back within about a second of epmd's
 * return, and an attempt while epmd is down is one refused local connect.
 */
#define CN_EPMD_RETRY_FIRST_MS 100
#define CN_EPMD_RETRY_MAX_MS 1000

#define CN_EPMD_NODE_NORMAL 77 /* 'M': a normal, visible node */
#define CN_EPMD_NODE_HIDDEN 72 /* 'H': a hidden node */
#define CN_EPMD_PROTO_TCP 0    /* TCP/IPv4 */

/* ---- Codecs ---------------------------------------------------------------- */

/*
 * Appends an ALIVE2_REQ (120) with its length prefix to out: port, node type 77,
 * protocol 0, highest version 6, lowest 5, the alive name, an empty Extra.
 * The whole request is appended or nothing is.
 * Returns 0, or -EINVAL when alive is empty, longer than CN_EPMD_MAX_ALIVE or
 * holds '@'.
 */
int cn_epmd_encode_alive2_req(cn_buf *out, const char *alive, uint16_t port);

/*
 * Appends a PORT_PLEASE2_REQ (122) for alive, with its length prefix.
 * Returns 0 or -EINVAL (bad alive, as above).
 */
int cn_epmd_encode_port_please2_req(cn_buf *out, const char *alive);

/*
 * Decodes a registration reply: ALIVE2_X_RESP (118: result u8, creation u32) or
 * the old ALIVE2_RESP (121: result u8, creation u16). result is 0 on success,
 * nonzero when epmd refused (name taken, for instance).
 * Returns the bytes consumed, 0 when incomplete, CN_EPROTO for another tag.
 */
int cn_epmd_decode_alive2_resp(const void *data, size_t len, int *result, uint32_t *creation);

/* A decoded PORT2_RESP. When result is nonzero the node is unknown and the rest is zero. */
typedef struct cn_epmd_port2 {
    int result;
    uint16_t port;
    uint8_t node_type;
    uint8_t protocol;
    uint16_t highvsn;
    uint16_t lowvsn;
    char name[CN_EPMD_MAX_ALIVE + 1]; /* NUL-terminated alive name */
} cn_epmd_port2;

/*
 * Decodes a PORT2_RESP (119): result u8, and when it is 0, port u16, node type,
 * protocol, highest and lowest version u16, name (u16 length), extra (u16
 * length, skipped).
 * Returns the bytes consumed, 0 when incomplete, CN_EPROTO for another tag, a
 * name longer than CN_EPMD_MAX_ALIVE or holding NUL, or an Extra longer than
 * CN_EPMD_MAX_EXTRA.
 */
int cn_epmd_decode_port2_resp(const void *data, size_t len, cn_epmd_port2 *out);

/* ---- libuv glue ------------------------------------------------------------ */

/* The epmd port: ERL_EPMD_PORT when set to a valid port number, else 4369. */
uint16_t cn_epmd_port(void);

typedef struct cn_epmd_reg cn_epmd_reg;
typedef void (*cn_epmd_reg_cb)(cn_epmd_reg *reg, int status, uint32_t creation);

/*
 * A registration. Caller-allocated (embed it in the node); the fields after
 * close_cb are private.
 */
struct cn_epmd_reg {
    void *data; /* for the caller; never touched by this module */
    /*
     * Optional, set by the caller before cn_epmd_unregister(): called once the
     * connection's handles are closed, after which reg may be freed. Without it,
     * reg must stay valid until the loop has run the close callbacks (for example
     * until uv_run() returns).
     */
    void (*close_cb)(cn_epmd_reg *reg);

    uv_tcp_t tcp;       /* one per attempt: closed and made again between attempts */
    uv_timer_t timer;   /* an attempt's timeout, then the backoff before the next */
    uv_connect_t connect;
    uv_write_t write;
    cn_buf req;
    unsigned char resp[16];
    size_t resp_len;
    cn_epmd_reg_cb cb;
    int state;
    int open_handles;
    int status;         /* the failure cb will report */
    int cancelled;      /* cn_epmd_unregister() was called */
    int registered;     /* epmd accepted the name once: from then on it is renewed */
    unsigned retry_ms;  /* the backoff before the next renewal attempt */
    int family;         /* AF_INET or AF_INET6: which loopback epmd is reached on */
    char alive[CN_EPMD_MAX_ALIVE + 1];
};

/*
 * Registers alive (the name before '@') with the local epmd for our listening
 * port, and keeps it registered. The TCP connection to epmd stays open for the
 * life of the node: closing it is what unregisters.
 *
 * cb(reg, status, creation), always from the loop, unless cn_epmd_unregister()
 * comes first:
 *   0 and the creation epmd assigned      registered; the connection stays open
 *   CN_ENOTALIVE                          epmd refused (the name is taken)
 *   -ECONNREFUSED, -ETIMEDOUT, other -errno, CN_EPROTO for a garbled reply
 * A failure is final: every handle is already closed when cb runs, so reg may
 * be freed or reused inside cb.
 *
 * Once registered, the registration is kept as OTP's erl_epmd keeps it: when
 * epmd closes the connection (it died or was restarted), a warning is logged
 * and new attempts follow, CN_EPMD_RETRY_FIRST_MS after the loss and then
 * backing off to CN_EPMD_RETRY_MAX_MS, until one gets an answer. Attempts that
 * fail for want of an epmd (refused, timed out, garbled) are retried and never
 * reported. The answer is reported through cb again: 0 with the creation the
 * new registration got, or CN_ENOTALIVE, final as above, when epmd gave the
 * name to someone else meanwhile. So cb runs once for the first registration
 * and once more for each renewal; a failure is always its last call.
 *
 * Before the call, set reg->data (and reg->close_cb if wanted); the other fields
 * need no initialisation. reg must not already be registered or closing.
 * alive is copied. Returns 0, or -EINVAL for a bad alive name or a NULL cb; on
 * error cb is never called and nothing needs closing.
 */
int cn_epmd_register(uv_loop_t *loop, cn_epmd_reg *reg, const char *alive, uint16_t port,
                     cn_epmd_reg_cb cb);
/*
 * As cn_epmd_register, with the epmd reached on the loopback of family:
 * 127.0.0.1 for AF_INET (what cn_epmd_register does), ::1 for AF_INET6, as
 * erl -proto_dist inet6_tcp registers. -EINVAL for another family.
 */
int cn_epmd_register_ex(uv_loop_t *loop, cn_epmd_reg *reg, int family, const char *alive, uint16_t port,
                        cn_epmd_reg_cb cb);

/*
 * Closes the epmd connection, which unregisters the name. Safe at any time after
 * cn_epmd_register() returned 0, also while the registration or a renewal is
 * under way or waiting for its next attempt (cb is then never called again),
 * and safe to call more than once. The close completes asynchronously and then
 * calls reg->close_cb if set. When nothing is open (a failure was reported
 * through cb, or it was closed before), it does nothing and close_cb is not
 * called.
 */
void cn_epmd_unregister(cn_epmd_reg *reg);

/* Result of a lookup: status 0 with the port and the peer's highest version, or an error. */
typedef void (*cn_epmd_lookup_cb)(void *data, int status, uint16_t port, int highvsn);

/*
 * Asks the epmd on host (an IPv4 address, or a name resolved asynchronously)
 * for the port of alive. The request is allocated and freed internally.
 *
 * cb(data, status, port, highvsn) is called exactly once, from the loop, after
 * every handle of the request is closed, and at the latest after about
 * CN_EPMD_TIMEOUT_MS, so a loop can always be drained of lookups:
 *   0, the port and the highest distribution version the node speaks
 *   -ENOENT       no node of that name is registered there
 *   -ECONNREFUSED no epmd on that host; -ETIMEDOUT; another -errno (also
 *                 from name resolution, as libuv reports it)
 *   CN_EPROTO     a garbled reply
 *
 * host and alive are copied; data is passed back untouched.
 * Returns 0 or -EINVAL (bad alive or empty host); on error cb is never called.
 */
int cn_epmd_lookup(uv_loop_t *loop, const char *host, const char *alive, cn_epmd_lookup_cb cb,
                   void *data);

/* A lookup under way, for cn_epmd_lookup_cancel. */
typedef struct cn_epmd_lookup_req cn_epmd_lookup_req;

/*
 * As cn_epmd_lookup, and on success *req is the lookup, valid until cb has been
 * called (so the caller can cancel it, for instance when it closes first).
 */
int cn_epmd_lookup_start(uv_loop_t *loop, const char *host, const char *alive, cn_epmd_lookup_cb cb,
                         void *data, cn_epmd_lookup_req **req);
/*
 * As cn_epmd_lookup_start, with host taken as an address of family: AF_INET
 * (what cn_epmd_lookup_start does: an IPv4 literal or a name resolved to IPv4)
 * or AF_INET6 (an IPv6 literal such as "::1", or a name resolved to IPv6), as
 * inet6_tcp_dist asks the epmd of a node it dials. req may be NULL. -EINVAL for
 * another family, too.
 */
int cn_epmd_lookup_ex(uv_loop_t *loop, int family, const char *host, const char *alive,
                      cn_epmd_lookup_cb cb, void *data, cn_epmd_lookup_req **req);

/*
 * Ends a lookup early. cb is still called exactly once, from the loop after the
 * lookup's handles have closed: with -ECANCELED, or with the outcome if that was
 * known already. A name resolution already running in libuv's thread pool
 * cannot be stopped and is awaited. Calling it after cb ran is a broken contract.
 */
void cn_epmd_lookup_cancel(cn_epmd_lookup_req *req);

/*
 * Makes sure an epmd answers on 127.0.0.1 at cn_epmd_port(): when nothing
 * listens there, starts `epmd -daemon -port N` (found through PATH), as erl does,
 * and waits up to about 2 s until it answers. Blocks: call it once at start-up,
 * before the loop runs.
 * Returns 0, -ENOENT when epmd cannot be run, -ETIMEDOUT when it never answered,
 * or another -errno.
 */
int cn_epmd_ensure_running(void);
/*
 * As cn_epmd_ensure_running, on the loopback of family: 127.0.0.1 for AF_INET,
 * ::1 for AF_INET6 (epmd listens on both loopbacks unless ERL_EPMD_ADDRESS or
 * -address leaves the IPv6 one out; then this fails as erl would). -EINVAL for
 * another family.
 */
int cn_epmd_ensure_running_ex(int family);

#endif

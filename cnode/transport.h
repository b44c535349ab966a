/*
 * The transport seam: how a distribution connection moves its bytes.
 *
 * The node's own TCP transport (tcp.c) implements this on libuv. Anything else
 * that can carry a byte stream can too: the unit tests use an in-memory fake,
 * and TLS distribution (tls.c over tcp.c) is a third. A transport feeds what it reads to
 * cn_conn_feed (or reads in place with cn_conn_read_buf/cn_conn_read_done),
 * reports finished writes with cn_conn_written, a stream that ended with
 * cn_conn_ended and, when asked to close, releases its resources and calls
 * cn_conn_closed. After close it reports nothing but cn_conn_closed (and the
 * cn_conn_written of a write still in flight).
 */
#ifndef CN_TRANSPORT_H
#define CN_TRANSPORT_H

#include <stddef.h>

#include "cnode/node.h"

typedef struct cn_transport {
    /*
     * Writes len bytes. data stays valid and untouched until the transport calls
     * cn_conn_written(c, status), which it may do from inside write. Only one
     * write is in flight at a time. Returns 0 or a negative error.
     */
    int (*write)(cn_conn *c, const char *data, size_t len);
    /* Stops reading and writing; must end, now or later, with cn_conn_closed(c). */
    void (*close)(cn_conn *c);
    /*
     * Nonzero: the distribution handshake's messages carry 4-byte lengths, as
     * over OTP's TLS distribution; zero: 2 bytes, as over TCP (handshake.h).
     */
    int hs_len4;
} cn_transport;

/*
 * Makes a connection on node that uses tp (borrowed). outgoing: we dialed the
 * peer. The connection is freed after cn_conn_closed. Never NULL.
 */
cn_conn *cn_conn_new(cn_node *node, const cn_transport *tp, int outgoing);
/* Starts the handshake; expect_peer is the node we dialed (outgoing only), or NULL. */
void cn_conn_start_handshake(cn_conn *c, const char *expect_peer);
/* Bytes read from the peer (copied). Complete frames are handled before it returns. */
void cn_conn_feed(cn_conn *c, const char *data, size_t len);
/*
 * For a transport that reads in place, without the copy of cn_conn_feed: room
 * for the next read in *base and *len, at least one byte and at most want:
 * want bytes at the end of the connection's read buffer, or, while a large
 * frame is read into a buffer of its own (conn.c), what is left of that frame
 * if less. The room stays valid until the next call on c.
 */
void cn_conn_read_buf(cn_conn *c, size_t want, char **base, size_t *len);
/* n bytes (n <= the room's length) were read into that room: handled as by cn_conn_feed. */
void cn_conn_read_done(cn_conn *c, size_t n);
/*
 * The byte stream ended: status 0 when the peer closed it, else a negative error
 * (a connect, read or setup that failed). The connection closes (tp->close).
 */
void cn_conn_ended(cn_conn *c, int status);
/* The write handed to tp->write finished with status (0 or a negative error). */
void cn_conn_written(cn_conn *c, int status);
/* The transport has released everything; the connection is freed. */
void cn_conn_closed(cn_conn *c);
/* The peer's node name once the handshake is done, else "". */
const char *cn_conn_peer(const cn_conn *c);
/* The peer's address for logs, such as "10.0.0.1:4370" (copied, truncated to 63 bytes). */
void cn_conn_set_addr(cn_conn *c, const char *addr);
/* User data of the transport. */
void cn_conn_set_transport_data(cn_conn *c, void *data);
void *cn_conn_transport_data(const cn_conn *c);

#endif

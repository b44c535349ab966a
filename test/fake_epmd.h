/*
 * A scripted fake epmd for the tests of registrations that outlive an epmd
 * restart: a TCP server in the test's loop that answers the n-th ALIVE2_REQ it
 * receives as script[n] says (the last entry repeats) and, as epmd does, keeps
 * a registration's connection open until the test drops it, which to the
 * registered side looks like epmd dying. It answers every PORT_PLEASE2_REQ
 * with node_port (set it after fe_start), so a node's --connect targets find
 * a peer in the same test.
 *
 * Ownership: the test owns the fake_epmd struct; it must stay valid until the
 * loop has run after fe_close (the server's and the clients' close callbacks).
 */
#ifndef TEST_FAKE_EPMD_H
#define TEST_FAKE_EPMD_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef enum fe_act {
    FE_OK,      /* ALIVE2_X_RESP, result 0, creation 100 + the request's number */
    FE_TAKEN,   /* ALIVE2_X_RESP with result 1: the name is taken */
    FE_HANGUP,  /* close the connection without an answer */
    FE_SILENT   /* never answer */
} fe_act;

#define FE_MAX_REQUESTS 32

typedef struct fe_client fe_client;

typedef struct fake_epmd {
    uv_tcp_t server;
    uint16_t port;
    const fe_act *script;
    size_t nscript;
    int requests;                           /* ALIVE2 requests received */
    uint64_t request_at[FE_MAX_REQUESTS];   /* uv_now() when each arrived */
    int open_clients;                       /* connections not yet closed by the fake */
    fe_client *clients;
    char saved_port[16];                    /* ERL_EPMD_PORT before fe_start */
    int had_port;
    uint16_t node_port;                     /* PORT2_RESP's port; 0: "not registered" */
} fake_epmd;

/* Listens on a free port of 127.0.0.1 and points ERL_EPMD_PORT at it. script is borrowed. */
void fe_start(uv_loop_t *loop, fake_epmd *f, const fe_act *script, size_t nscript);
/* Closes every client connection, as an epmd that dies; the fake keeps listening. */
void fe_drop(fake_epmd *f);
/* Drops every client, stops listening and restores ERL_EPMD_PORT. */
void fe_close(fake_epmd *f);

#endif

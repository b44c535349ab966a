/*
 * Which `sys` module a calling node runs, and the reply shape it expects.
 *
 * :sys.get_state and :sys.replace_state are answered by the server with a plain
 * term, and the caller's own `sys` unpacks it. Since stdlib 5.1 (OTP 26.1,
 * OTP-18633) that `sys` expects `{ok, State}` and fails with `{case_clause, State}`
 * on anything else; an older one (OTP 25, 26.0) returns whatever comes back, so
 * `{ok, State}` would reach it as the state. Both send the same request and no
 * distribution flag tells them apart: the server asks the caller's node for its
 * stdlib version (gs_sys.c) and keeps the answer here, per node incarnation.
 *
 * Errors keep OTP's one shape for both:
 * {error, {callback_failed, {gen_server, system_replace_state}, {Class, Reason}}}.
 */
#ifndef GS_SYS_SHAPE_H
#define GS_SYS_SHAPE_H

#include <stdint.h>
#include <ei.h>

typedef enum gs_sys_shape {
    GS_SYS_SHAPE_UNKNOWN = 0,   /* not learned yet: ask the calling node */
    GS_SYS_SHAPE_RAW,           /* stdlib before 5.1: the state as it is */
    GS_SYS_SHAPE_OK             /* stdlib 5.1 and later: {ok, State} */
} gs_sys_shape;

/*
 * The shape a stdlib version ("4.2", "5.0.2", "5.1", "7.0") expects. NULL or a
 * string that is no version gets GS_SYS_SHAPE_OK, the protocol of every current OTP.
 */
gs_sys_shape gs_sys_shape_for_stdlib(const char *vsn);

/*
 * Starts a successful get_state or replace_state reply in x: nothing for RAW, the
 * head of {ok, _} for OK (UNKNOWN counts as OK). The caller encodes the state next.
 */
void gs_sys_shape_begin(ei_x_buff *x, gs_sys_shape shape);

/*
 * What a server learned about its callers' nodes: a few entries, each a node name
 * and its creation (one incarnation of the node: a restarted node has another
 * creation and may run another OTP). A node has at most one entry; when the table
 * is full the oldest entry gives way. Zero-initialised memory is an empty cache.
 */
#define GS_SYS_CACHE_SIZE 16

typedef struct gs_sys_cache {
    struct {
        char *node;             /* owned; NULL for a free slot */
        uint32_t creation;
        gs_sys_shape shape;
        uint64_t stamp;         /* when it was stored, for replacing the oldest */
    } e[GS_SYS_CACHE_SIZE];
    uint64_t clock;
} gs_sys_cache;

/* The shape known for node with creation, or GS_SYS_SHAPE_UNKNOWN. */
gs_sys_shape gs_sys_cache_get(const gs_sys_cache *c, const char *node, uint32_t creation);
/* Stores a shape for node with creation (node is copied), replacing that node's entry. */
void gs_sys_cache_put(gs_sys_cache *c, const char *node, uint32_t creation, gs_sys_shape shape);
/* Forgets node, whatever its creation (its connection went). */
void gs_sys_cache_forget(gs_sys_cache *c, const char *node);
/* Frees every entry; the cache is empty and usable again. */
void gs_sys_cache_clear(gs_sys_cache *c);

#endif

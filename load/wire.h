/*
 * The generator's side of the wire: the exact frames gen:call and gen:cast
 * send, made from templates, the server's replies recognised without a full
 * decode, and a blocking dial (epmd, TCP, the project's handshake machine).
 *
 * Why not the runtime's processes and sends: encoding every control message
 * with ei, and decoding every reply through the runtime's frame walk, atom
 * checks and alias table, cost the generator about 10 000 instructions a call,
 * as much as the server it measured. A call's frames differ from the last
 * call's of the same node only in the caller's pid number, the reference and
 * the request, so they are encoded once per node (with ei, so the bytes are
 * ei's) and patched: a copy and a few stores per call.
 *
 * A call, for slot s of a node (one slot is one caller process, pid number
 * LD_PID_BASE + s) with reference ids {s, seq, seq >> 32}:
 *   MONITOR_P   {19, Pid, Server, Ref}
 *   REG_SEND    {6, Pid, '', Server} + {'$gen_call', {Pid, [alias | Ref]}, Request}
 * and after the reply
 *   DEMONITOR_P {20, Pid, Server, Ref}
 * A cast: REG_SEND {6, Pid, '', counter} + {'$gen_cast', increment}.
 * Every frame is a pass-through frame: 4-byte length, 112, then each term
 * with its version byte, as the runtime sends them (no atom cache, which the
 * dial does not advertise).
 *
 * The reply comes to the alias: ALIAS_SEND {33, FromPid, Ref}, or on OTP 28+
 * ALTACT_SIG_SEND {37, Flags, FromPid, Ref}. The reference's first id is the
 * slot and the second and third its call's sequence number, so finding the
 * call is an index, and a stale reply (a call timed out) does not match.
 */
#ifndef LD_WIRE_H
#define LD_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "load/args.h"

/* A slot's pid number: slot + this (small numbers are the BEAM's own processes). */
#define LD_PID_BASE 64
/* Slots per node at most: the slot is the reference's first id, which erts keeps 18 bits of. */
#define LD_MAX_SLOTS (1u << 18)
/* Longest check_rate request ({check_rate, <<"client-N">>}) and frame header. */
#define LD_MAX_REQUEST 48

typedef struct ld_patch {
    unsigned pid[3];            /* offsets of the pid number (u32, big endian) */
    unsigned npid;
    unsigned ref[2];            /* offsets of the reference's three ids */
    unsigned nref;
} ld_patch;

typedef struct ld_tmpl {
    char *call;                 /* MONITOR_P frame, then REG_SEND frame without its request */
    size_t call_len;
    size_t reg_send_at;         /* where the REG_SEND frame (its length field) starts */
    ld_patch call_patch;
    char *demon;                /* DEMONITOR_P */
    size_t demon_len;
    ld_patch demon_patch;
    char *cast;                 /* the cast frame of slot 0's pid */
    size_t cast_len;
} ld_tmpl;

/*
 * Encodes the templates for the node named node_name (creation creation)
 * calling the process registered as server. Owns what it allocates: free with
 * ld_tmpl_free.
 */
void ld_tmpl_init(ld_tmpl *t, const char *node_name, uint32_t creation, const char *server);
void ld_tmpl_free(ld_tmpl *t);

/* The request term's bytes (no version byte) into buf (LD_MAX_REQUEST): its length. */
size_t ld_encode_request(ld_request r, uint64_t id, char *buf);

/* A call's MONITOR_P and REG_SEND frames at out (room: call_len + request len): their length. */
size_t ld_tmpl_call(const ld_tmpl *t, char *out, unsigned slot, uint64_t seq, const char *req, size_t req_len);
/* The DEMONITOR_P frame at out (room: demon_len): its length. */
size_t ld_tmpl_demonitor(const ld_tmpl *t, char *out, unsigned slot, uint64_t seq);

typedef enum ld_frame_kind {
    LD_FRAME_OTHER = 0,         /* a tick, or a message for nobody we know */
    LD_FRAME_REPLY,             /* a reply to slot/seq; rejected: it was {error, _} */
    LD_FRAME_DOWN,              /* MONITOR_P_EXIT for slot/seq: the call failed */
    LD_FRAME_BAD                /* a frame we cannot read */
} ld_frame_kind;

typedef struct ld_frame_info {
    unsigned slot;
    uint64_t seq;
    int rejected;
} ld_frame_info;

/*
 * What one frame's body (after its 4-byte length; len may be 0, a tick) is.
 * The usual reply is recognised by walking its tags; anything else is decoded
 * with ei.
 */
ld_frame_kind ld_frame_read(const char *body, size_t len, ld_frame_info *info);

/*
 * Dials node target ("name@host") as our_name: asks host's epmd for the port,
 * connects, runs the handshake (cnode/handshake.h) advertising the runtime's
 * flags without the atom cache. Blocking, at most timeout_ms for each step.
 * Returns the connected socket (blocking mode), or -1 with a reason in err.
 */
int ld_dial(const char *target, const char *our_name, const char *cookie, uint32_t creation, unsigned timeout_ms,
            char *err, size_t errlen);

#endif

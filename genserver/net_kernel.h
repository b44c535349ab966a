/*
 * A minimal net_kernel, registered as `net_kernel`: what a BEAM node asks a
 * peer's net_kernel when it checks a connection. Node.ping/1 and
 * net_adm:ping/1 call {is_auth, Node} and expect `yes` (a message that got
 * through was authenticated by the handshake, as OTP's net_kernel reasons);
 * without an answer, ping says :pang and the caller drops the connection.
 *
 * As in OTP, net_kernel is supervised: the application starts it under its
 * kernel supervisor (supervisor/app.h), which restarts it when it stops.
 */
#ifndef GS_NET_KERNEL_H
#define GS_NET_KERNEL_H

#include "genserver/genserver.h"

/* Starts net_kernel, linked to parent (NULL for none), as gs_start does. */
int net_kernel_start(cn_node *node, cn_proc *parent, gs_server **out);

#endif

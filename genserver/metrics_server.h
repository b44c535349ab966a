/*
 * cnode_metrics: the process's metrics (cnode/metrics.h) as a map, for Elixir
 * users who feed their own telemetry:
 *
 *     GenServer.call({:cnode_metrics, node}, :get)
 *     #=> %{calls_total: %{%{server: "counter", result: "ok"} => 12, ...}, ...}
 *
 * The map's shape is cn_metrics_encode's; the README lists its keys. The
 * application starts it under kernel_sup (supervisor/app.h), so programs with
 * their own servers have it too.
 */
#ifndef GS_METRICS_SERVER_H
#define GS_METRICS_SERVER_H

#include "genserver/genserver.h"

/* Starts cnode_metrics, linked to parent (NULL for none), as gs_start does. */
int metrics_server_start(cn_node *node, cn_proc *parent, gs_server **out);

#endif

/* cnode_metrics (genserver/metrics_server.h): :get answers the metrics map. */
#include "genserver/metrics_server.h"

#include "cnode/metrics.h"

static gs_ret ms_call(gs_server *s, const gs_term *req, const gs_from *from, gs_result *res)
{
    (void)s;
    (void)from;
    if (!gs_term_is_atom(req, "get"))
        return GS_UNKNOWN;
    cn_metrics_encode(cn_metrics_default(), res->reply);
    return GS_REPLY;
}

static const gs_callbacks metrics_server_callbacks = {
    .module = "cnode_metrics",
    .handle_call = ms_call,
};

int metrics_server_start(cn_node *node, cn_proc *parent, gs_server **out)
{
    gs_options opt = {.name = "cnode_metrics", .parent = parent};
    return gs_start(node, &metrics_server_callbacks, NULL, &opt, out);
}

/* net_kernel (genserver/net_kernel.h): {is_auth, Node} answers yes. */
#include "genserver/net_kernel.h"

static gs_ret nk_call(gs_server *s, const gs_term *req, const gs_from *from, gs_result *res)
{
    (void)s;
    (void)from;
    int i = req->index, arity;
    if (ei_decode_tuple_header(req->buf, &i, &arity) == 0 && arity == 2) {
        gs_term tag = {req->buf, i};
        if (gs_term_is_atom(&tag, "is_auth")) {
            ei_x_encode_atom(res->reply, "yes");
            return GS_REPLY;
        }
    }
    return GS_UNKNOWN;
}

static const gs_callbacks net_kernel_callbacks = {
    .module = "net_kernel",
    .handle_call = nk_call,
};

int net_kernel_start(cn_node *node, cn_proc *parent, gs_server **out)
{
    gs_options opt = {.name = "net_kernel", .parent = parent};
    return gs_start(node, &net_kernel_callbacks, NULL, &opt, out);
}

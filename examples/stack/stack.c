/*
 * A C node with a server of its own: the stack of the README's "Writing your
 * own C GenServer", complete, built against an installed libcnode with
 * pkg-config alone (see Makefile beside this file).
 *
 *     ./stack stack@127.0.0.1 COOKIE
 *
 * From iex (iex --name me@127.0.0.1 --cookie COOKIE):
 *
 *     GenServer.cast({:stack, :"stack@127.0.0.1"}, {:push, "a"})   # any term
 *     GenServer.call({:stack, :"stack@127.0.0.1"}, :size)          # 1
 *     GenServer.call({:stack, :"stack@127.0.0.1"}, :pop)           # {:ok, "a"}
 *     GenServer.call({:stack, :"stack@127.0.0.1"}, :pop)           # :empty
 *
 * It prints "READY <name> <port>" once it can be called, and stops on SIGTERM
 * or SIGINT (exit 0), or with --stop-on-stdin-eof when its stdin closes. The
 * stack lives in memory: a restart starts empty (genserver/statefile.h is how
 * the built-in servers keep theirs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cnode/mem.h>
#include <genserver/genserver.h>
#include <supervisor/app.h>

/* The pushed terms, each a copy of its external format without the version byte. */
typedef struct item {
    char *term;
    int len;
    struct item *next;
} item;

typedef struct stack {
    item *top;
    long items;
} stack;

static gs_ret stack_call(gs_server *s, const gs_term *req, const gs_from *from, gs_result *res)
{
    (void)from;
    stack *st = gs_data(s);
    if (gs_term_is_atom(req, "size")) {          /* GenServer.call(srv, :size) */
        ei_x_encode_long(res->reply, st->items);
        return GS_REPLY;
    }
    if (gs_term_is_atom(req, "pop")) {           /* GenServer.call(srv, :pop) */
        item *it = st->top;
        if (it == NULL) {
            ei_x_encode_atom(res->reply, "empty");
            return GS_REPLY;
        }
        ei_x_encode_tuple_header(res->reply, 2);
        ei_x_encode_atom(res->reply, "ok");
        ei_x_append_buf(res->reply, it->term, it->len);
        st->top = it->next;
        st->items--;
        free(it->term);
        free(it);
        return GS_REPLY;
    }
    return GS_UNKNOWN;                           /* replies {:error, {:unknown_call, req}}, logged */
}

/* GenServer.cast(srv, {:push, term}): the term is copied, since the request is only borrowed. */
static gs_ret stack_cast(gs_server *s, const gs_term *req, gs_result *res)
{
    (void)res;
    stack *st = gs_data(s);
    int i = req->index, arity;
    char tag[MAXATOMLEN_UTF8];
    if (ei_decode_tuple_header(req->buf, &i, &arity) < 0 || arity != 2 ||
        ei_decode_atom(req->buf, &i, tag) < 0 || strcmp(tag, "push") != 0)
        return GS_UNKNOWN;                       /* logged and ignored */
    int start = i;
    if (ei_skip_term(req->buf, &i) < 0)
        return GS_UNKNOWN;
    /* cn_malloc never returns NULL: out of memory ends the node with one log line, as the BEAM does. */
    item *it = cn_malloc(sizeof *it);
    char *term = cn_malloc((size_t)(i - start));
    memcpy(term, req->buf + start, (size_t)(i - start));
    *it = (item){.term = term, .len = i - start, .next = st->top};
    st->top = it;
    st->items++;
    return GS_NOREPLY;
}

/* :sys.get_state shows the size. */
static int stack_get_state(gs_server *s, ei_x_buff *out)
{
    stack *st = gs_data(s);
    return ei_x_encode_long(out, st->items);
}

static void stack_cleanup(gs_server *s)
{
    stack *st = gs_data(s);
    while (st->top) {
        item *it = st->top;
        st->top = it->next;
        free(it->term);
        free(it);
    }
    free(st);
}

static const gs_callbacks stack_callbacks = {
    .module = "Elixir.Stack",
    .handle_call = stack_call,
    .handle_cast = stack_cast,
    .get_state = stack_get_state,
    .cleanup = stack_cleanup,     /* runs last, whatever ended the server */
};

/* A start function the supervisor can call: linked to its parent, registered as "stack". */
static int start_stack(cn_node *node, cn_proc *parent, void *arg, cn_proc **out)
{
    (void)arg;
    gs_server *gs;
    gs_options opt = {.name = "stack", .parent = parent};
    int rc = gs_start(node, &stack_callbacks, cn_calloc(1, sizeof(stack)), &opt, &gs);
    if (rc == 0)
        *out = gs_proc(gs);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "--stop-on-stdin-eof") != 0)) {
        fprintf(stderr, "usage: stack NAME@HOST COOKIE [--stop-on-stdin-eof]\n");
        return 2;
    }
    /* The tree under cnode_sup; net_kernel runs under kernel_sup beside it, as on any node. */
    sup_child_spec children[] = {
        {.id = "stack", .start = start_stack, .restart = SUP_PERMANENT,
         .shutdown_ms = SUP_WORKER_SHUTDOWN_MS, .type = SUP_WORKER, .module = "Elixir.Stack"},
    };
    sup_app_config cfg = {
        .node = {.name = argv[1], .cookie = argv[2]},
        .children = children,
        .nchildren = sizeof children / sizeof children[0],
        .stop_on_stdin_eof = argc == 4,
    };
    return sup_app_run(&cfg);
}

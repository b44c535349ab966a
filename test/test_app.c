/*
 * The application (supervisor/app.h) on a real node without epmd, through its
 * public header only: the tree it starts, a clean shutdown (by SIGTERM) that
 * runs every terminate, and the paths that used to leave the app holding freed
 * servers: a kill of a top supervisor, as Process.exit(pid, :kill) from a
 * connected node delivers it, and a :sys.terminate of net_kernel. Every test
 * runs its loop until the app has closed the node, and ends with
 * sup_app_free and uv_loop_close returning 0, so under ASan (make unit-san) a
 * use after free or a leak fails it. Two tests register with a fake epmd that
 * restarts: the app keeps running when the name comes back, and stops with
 * status 1, servers saved, when another node took it meanwhile.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cnode/buf.h"
#include "cnode/error.h"
#include "cnode/log.h"
#include "cnode/proc.h"
#include "genserver/statefile.h"
#include "supervisor/app.h"
#include "test/fake_epmd.h"

/*
 * The counter's state file: schema 2, the journal's lineage and generation
 * (16 bytes, genserver/journal.h), then the value as 8 bytes big endian
 * (genserver/counter.c).
 */
#define COUNTER_SCHEMA 2

typedef struct fx {
    uv_loop_t loop;
    char dir[64];
    sup_app *app;
    cn_node *node;
    int ready;
    int status;         /* the app's exit status, kept by run_to_end */
    cn_proc *tester;    /* sends as a connected node's process would; gets the replies */
    int replies;
    fake_epmd epmd;     /* for the tests with epmd */
} fx;

static void on_ready(sup_app *app)
{
    fx *f = sup_app_data(app);
    f->ready++;
}

static void tester_message(cn_proc *p, const char *buf, size_t len)
{
    (void)buf, (void)len;
    fx *f = cn_proc_data(p);
    f->replies++;
}

static const cn_proc_ops tester_ops = {tester_message, NULL};

/* A node registered with the fake epmd's first answer, or without epmd when script is NULL. */
static int setup_with(void **state, const fe_act *script, size_t nscript)
{
    fx *f = calloc(1, sizeof *f);
    uv_loop_init(&f->loop);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_app.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    if (script)
        fe_start(&f->loop, &f->epmd, script, nscript);
    sup_app_config cfg = {
        .node = {.name = "app@127.0.0.1", .cookie = "c", .no_epmd = script == NULL},
        .counter = {.initial = 0, .data_dir = f->dir},
        .limiter = {.max_requests = 100, .window_ms = 60000, .data_dir = f->dir},
        .ready_cb = on_ready,
        .data = f,
    };
    if (sup_app_new(&f->loop, &cfg, &f->app) != 0)
        return -1;
    f->node = sup_app_node(f->app);
    /* Without epmd the node is ready at once, so start returns with the tree running. */
    if (sup_app_start(f->app) != 0)
        return -1;
    while (script && f->ready == 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    if (f->ready != 1)
        return -1;
    f->tester = cn_proc_spawn(f->node, &tester_ops, f);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, NULL, 0);
}

static const fe_act epmd_comes_back[] = {FE_OK, FE_OK};
static const fe_act name_taken_meanwhile[] = {FE_OK, FE_TAKEN};

static int setup_epmd_comes_back(void **state)
{
    return setup_with(state, epmd_comes_back, 2);
}

static int setup_name_taken(void **state)
{
    return setup_with(state, name_taken_meanwhile, 2);
}

static int teardown(void **state)
{
    fx *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* A few loop turns: queued local messages and exit signals are delivered. */
static void turns(fx *f, int n)
{
    for (int i = 0; i < n; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

/*
 * Runs the loop until the app has closed the node and every handle (bounded:
 * a node that never closes fails instead of hanging), then frees it all.
 */
static void run_to_end(fx *f)
{
    int turns_left = 100000;
    while (uv_loop_alive(&f->loop) && turns_left-- > 0)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_false(uv_loop_alive(&f->loop));
    assert_true(sup_app_stopping(f->app));
    int status = sup_app_status(f->app);
    assert_int_equal(sup_app_free(f->app), 0);
    f->app = NULL;
    assert_int_equal(uv_loop_close(&f->loop), 0);
    f->status = status;
}

static void pid_of(fx *f, const char *name, erlang_pid *pid)
{
    cn_proc *p = cn_proc_whereis(f->node, name);
    assert_non_null(p);
    cn_proc_pid(p, pid);
}

/* GenServer.cast(counter, :increment), n times. */
static void cast_increments(fx *f, int n)
{
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "$gen_cast");
    ei_x_encode_atom(&x, "increment");
    for (int i = 0; i < n; i++)
        assert_int_equal(cn_send_name(f->tester, "counter", NULL, x.buff, (size_t)x.index), 0);
    ei_x_free(&x);
    turns(f, 4);
}

/* Process.exit(pid, reason) from the tester, then the tester goes, as a remote caller would. */
static void exit_signal(fx *f, const char *name, const char *reason)
{
    erlang_pid pid;
    pid_of(f, name, &pid);
    char r[64];
    size_t n = cn_term_atom(r, reason);
    assert_int_equal(cn_proc_exit_pid(f->tester, &pid, r, n), 0);
    cn_proc_exit(f->tester, NULL, 0);
    f->tester = NULL;
}

static long long saved_counter(fx *f)
{
    cn_buf b;
    cn_buf_init(&b);
    assert_int_equal(gs_state_load(f->dir, "counter", COUNTER_SCHEMA, &b), 0);
    assert_int_equal(b.len, 16 + 8);
    unsigned long long v = 0;
    for (size_t i = 16; i < 24; i++)
        v = v << 8 | (unsigned char)b.data[i];
    cn_buf_free(&b);
    return (long long)v;
}

static int saved(fx *f, const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s.state", f->dir, name);
    return access(path, F_OK) == 0;
}

static void start_registers_the_tree(void **state)
{
    fx *f = *state;
    const char *names[] = {"kernel_sup", "net_kernel", "cnode_sup", "counter", "rate_limiter"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        assert_non_null(cn_proc_whereis(f->node, names[i]));
    assert_false(sup_app_stopping(f->app));
    cn_proc_exit(f->tester, NULL, 0);
    sup_app_stop(f->app, 0);
    /* The tree went synchronously, in reverse order; the node closes on a later turn. */
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        assert_null(cn_proc_whereis(f->node, names[i]));
    run_to_end(f);
    assert_int_equal(f->status, 0);
}

static void sigterm_saves_every_server_and_exits_0(void **state)
{
    fx *f = *state;
    cast_increments(f, 3);
    cn_proc_exit(f->tester, NULL, 0);
    assert_int_equal(kill(getpid(), SIGTERM), 0);
    run_to_end(f);
    assert_int_equal(f->status, 0);
    assert_int_equal(saved_counter(f), 3);
    assert_true(saved(f, "rate_limiter"));
}

/* The next SIGTERM after the kill (here sup_app_stop) must find nothing freed to stop. */
static void killed_root_stops_the_node_with_1_after_the_children_saved(void **state)
{
    fx *f = *state;
    cast_increments(f, 5);
    exit_signal(f, "cnode_sup", "kill");
    turns(f, 2);
    assert_true(sup_app_stopping(f->app));
    sup_app_stop(f->app, 0);
    run_to_end(f);
    assert_int_equal(f->status, 1);
    /* The children got 'killed' through their links and ran terminate. */
    assert_int_equal(saved_counter(f), 5);
    assert_true(saved(f, "rate_limiter"));
}

static void killed_kernel_sup_stops_the_node_with_1(void **state)
{
    fx *f = *state;
    cast_increments(f, 2);
    exit_signal(f, "kernel_sup", "kill");
    run_to_end(f);
    assert_int_equal(f->status, 1);
    assert_int_equal(saved_counter(f), 2);
}

/* :sys.terminate(net_kernel, :normal): a permanent child, so kernel_sup starts a new one. */
static void terminated_net_kernel_is_restarted(void **state)
{
    fx *f = *state;
    erlang_pid old, self, now;
    pid_of(f, "net_kernel", &old);
    cn_proc_pid(f->tester, &self);
    erlang_ref ref;
    cn_node_make_ref(f->node, &ref);
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "system");
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_pid(&x, &self);
    ei_x_encode_ref(&x, &ref);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "terminate");
    ei_x_encode_atom(&x, "normal");
    assert_int_equal(cn_send_name(f->tester, "net_kernel", NULL, x.buff, (size_t)x.index), 0);
    ei_x_free(&x);
    turns(f, 4);
    assert_int_equal(f->replies, 1);
    pid_of(f, "net_kernel", &now);
    assert_int_not_equal(ei_cmp_pids(&old, &now), 0);
    assert_false(sup_app_stopping(f->app));
    cn_proc_exit(f->tester, NULL, 0);
    sup_app_stop(f->app, 0);
    run_to_end(f);
    assert_int_equal(f->status, 0);
}

/*
 * :sys.terminate(kernel_sup, Reason) with a reason holding a newline: the line
 * saying the node stops shows it escaped, so a peer cannot forge log lines.
 */
static void a_top_supervisor_reason_is_escaped_in_the_log(void **state)
{
    fx *f = *state;
    erlang_pid self;
    cn_proc_pid(f->tester, &self);
    erlang_ref ref;
    cn_node_make_ref(f->node, &ref);
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "system");
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_pid(&x, &self);
    ei_x_encode_ref(&x, &ref);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "terminate");
    ei_x_encode_atom(&x, "evil\nERROR [node] forged");
    assert_int_equal(cn_send_name(f->tester, "kernel_sup", NULL, x.buff, (size_t)x.index), 0);
    ei_x_free(&x);
    cn_proc_exit(f->tester, NULL, 0);
    f->tester = NULL;
    /* stderr into a file while the node stops. */
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    run_to_end(f);
    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    static char out[16384];
    rewind(tmp);
    size_t n = fread(out, 1, sizeof out - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    assert_int_equal(f->status, 1);
    assert_non_null(strstr(out, "the top supervisor kernel_sup exited (evil\\nERROR [node] forged)"));
    assert_null(strstr(out, "\nERROR [node] forged"));
}

/* A fourth restart within 5 s exceeds cnode_sup's intensity: status 1, as OTP stops the node. */
static void intensity_exceeded_stops_the_node_with_1(void **state)
{
    fx *f = *state;
    char r[16];
    size_t n = cn_term_atom(r, "kill");
    for (int i = 0; i < 4; i++) {
        erlang_pid pid;
        pid_of(f, "counter", &pid);
        assert_int_equal(cn_proc_exit_pid(f->tester, &pid, r, n), 0);
        turns(f, 2);
    }
    assert_true(sup_app_stopping(f->app));
    assert_null(cn_proc_whereis(f->node, "cnode_sup"));
    cn_proc_exit(f->tester, NULL, 0);
    run_to_end(f);
    assert_int_equal(f->status, 1);
    /* The rate limiter was shut down, not dropped: its terminate saved. */
    assert_true(saved(f, "rate_limiter"));
}

/* epmd restarts: the node registers again and the app keeps running. */
static void an_epmd_restart_changes_nothing(void **state)
{
    fx *f = *state;
    cn_log_level saved_level = cn_log_threshold;
    cn_log_threshold = CN_LOG_ERROR; /* the loss is a warning */
    fe_drop(&f->epmd);
    while (f->epmd.requests < 2 || f->epmd.open_clients < 1)
        uv_run(&f->loop, UV_RUN_ONCE);
    turns(f, 4);
    cn_log_threshold = saved_level;
    assert_false(sup_app_stopping(f->app));
    assert_non_null(cn_proc_whereis(f->node, "counter"));
    cn_proc_exit(f->tester, NULL, 0);
    fe_close(&f->epmd);
    sup_app_stop(f->app, 0);
    run_to_end(f);
    assert_int_equal(f->status, 0);
}

/*
 * epmd restarts and gives our name to another node before we register again:
 * the app stops the ordinary way, servers saving their state, with status 1.
 */
static void a_name_taken_meanwhile_stops_the_node_with_1(void **state)
{
    fx *f = *state;
    cast_increments(f, 4);
    cn_log_level saved_level = cn_log_threshold;
    cn_log_threshold = CN_LOG_NONE; /* the loss, the refusal and the stop are logged */
    fe_drop(&f->epmd);
    while (!sup_app_stopping(f->app))
        uv_run(&f->loop, UV_RUN_ONCE);
    cn_proc_exit(f->tester, NULL, 0);
    fe_close(&f->epmd);
    run_to_end(f);
    cn_log_threshold = saved_level;
    assert_int_equal(f->status, 1);
    assert_int_equal(f->epmd.requests, 2);
    assert_int_equal(saved_counter(f), 4);
    assert_true(saved(f, "rate_limiter"));
}

/* A program's own child under cnode_sup: a counter registered as "mine". */
static int start_mine(cn_node *node, cn_proc *parent, void *arg, cn_proc **out)
{
    gs_server *gs;
    int rc = counter_start(node, arg, "mine", parent, &gs);
    if (rc == 0)
        *out = gs_proc(gs);
    return rc;
}

/* An app without epmd, with the program's own children (NULL: the built-in ones). */
static fx *own_app(const sup_child_spec *children, size_t n, int stop_on_stdin_eof, counter_config *mine)
{
    fx *f = calloc(1, sizeof *f);
    uv_loop_init(&f->loop);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_app.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    if (mine)
        mine->data_dir = f->dir;
    sup_app_config cfg = {
        .node = {.name = "app@127.0.0.1", .cookie = "c", .no_epmd = 1},
        .counter = {.initial = 0, .data_dir = f->dir},
        .limiter = {.max_requests = 100, .window_ms = 60000, .data_dir = f->dir},
        .ready_cb = on_ready,
        .data = f,
        .children = children,
        .nchildren = n,
        .stop_on_stdin_eof = stop_on_stdin_eof,
    };
    assert_int_equal(sup_app_new(&f->loop, &cfg, &f->app), 0);
    f->node = sup_app_node(f->app);
    assert_int_equal(sup_app_start(f->app), 0);
    assert_int_equal(f->ready, 1);
    return f;
}

static void a_program_runs_its_own_children(void **state)
{
    (void)state;
    counter_config mine = {.initial = 7};
    sup_child_spec children[] = {
        {.id = "mine", .start = start_mine, .arg = &mine, .restart = SUP_PERMANENT,
         .shutdown_ms = SUP_WORKER_SHUTDOWN_MS, .type = SUP_WORKER, .module = "Elixir.Mine"},
    };
    fx *f = own_app(children, 1, 0, &mine);
    assert_non_null(cn_proc_whereis(f->node, "mine"));
    assert_non_null(cn_proc_whereis(f->node, "cnode_sup"));
    assert_non_null(cn_proc_whereis(f->node, "net_kernel"));
    assert_null(cn_proc_whereis(f->node, "counter"));
    assert_null(cn_proc_whereis(f->node, "rate_limiter"));
    sup_app_stop(f->app, 0);
    run_to_end(f);
    assert_int_equal(f->status, 0);
    assert_true(saved(f, "mine"));
    teardown((void **)&f);
}

/* As the BEAM's death closes a port's pipe: the app stops as on SIGTERM, servers saved. */
static void the_end_of_stdin_stops_the_app_with_0(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    int saved_stdin = dup(0);
    assert_int_equal(dup2(p[0], 0), 0);
    close(p[0]);
    fx *f = own_app(NULL, 0, 1, NULL);
    f->tester = cn_proc_spawn(f->node, &tester_ops, f);
    cast_increments(f, 2);
    cn_proc_exit(f->tester, NULL, 0);
    turns(f, 4);
    assert_false(sup_app_stopping(f->app));
    close(p[1]);
    run_to_end(f);
    assert_int_equal(f->status, 0);
    assert_int_equal(saved_counter(f), 2);
    assert_int_equal(dup2(saved_stdin, 0), 0);
    close(saved_stdin);
    teardown((void **)&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(start_registers_the_tree, setup, teardown),
        cmocka_unit_test(a_program_runs_its_own_children),
        cmocka_unit_test(the_end_of_stdin_stops_the_app_with_0),
        cmocka_unit_test_setup_teardown(sigterm_saves_every_server_and_exits_0, setup, teardown),
        cmocka_unit_test_setup_teardown(killed_root_stops_the_node_with_1_after_the_children_saved, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(killed_kernel_sup_stops_the_node_with_1, setup, teardown),
        cmocka_unit_test_setup_teardown(a_top_supervisor_reason_is_escaped_in_the_log, setup, teardown),
        cmocka_unit_test_setup_teardown(terminated_net_kernel_is_restarted, setup, teardown),
        cmocka_unit_test_setup_teardown(intensity_exceeded_stops_the_node_with_1, setup, teardown),
        cmocka_unit_test_setup_teardown(an_epmd_restart_changes_nothing, setup_epmd_comes_back, teardown),
        cmocka_unit_test_setup_teardown(a_name_taken_meanwhile_stops_the_node_with_1, setup_name_taken,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests of supervisor/supervisor.h with real gen_server children on a node
 * that has no connections: strategies, restart order, intensity, restart types,
 * nesting, and state that survives a restart through the state files.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cnode/error.h"
#include "cnode/proc.h"
#include "genserver/counter.h"
#include "supervisor/supervisor.h"

static char events[4096];

static void event(const char *what, const char *name)
{
    char line[64];
    snprintf(line, sizeof line, "%s:%s ", what, name);
    strncat(events, line, sizeof events - strlen(events) - 1);
}

static gs_ret t_init(gs_server *s, const gs_term *arg, gs_result *res)
{
    (void)arg;
    (void)res;
    event("init", gs_data(s));
    return GS_OK;
}

static void t_terminate(gs_server *s, const gs_term *reason)
{
    (void)reason;
    event("stop", gs_data(s));
}

static const gs_callbacks test_child = {.module = "test", .init = t_init, .terminate = t_terminate};

static int start_test_child(cn_node *node, cn_proc *parent, void *arg, cn_proc **out)
{
    gs_server *gs;
    gs_options opt = {.name = arg, .parent = parent};
    int rc = gs_start(node, &test_child, arg, &opt, &gs);
    if (rc == 0)
        *out = gs_proc(gs);
    return rc;
}

typedef struct fx {
    uv_loop_t loop;
    cn_node *node;
    cn_proc *killer;
    sup_t *sup;
    int exited;
    char exit_reason[64];
} fx;

static void ignore_message(cn_proc *p, const char *b, size_t n)
{
    (void)p, (void)b, (void)n;
}
static const cn_proc_ops killer_ops = {ignore_message, NULL};

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    uv_loop_init(&f->loop);
    cn_node_config cfg = {.name = "t@127.0.0.1", .cookie = "c", .no_epmd = 1};
    if (cn_node_new(&f->loop, &cfg, &f->node) != 0)
        return -1;
    f->killer = cn_proc_spawn(f->node, &killer_ops, NULL);
    events[0] = '\0';
    *state = f;
    return 0;
}

static void closed(cn_node *n)
{
    (void)n;
}

static int teardown(void **state)
{
    fx *f = *state;
    cn_proc_exit(f->killer, NULL, 0);
    cn_node_close(f->node, closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(cn_node_free(f->node), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

static void run(fx *f)
{
    for (int i = 0; i < 8; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void on_exit_cb(sup_t *s, const char *reason, void *data)
{
    (void)s;
    fx *f = data;
    f->exited++;
    snprintf(f->exit_reason, sizeof f->exit_reason, "%s", reason);
}

#define SPEC(name_, restart_) \
    {.id = name_, .start = start_test_child, .arg = name_, .restart = restart_, .shutdown_ms = 5000, .type = SUP_WORKER}

static void start_abc(fx *f, sup_strategy strategy, sup_restart_type b_type)
{
    sup_child_spec specs[] = {SPEC("a", SUP_PERMANENT), SPEC("b", b_type), SPEC("c", SUP_PERMANENT)};
    sup_flags flags = {.strategy = strategy, .intensity = 3, .period_s = 5};
    assert_int_equal(sup_start(f->node, "sup", &flags, specs, 3, NULL, on_exit_cb, f, &f->sup), 0);
    assert_string_equal(events, "init:a init:b init:c ");
    events[0] = '\0';
}

static void pid_of(fx *f, const char *name, erlang_pid *pid)
{
    cn_proc *p = cn_proc_whereis(f->node, name);
    assert_non_null(p);
    cn_proc_pid(p, pid);
}

static void crash(fx *f, const char *name, const char *reason)
{
    erlang_pid pid;
    pid_of(f, name, &pid);
    char r[64];
    size_t n = cn_term_atom(r, reason);
    cn_proc_exit_pid(f->killer, &pid, r, n);
    run(f);
}

static void one_for_one_restarts_only_the_dead(void **state)
{
    fx *f = *state;
    start_abc(f, SUP_ONE_FOR_ONE, SUP_PERMANENT);
    erlang_pid a0, b0, c0, a1, b1, c1;
    pid_of(f, "a", &a0), pid_of(f, "b", &b0), pid_of(f, "c", &c0);
    crash(f, "b", "boom");
    pid_of(f, "a", &a1), pid_of(f, "b", &b1), pid_of(f, "c", &c1);
    assert_int_equal(ei_cmp_pids(&a0, &a1), 0);
    assert_int_not_equal(ei_cmp_pids(&b0, &b1), 0);
    assert_int_equal(ei_cmp_pids(&c0, &c1), 0);
    /* The crash ran b's terminate (exit signal), then b started again. */
    assert_string_equal(events, "stop:b init:b ");
    sup_stop(f->sup);
    run(f);
}

static void one_for_all_restarts_everyone_in_order(void **state)
{
    fx *f = *state;
    start_abc(f, SUP_ONE_FOR_ALL, SUP_PERMANENT);
    crash(f, "b", "boom");
    assert_string_equal(events, "stop:b stop:c stop:a init:a init:b init:c ");
    sup_stop(f->sup);
    run(f);
}

static void rest_for_one_restarts_the_rest(void **state)
{
    fx *f = *state;
    start_abc(f, SUP_REST_FOR_ONE, SUP_PERMANENT);
    crash(f, "b", "boom");
    assert_string_equal(events, "stop:b stop:c init:b init:c ");
    sup_stop(f->sup);
    run(f);
}

static void stop_is_in_reverse_order(void **state)
{
    fx *f = *state;
    start_abc(f, SUP_ONE_FOR_ONE, SUP_PERMANENT);
    sup_stop(f->sup);
    run(f);
    assert_string_equal(events, "stop:c stop:b stop:a ");
    assert_int_equal(f->exited, 1);
    assert_string_equal(f->exit_reason, "normal");
}

static void intensity_exceeded_shuts_down(void **state)
{
    fx *f = *state;
    start_abc(f, SUP_ONE_FOR_ONE, SUP_PERMANENT);
    for (int i = 0; i < 3; i++)
        crash(f, "b", "boom");
    assert_int_equal(f->exited, 0);
    events[0] = '\0';
    crash(f, "b", "boom");
    assert_int_equal(f->exited, 1);
    assert_string_equal(f->exit_reason, "shutdown");
    /* b died; the others went in reverse order; nothing restarted. */
    assert_string_equal(events, "stop:b stop:c stop:a ");
    assert_null(cn_proc_whereis(f->node, "sup"));
}

static void transient_and_temporary_rules(void **state)
{
    fx *f = *state;
    start_abc(f, SUP_ONE_FOR_ONE, SUP_TRANSIENT);
    crash(f, "b", "normal_exit_is_not_this");
    assert_non_null(cn_proc_whereis(f->node, "b"));
    /* A transient child that exits normally stays down (exit/2 with normal is ignored, so stop it). */
    erlang_pid b;
    pid_of(f, "b", &b);
    char r[32];
    size_t n = cn_term_atom(r, "shutdown");
    cn_proc_exit_pid(f->killer, &b, r, n);
    run(f);
    assert_null(cn_proc_whereis(f->node, "b"));
    assert_int_equal(sup_child_count(f->sup), 3);
    sup_stop(f->sup);
    run(f);
}

static void temporary_child_is_forgotten(void **state)
{
    fx *f = *state;
    start_abc(f, SUP_ONE_FOR_ONE, SUP_TEMPORARY);
    crash(f, "b", "boom");
    assert_null(cn_proc_whereis(f->node, "b"));
    assert_int_equal(sup_child_count(f->sup), 2);
    sup_stop(f->sup);
    run(f);
}

static void kill_is_not_trapped_and_skips_terminate(void **state)
{
    fx *f = *state;
    start_abc(f, SUP_ONE_FOR_ONE, SUP_PERMANENT);
    crash(f, "b", "kill");
    assert_string_equal(events, "init:b ");
    sup_stop(f->sup);
    run(f);
}

/*
 * exit(Sup, kill): no terminate, so the children are not stopped by the
 * supervisor; they get 'killed' through their links and run their own
 * terminate. on_exit still fires, once, with "killed", so its owner can drop
 * the pointer before the supervisor is freed.
 */
static void killed_supervisor_calls_on_exit_once_and_children_terminate(void **state)
{
    fx *f = *state;
    start_abc(f, SUP_ONE_FOR_ONE, SUP_PERMANENT);
    crash(f, "sup", "kill");
    assert_int_equal(f->exited, 1);
    assert_string_equal(f->exit_reason, "killed");
    assert_null(cn_proc_whereis(f->node, "sup"));
    assert_null(cn_proc_whereis(f->node, "a"));
    assert_null(cn_proc_whereis(f->node, "b"));
    assert_null(cn_proc_whereis(f->node, "c"));
    /* Each child's own terminate, in the order the links delivered the signal. */
    assert_non_null(strstr(events, "stop:a"));
    assert_non_null(strstr(events, "stop:b"));
    assert_non_null(strstr(events, "stop:c"));
    assert_null(strstr(events, "init:"));
}

/* The name is taken: nothing runs, on_exit never fires, and nothing is freed twice (ASan). */
static void start_with_a_taken_name_fails_cleanly(void **state)
{
    fx *f = *state;
    assert_int_equal(cn_proc_register(f->killer, "sup"), 0);
    sup_child_spec specs[] = {SPEC("a", SUP_PERMANENT)};
    sup_flags flags = {.strategy = SUP_ONE_FOR_ONE, .intensity = 3, .period_s = 5};
    sup_t *s = NULL;
    assert_int_equal(sup_start(f->node, "sup", &flags, specs, 1, NULL, on_exit_cb, f, &s), CN_EEXIST);
    assert_null(s);
    run(f);
    assert_int_equal(f->exited, 0);
    assert_string_equal(events, "");
    assert_null(cn_proc_whereis(f->node, "a"));
}

static void nested_supervisors(void **state)
{
    fx *f = *state;
    static sup_child_spec inner[] = {SPEC("x", SUP_PERMANENT), SPEC("y", SUP_PERMANENT)};
    static sup_nested nest = {.name = "inner", .flags = {SUP_ONE_FOR_ONE, 3, 5}, .specs = inner, .n = 2};
    sup_child_spec outer[] = {
        SPEC("a", SUP_PERMANENT),
        {.id = "inner", .start = sup_start_nested, .arg = &nest, .restart = SUP_PERMANENT,
         .shutdown_ms = SUP_SHUTDOWN_INFINITY, .type = SUP_SUPERVISOR},
    };
    sup_flags flags = {SUP_ONE_FOR_ONE, 3, 5};
    assert_int_equal(sup_start(f->node, "root", &flags, outer, 2, NULL, on_exit_cb, f, &f->sup), 0);
    assert_string_equal(events, "init:a init:x init:y ");
    events[0] = '\0';
    crash(f, "x", "boom");
    assert_string_equal(events, "stop:x init:x ");
    events[0] = '\0';
    sup_stop(f->sup);
    run(f);
    assert_string_equal(events, "stop:y stop:x stop:a ");
}

static int start_failing_child(cn_node *node, cn_proc *parent, void *arg, cn_proc **out)
{
    (void)node, (void)parent, (void)arg, (void)out;
    return -EINVAL;
}

static void dynamic_children_start_restart_and_stop(void **state)
{
    fx *f = *state;
    sup_flags flags = {.strategy = SUP_SIMPLE_ONE_FOR_ONE, .intensity = 3, .period_s = 5};
    assert_int_equal(sup_start(f->node, "dyn", &flags, NULL, 0, NULL, on_exit_cb, f, &f->sup), 0);
    assert_int_equal(sup_child_count(f->sup), 0);
    sup_child_spec a = SPEC("a", SUP_PERMANENT), b = SPEC("b", SUP_PERMANENT), c = SPEC("c", SUP_TEMPORARY);
    assert_int_equal(sup_start_child(f->sup, &a), 0);
    assert_int_equal(sup_start_child(f->sup, &b), 0);
    assert_int_equal(sup_start_child(f->sup, &c), 0);
    assert_string_equal(events, "init:a init:b init:c ");
    assert_int_equal(sup_child_count(f->sup), 3);
    /* The same id twice is refused; a child that cannot start is not kept. */
    assert_int_equal(sup_start_child(f->sup, &a), CN_EEXIST);
    sup_child_spec bad = {.id = "bad", .start = start_failing_child, .restart = SUP_PERMANENT,
                          .shutdown_ms = 5000, .type = SUP_WORKER};
    assert_int_equal(sup_start_child(f->sup, &bad), -EINVAL);
    assert_int_equal(sup_child_count(f->sup), 3);
    /* Each child is restarted alone; a temporary one is forgotten. */
    events[0] = '\0';
    erlang_pid b0, b1;
    pid_of(f, "b", &b0);
    crash(f, "b", "boom");
    pid_of(f, "b", &b1);
    assert_int_not_equal(ei_cmp_pids(&b0, &b1), 0);
    assert_string_equal(events, "stop:b init:b ");
    crash(f, "c", "boom");
    assert_null(cn_proc_whereis(f->node, "c"));
    assert_int_equal(sup_child_count(f->sup), 2);
    events[0] = '\0';
    sup_stop(f->sup);
    run(f);
    assert_string_equal(events, "stop:b stop:a ");
    assert_int_equal(f->exited, 1);
}

static void counter_value_survives_a_restart(void **state)
{
    fx *f = *state;
    char dir[] = "/tmp/test_supervisor_XXXXXX";
    assert_non_null(mkdtemp(dir));
    static counter_config cfg;
    cfg.initial = 0;
    cfg.data_dir = dir;
    gs_server *gs;
    assert_int_equal(counter_start(f->node, &cfg, "counter", NULL, &gs), 0);
    /* Set the value through the :sys path's put_state, then stop the server. */
    ei_x_buff x;
    ei_x_new(&x);
    ei_x_encode_longlong(&x, 41);
    gs_term t = {x.buff, 0};
    assert_int_equal(counter_callbacks.put_state(gs, &t), 0);
    ei_x_free(&x);
    gs_stop(gs, "shutdown");
    run(f);
    assert_int_equal(counter_start(f->node, &cfg, "counter", NULL, &gs), 0);
    ei_x_new(&x);
    assert_int_equal(counter_callbacks.get_state(gs, &x), 0);
    long long v;
    int i = 0;
    assert_int_equal(ei_decode_longlong(x.buff, &i, &v), 0);
    assert_int_equal(v, 41);
    ei_x_free(&x);
    gs_stop(gs, "shutdown");
    run(f);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(one_for_one_restarts_only_the_dead, setup, teardown),
        cmocka_unit_test_setup_teardown(one_for_all_restarts_everyone_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(rest_for_one_restarts_the_rest, setup, teardown),
        cmocka_unit_test_setup_teardown(stop_is_in_reverse_order, setup, teardown),
        cmocka_unit_test_setup_teardown(intensity_exceeded_shuts_down, setup, teardown),
        cmocka_unit_test_setup_teardown(transient_and_temporary_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(temporary_child_is_forgotten, setup, teardown),
        cmocka_unit_test_setup_teardown(kill_is_not_trapped_and_skips_terminate, setup, teardown),
        cmocka_unit_test_setup_teardown(killed_supervisor_calls_on_exit_once_and_children_terminate, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(start_with_a_taken_name_fails_cleanly, setup, teardown),
        cmocka_unit_test_setup_teardown(nested_supervisors, setup, teardown),
        cmocka_unit_test_setup_teardown(dynamic_children_start_restart_and_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(counter_value_survives_a_restart, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests for supervisor/sup_policy: OTP's restart rules over fake children
 * (indices) and a fake clock (plain millisecond numbers).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "supervisor/sup_policy.h"

#define P SUP_PERMANENT
#define TR SUP_TRANSIENT
#define TE SUP_TEMPORARY
#define MAXC 8

/* One expected plan. A count of 0 needs no array, so arrays may be NULL then. */
static void check_plan(sup_strategy s, const sup_restart_type *types, size_t n, size_t dead,
                       const size_t *want_stop, size_t nwant_stop, const size_t *want_start,
                       size_t nwant_start)
{
    size_t stop[MAXC], start[MAXC], nstop = 99, nstart = 99;
    assert_int_equal(sup_plan_restart(s, types, n, dead, stop, &nstop, start, &nstart), 0);
    assert_int_equal(nstop, nwant_stop);
    assert_int_equal(nstart, nwant_start);
    for (size_t i = 0; i < nstop; i++)
        assert_int_equal(stop[i], want_stop[i]);
    for (size_t i = 0; i < nstart; i++)
        assert_int_equal(start[i], want_start[i]);
}

#define PLAN(s, types, dead, stop_list, start_list)                                    \
    do {                                                                               \
        const size_t ws[] = {(size_t)-1, stop_list};                                   \
        const size_t wt[] = {(size_t)-1, start_list};                                  \
        check_plan((s), (types), sizeof(types) / sizeof((types)[0]), (dead), ws + 1,   \
                   sizeof ws / sizeof ws[0] - 1, wt + 1, sizeof wt / sizeof wt[0] - 1); \
    } while (0)
#define L(...) __VA_ARGS__
#define NONE

static void test_should_restart_permanent(void **state)
{
    (void)state;
    assert_int_equal(sup_should_restart(P, SUP_EXIT_NORMAL), 1);
    assert_int_equal(sup_should_restart(P, SUP_EXIT_SHUTDOWN), 1);
    assert_int_equal(sup_should_restart(P, SUP_EXIT_ABNORMAL), 1);
}

static void test_should_restart_transient(void **state)
{
    (void)state;
    /* normal, shutdown and {shutdown, _} are intended exits; only the rest count. */
    assert_int_equal(sup_should_restart(TR, SUP_EXIT_NORMAL), 0);
    assert_int_equal(sup_should_restart(TR, SUP_EXIT_SHUTDOWN), 0);
    assert_int_equal(sup_should_restart(TR, SUP_EXIT_ABNORMAL), 1);
}

static void test_should_restart_temporary(void **state)
{
    (void)state;
    assert_int_equal(sup_should_restart(TE, SUP_EXIT_NORMAL), 0);
    assert_int_equal(sup_should_restart(TE, SUP_EXIT_SHUTDOWN), 0);
    assert_int_equal(sup_should_restart(TE, SUP_EXIT_ABNORMAL), 0);
    assert_int_equal(sup_should_restart((sup_restart_type)42, SUP_EXIT_ABNORMAL), 0);
}

static void test_one_for_one(void **state)
{
    (void)state;
    const sup_restart_type t[] = {P, P, P, P};
    PLAN(SUP_ONE_FOR_ONE, t, 0, NONE, L(0));
    PLAN(SUP_ONE_FOR_ONE, t, 2, NONE, L(2));
    PLAN(SUP_ONE_FOR_ONE, t, 3, NONE, L(3));
    const sup_restart_type one[] = {TR};
    PLAN(SUP_ONE_FOR_ONE, one, 0, NONE, L(0));
}

static void test_simple_one_for_one(void **state)
{
    (void)state;
    /* Dynamic children: siblings, temporary or not, are never touched. */
    const sup_restart_type t[] = {TR, TE, P, TR, TE};
    PLAN(SUP_SIMPLE_ONE_FOR_ONE, t, 0, NONE, L(0));
    PLAN(SUP_SIMPLE_ONE_FOR_ONE, t, 2, NONE, L(2));
    PLAN(SUP_SIMPLE_ONE_FOR_ONE, t, 3, NONE, L(3));
}

static void test_one_for_all(void **state)
{
    (void)state;
    const sup_restart_type t[] = {P, P, P, P};
    PLAN(SUP_ONE_FOR_ALL, t, 0, L(3, 2, 1), L(0, 1, 2, 3));
    PLAN(SUP_ONE_FOR_ALL, t, 2, L(3, 1, 0), L(0, 1, 2, 3));
    PLAN(SUP_ONE_FOR_ALL, t, 3, L(2, 1, 0), L(0, 1, 2, 3));
    const sup_restart_type one[] = {P};
    PLAN(SUP_ONE_FOR_ALL, one, 0, NONE, L(0));
}

static void test_rest_for_one(void **state)
{
    (void)state;
    const sup_restart_type t[] = {P, P, P, P};
    PLAN(SUP_REST_FOR_ONE, t, 0, L(3, 2, 1), L(0, 1, 2, 3));
    PLAN(SUP_REST_FOR_ONE, t, 1, L(3, 2), L(1, 2, 3));
    PLAN(SUP_REST_FOR_ONE, t, 3, NONE, L(3));
}

static void test_group_drops_temporary(void **state)
{
    (void)state;
    /* Stopped temporaries are stopped but never restarted (OTP removes them);
     * a transient sibling comes back, since it was the supervisor that stopped it. */
    const sup_restart_type t[] = {P, TE, TR, TE, P};
    PLAN(SUP_ONE_FOR_ALL, t, 2, L(4, 3, 1, 0), L(0, 2, 4));
    PLAN(SUP_ONE_FOR_ALL, t, 0, L(4, 3, 2, 1), L(0, 2, 4));
    PLAN(SUP_ONE_FOR_ALL, t, 4, L(3, 2, 1, 0), L(0, 2, 4));
    PLAN(SUP_REST_FOR_ONE, t, 0, L(4, 3, 2, 1), L(0, 2, 4));
    /* A temporary before the dead child is outside rest_for_one's reach. */
    PLAN(SUP_REST_FOR_ONE, t, 2, L(4, 3), L(2, 4));
    PLAN(SUP_REST_FOR_ONE, t, 4, NONE, L(4));
    const sup_restart_type all_temp[] = {TE, TE, P, TE};
    PLAN(SUP_ONE_FOR_ALL, all_temp, 2, L(3, 1, 0), L(2));
}

static void test_plan_rejects_misuse(void **state)
{
    (void)state;
    const sup_restart_type t[] = {P, TE, P};
    const sup_restart_type bad[] = {P, (sup_restart_type)7, P};
    size_t stop[MAXC], start[MAXC], nstop, nstart;
    /* A temporary child is never restarted, so there is no plan for it. */
    assert_int_equal(sup_plan_restart(SUP_ONE_FOR_ALL, t, 3, 1, stop, &nstop, start, &nstart),
                     -EINVAL);
    assert_int_equal(sup_plan_restart(SUP_ONE_FOR_ONE, t, 3, 3, stop, &nstop, start, &nstart),
                     -EINVAL);
    assert_int_equal(sup_plan_restart(SUP_ONE_FOR_ONE, t, 0, 0, stop, &nstop, start, &nstart),
                     -EINVAL);
    assert_int_equal(
        sup_plan_restart((sup_strategy)9, t, 3, 0, stop, &nstop, start, &nstart), -EINVAL);
    assert_int_equal(sup_plan_restart(SUP_ONE_FOR_ALL, bad, 3, 0, stop, &nstop, start, &nstart),
                     -EINVAL);
    assert_int_equal(sup_plan_restart(SUP_ONE_FOR_ONE, NULL, 3, 0, stop, &nstop, start, &nstart),
                     -EINVAL);
    assert_int_equal(sup_plan_restart(SUP_ONE_FOR_ONE, t, 3, 0, stop, &nstop, NULL, &nstart),
                     -EINVAL);
}

static void test_intensity_init(void **state)
{
    (void)state;
    sup_intensity it;
    assert_int_equal(sup_intensity_init(&it, -1, 5), -EINVAL);
    assert_int_equal(sup_intensity_init(&it, SUP_INTENSITY_MAX + 1, 5), -EINVAL);
    assert_int_equal(sup_intensity_init(&it, 3, 0), -EINVAL);
    assert_int_equal(sup_intensity_init(NULL, 3, 5), -EINVAL);
    assert_int_equal(sup_intensity_init(&it, SUP_INTENSITY_MAX, 1), 0);
    assert_int_equal(sup_intensity_init(&it, 0, 1), 0);
}

static void test_intensity_within_period(void **state)
{
    (void)state;
    sup_intensity it;
    assert_int_equal(sup_intensity_init(&it, 3, 5), 0);
    assert_int_equal(sup_intensity_add(&it, 10000), 0);
    assert_int_equal(sup_intensity_add(&it, 11000), 0);
    assert_int_equal(sup_intensity_add(&it, 12000), 0);
    /* The fourth restart within 5 s is one more than 3. */
    assert_int_equal(sup_intensity_add(&it, 13000), 1);
}

static void test_intensity_outside_period(void **state)
{
    (void)state;
    sup_intensity it;
    assert_int_equal(sup_intensity_init(&it, 3, 5), 0);
    assert_int_equal(sup_intensity_add(&it, 0), 0);
    assert_int_equal(sup_intensity_add(&it, 1000), 0);
    assert_int_equal(sup_intensity_add(&it, 2000), 0);
    /* The restart at 0 is 5001 ms old and forgotten: 1000, 2000, 5001 remain. */
    assert_int_equal(sup_intensity_add(&it, 5001), 0);
    /* Long after, everything is forgotten. */
    assert_int_equal(sup_intensity_add(&it, 60000), 0);
    assert_int_equal(sup_intensity_add(&it, 60001), 0);
    assert_int_equal(sup_intensity_add(&it, 60002), 0);
    assert_int_equal(sup_intensity_add(&it, 60003), 1);
}

static void test_intensity_exact_boundary(void **state)
{
    (void)state;
    sup_intensity it;
    /* OTP keeps a restart while R >= Now - Period: exactly `period` old still counts. */
    assert_int_equal(sup_intensity_init(&it, 1, 5), 0);
    assert_int_equal(sup_intensity_add(&it, 1000), 0);
    assert_int_equal(sup_intensity_add(&it, 6000), 1);

    assert_int_equal(sup_intensity_init(&it, 1, 5), 0);
    assert_int_equal(sup_intensity_add(&it, 1000), 0);
    assert_int_equal(sup_intensity_add(&it, 6001), 0);

    assert_int_equal(sup_intensity_init(&it, 3, 5), 0);
    assert_int_equal(sup_intensity_add(&it, 0), 0);
    assert_int_equal(sup_intensity_add(&it, 0), 0);
    assert_int_equal(sup_intensity_add(&it, 0), 0);
    assert_int_equal(sup_intensity_add(&it, 5000), 1);
}

static void test_intensity_zero(void **state)
{
    (void)state;
    sup_intensity it;
    assert_int_equal(sup_intensity_init(&it, 0, 5), 0);
    assert_int_equal(sup_intensity_add(&it, 0), 1);
    assert_int_equal(sup_intensity_init(&it, 0, 1), 0);
    assert_int_equal(sup_intensity_add(&it, 1000000), 1);
}

static void test_intensity_defaults(void **state)
{
    (void)state;
    sup_intensity it;
    /* Elixir's default, 3 restarts in 5 s. */
    assert_int_equal(sup_intensity_init(&it, SUP_ELIXIR_DEFAULT_INTENSITY, SUP_DEFAULT_PERIOD_S),
                     0);
    /* One crash every 1.7 s is sustainable: no four fall within 5 s. */
    for (int64_t t = 0; t < 60000; t += 1700)
        assert_int_equal(sup_intensity_add(&it, t), 0);
    /* One every 1.666 s is not: the 4th of a run spans only 4.998 s. */
    assert_int_equal(sup_intensity_init(&it, SUP_ELIXIR_DEFAULT_INTENSITY, SUP_DEFAULT_PERIOD_S),
                     0);
    assert_int_equal(sup_intensity_add(&it, 0), 0);
    assert_int_equal(sup_intensity_add(&it, 1666), 0);
    assert_int_equal(sup_intensity_add(&it, 3332), 0);
    assert_int_equal(sup_intensity_add(&it, 4998), 1);

    /* OTP's own default, 1 in 5 s: a second crash within 5 s is too many. */
    assert_int_equal(sup_intensity_init(&it, SUP_OTP_DEFAULT_INTENSITY, SUP_DEFAULT_PERIOD_S), 0);
    assert_int_equal(sup_intensity_add(&it, 0), 0);
    assert_int_equal(sup_intensity_add(&it, 4999), 1);
}

/*
 * A straight transcription of the rule of OTP's add_restart/3 over an unbounded
 * list, to compare the ring against: keep restarts with t >= now - period, add
 * now, exceeded when more than intensity remain.
 */
static int model_add(int64_t *list, int *n, int intensity, int64_t period_ms, int64_t now)
{
    int k = 0;
    for (int i = 0; i < *n; i++) {
        if (list[i] >= now - period_ms)
            list[k++] = list[i];
    }
    list[k++] = now;
    *n = k;
    return k > intensity;
}

static void test_intensity_matches_model(void **state)
{
    (void)state;
    srand(12345);
    for (int intensity = 0; intensity <= 10; intensity++) {
        for (int period = 1; period <= 4; period++) {
            sup_intensity it;
            assert_int_equal(sup_intensity_init(&it, intensity, period), 0);
            int64_t list[2048];
            int n = 0;
            int64_t now = 0;
            for (int step = 0; step < 1000; step++) {
                /* Bursts and lulls around the period, ties included. */
                now += rand() % 4 == 0 ? rand() % (period * 1500) : rand() % 400;
                int want = model_add(list, &n, intensity, (int64_t)period * 1000, now);
                assert_int_equal(sup_intensity_add(&it, now), want);
                /* A real supervisor stops at the first excess; start over like a
                 * restarted supervisor would. */
                if (want) {
                    assert_int_equal(sup_intensity_init(&it, intensity, period), 0);
                    n = 0;
                }
            }
        }
    }
}

static void test_nested_supervisor(void **state)
{
    (void)state;
    /* A child supervisor is planned exactly as a worker: the plan never looks at
     * the child type. Children: worker, supervisor, worker. */
    const sup_child_type kinds[] = {SUP_WORKER, SUP_SUPERVISOR, SUP_WORKER};
    const sup_restart_type t[] = {P, P, P};
    PLAN(SUP_ONE_FOR_ALL, t, 1, L(2, 0), L(0, 1, 2));
    PLAN(SUP_REST_FOR_ONE, t, 1, L(2), L(1, 2));
    PLAN(SUP_ONE_FOR_ONE, t, 1, NONE, L(1));
    /* Only its default shutdown differs: a subtree gets all the time it needs. */
    assert_int_equal(sup_default_shutdown_ms(kinds[0]), SUP_WORKER_SHUTDOWN_MS);
    assert_int_equal(sup_default_shutdown_ms(kinds[1]), SUP_SHUTDOWN_INFINITY);

    /* The inner supervisor (1 restart in 5 s) gives up on its second crash in
     * a row and exits with reason shutdown... */
    sup_intensity inner, outer;
    assert_int_equal(sup_intensity_init(&inner, 1, 5), 0);
    assert_int_equal(sup_intensity_init(&outer, 3, 5), 0);
    assert_int_equal(sup_intensity_add(&inner, 0), 0);
    assert_int_equal(sup_intensity_add(&inner, 100), 1);
    /* ...which the parent restarts when the child supervisor is permanent,
     * counting it against its own intensity, and not when it is transient. */
    assert_int_equal(sup_should_restart(P, SUP_EXIT_SHUTDOWN), 1);
    assert_int_equal(sup_intensity_add(&outer, 100), 0);
    assert_int_equal(sup_should_restart(TR, SUP_EXIT_SHUTDOWN), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_should_restart_permanent),
        cmocka_unit_test(test_should_restart_transient),
        cmocka_unit_test(test_should_restart_temporary),
        cmocka_unit_test(test_one_for_one),
        cmocka_unit_test(test_simple_one_for_one),
        cmocka_unit_test(test_one_for_all),
        cmocka_unit_test(test_rest_for_one),
        cmocka_unit_test(test_group_drops_temporary),
        cmocka_unit_test(test_plan_rejects_misuse),
        cmocka_unit_test(test_intensity_init),
        cmocka_unit_test(test_intensity_within_period),
        cmocka_unit_test(test_intensity_outside_period),
        cmocka_unit_test(test_intensity_exact_boundary),
        cmocka_unit_test(test_intensity_zero),
        cmocka_unit_test(test_intensity_defaults),
        cmocka_unit_test(test_intensity_matches_model),
        cmocka_unit_test(test_nested_supervisor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

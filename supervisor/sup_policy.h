/*
 * The supervisor's decisions, as pure functions over child indices.
 *
 * Nothing here touches a process, a clock or the heap: the supervisor asks what to
 * do, carries it out, and reports back. That keeps OTP's rules (restart types,
 * strategies, restart intensity) in one place where unit tests can drive them with
 * fake children and a fake clock.
 *
 * The rules follow OTP 25's lib/stdlib/src/supervisor.erl (do_restart/3,
 * restart/3, terminate_children/2, add_restart/3). Where we differ, the comment
 * says so.
 */
#ifndef SUP_POLICY_H
#define SUP_POLICY_H

#include <stddef.h>
#include <stdint.h>

typedef enum sup_restart_type {
    SUP_PERMANENT = 0, /* always restarted */
    SUP_TRANSIENT,     /* restarted only after an abnormal exit */
    SUP_TEMPORARY      /* never restarted, and forgotten once it is gone */
} sup_restart_type;

/*
 * How a child ended, reduced to what the restart rules look at. The integrator
 * maps the exit reason term: `normal` -> SUP_EXIT_NORMAL; `shutdown` and
 * `{shutdown, _}` -> SUP_EXIT_SHUTDOWN; anything else, `kill`/`killed` included,
 * -> SUP_EXIT_ABNORMAL.
 */
typedef enum sup_exit_kind {
    SUP_EXIT_NORMAL = 0,
    SUP_EXIT_SHUTDOWN,
    SUP_EXIT_ABNORMAL
} sup_exit_kind;

typedef enum sup_strategy {
    SUP_ONE_FOR_ONE = 0,
    SUP_ONE_FOR_ALL,
    SUP_REST_FOR_ONE,
    SUP_SIMPLE_ONE_FOR_ONE /* dynamic children, each restarted alone */
} sup_strategy;

/* A child that is itself a supervisor follows exactly the same rules as a worker. */
typedef enum sup_child_type {
    SUP_WORKER = 0,
    SUP_SUPERVISOR
} sup_child_type;

/* OTP's shutdown default: 5000 ms for a worker, infinity (-1 here) for a supervisor. */
#define SUP_SHUTDOWN_INFINITY (-1)
#define SUP_WORKER_SHUTDOWN_MS 5000

/*
 * Restart intensity defaults. OTP's supervisor module defaults to 1 restart in
 * 5 s; Elixir's Supervisor (what our callers are used to) defaults to 3 in 5 s.
 */
#define SUP_OTP_DEFAULT_INTENSITY 1
#define SUP_ELIXIR_DEFAULT_INTENSITY 3
#define SUP_DEFAULT_PERIOD_S 5

/* The largest intensity sup_intensity can track; larger values are refused. */
#define SUP_INTENSITY_MAX 64

/*
 * Returns 1 when a child of this restart type that ended this way must be
 * restarted, 0 when it must not (the supervisor then forgets a temporary child
 * and keeps a transient one's spec as "not running", as OTP does). An unknown
 * type or kind returns 0.
 */
int sup_should_restart(sup_restart_type type, sup_exit_kind kind);

/*
 * Returns the default shutdown time in milliseconds for a child of this type:
 * SUP_WORKER_SHUTDOWN_MS for a worker, SUP_SHUTDOWN_INFINITY for a supervisor
 * (a subtree needs all the time it takes to stop in order).
 */
int sup_default_shutdown_ms(sup_child_type type);

/*
 * Plans a restart that sup_should_restart() has already approved and that
 * sup_intensity_add() has allowed. Children are indices 0..n-1 in start order;
 * `types[i]` is child i's restart type and `dead` is the child that exited.
 *
 * Fills `stop` with the children to stop, in the order to stop them (reverse
 * start order), and `start` with the children to start, in start order. The dead
 * child is never in `stop` (it is gone already) and is always in `start`.
 * Temporary children in `stop` are not in `start`: the integrator must remove
 * them from its child list once they are stopped, as OTP does. A child that is
 * already not running still appears in `stop` (stopping it is then a no-op) and,
 * unless temporary, in `start`: OTP's one_for_all and rest_for_one restart such
 * children too.
 *
 * The caller owns all arrays; `stop` and `start` need room for n entries each.
 * `*nstop` and `*nstart` receive the counts.
 *
 * Returns 0, or -EINVAL for a NULL pointer, n == 0, dead >= n, an unknown
 * strategy, or a dead child that is temporary (a temporary child is never
 * restarted, so there is nothing to plan).
 */
int sup_plan_restart(sup_strategy strategy, const sup_restart_type *types, size_t n,
                     size_t dead, size_t *stop, size_t *nstop, size_t *start,
                     size_t *nstart);

/*
 * Restart intensity: at most `intensity` restarts within `period` seconds.
 *
 * Caller-allocated, no resources, so there is no close. Only the last
 * `intensity` restart times are kept: whether one more restart is too many
 * depends on nothing older.
 */
typedef struct sup_intensity {
    int intensity;
    int64_t period_ms;
    int64_t times[SUP_INTENSITY_MAX]; /* ring of restart times, ms */
    int head;                         /* slot the next restart goes into */
    int count;                        /* how many slots hold a time */
} sup_intensity;

/*
 * Prepares `it` for `intensity` restarts (0..SUP_INTENSITY_MAX) per `period_s`
 * seconds (at least 1, as OTP requires). Returns 0 or -EINVAL.
 */
int sup_intensity_init(sup_intensity *it, int intensity, int period_s);

/*
 * Records a restart at `now_ms` (a monotonic clock the caller injects; it must not
 * go backwards). Returns 0 while within limits and 1 when this restart exceeds
 * them, in which case the supervisor must not restart the child but stop the
 * remaining children in reverse start order and exit with reason `shutdown`.
 *
 * Boundary, as OTP's add_restart/3: an earlier restart still counts while
 * now - t <= period (a restart exactly `period` old is counted); the limit is
 * exceeded when more than `intensity` restarts, this one included, are counted.
 * So intensity 0 makes every restart exceed, and with 3 in 5 s the fourth
 * restart within 5 s exceeds.
 *
 * One difference: OTP compares whole seconds of erlang:monotonic_time, so its
 * window is effectively between period and period + 1 s depending on where the
 * second ticks fall. We compare milliseconds, so the window is exactly `period`.
 */
int sup_intensity_add(sup_intensity *it, int64_t now_ms);

#endif

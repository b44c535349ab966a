#include "supervisor/sup_policy.h"

#include <assert.h>
#include <errno.h>

int sup_should_restart(sup_restart_type type, sup_exit_kind kind)
{
    switch (type) {
    case SUP_PERMANENT:
        return 1;
    case SUP_TRANSIENT:
        /* OTP's do_restart/3 treats normal, shutdown and {shutdown, _} as
         * intended exits; only anything else brings a transient child back. */
        return kind == SUP_EXIT_ABNORMAL;
    case SUP_TEMPORARY:
    default:
        return 0;
    }
}

int sup_default_shutdown_ms(sup_child_type type)
{
    return type == SUP_SUPERVISOR ? SUP_SHUTDOWN_INFINITY : SUP_WORKER_SHUTDOWN_MS;
}

static int valid_type(sup_restart_type t)
{
    return t == SUP_PERMANENT || t == SUP_TRANSIENT || t == SUP_TEMPORARY;
}

/*
 * Stops and restarts the children first..n-1 around the dead one. Stopping runs
 * in reverse start order so that a child never outlives one it was started
 * after (and may depend on); starting runs in start order for the same reason.
 * Temporary children are stopped but left out of the restart, as OTP's
 * terminate_children/2 removes them.
 */
static int plan_group(const sup_restart_type *types, size_t n, size_t first, size_t dead,
                      size_t *stop, size_t *nstop, size_t *start, size_t *nstart)
{
    for (size_t i = first; i < n; i++) {
        if (!valid_type(types[i]))
            return -EINVAL;
    }
    size_t k = 0;
    for (size_t i = n; i-- > first;) {
        if (i != dead)
            stop[k++] = i;
    }
    *nstop = k;
    k = 0;
    for (size_t i = first; i < n; i++) {
        if (i == dead || types[i] != SUP_TEMPORARY)
            start[k++] = i;
    }
    *nstart = k;
    return 0;
}

int sup_plan_restart(sup_strategy strategy, const sup_restart_type *types, size_t n,
                     size_t dead, size_t *stop, size_t *nstop, size_t *start,
                     size_t *nstart)
{
    if (types == NULL || stop == NULL || nstop == NULL || start == NULL || nstart == NULL)
        return -EINVAL;
    if (n == 0 || dead >= n || !valid_type(types[dead]) || types[dead] == SUP_TEMPORARY)
        return -EINVAL;
    switch (strategy) {
    case SUP_ONE_FOR_ONE:
    case SUP_SIMPLE_ONE_FOR_ONE:
        *nstop = 0;
        start[0] = dead;
        *nstart = 1;
        return 0;
    case SUP_ONE_FOR_ALL:
        return plan_group(types, n, 0, dead, stop, nstop, start, nstart);
    case SUP_REST_FOR_ONE:
        return plan_group(types, n, dead, dead, stop, nstop, start, nstart);
    default:
        return -EINVAL;
    }
}

int sup_intensity_init(sup_intensity *it, int intensity, int period_s)
{
    if (it == NULL || intensity < 0 || intensity > SUP_INTENSITY_MAX || period_s < 1)
        return -EINVAL;
    it->intensity = intensity;
    it->period_ms = (int64_t)period_s * 1000;
    it->head = 0;
    it->count = 0;
    return 0;
}

/*
 * The ring holds the last `intensity` restart times, oldest at `head` once it is
 * full. This restart is one too many exactly when all of those earlier restarts
 * are still inside the period, and since times never go backwards that holds
 * when the oldest of them is.
 */
int sup_intensity_add(sup_intensity *it, int64_t now_ms)
{
    assert(it != NULL);
    if (it->intensity == 0)
        return 1;
    int exceeded = it->count == it->intensity && now_ms - it->times[it->head] <= it->period_ms;
    it->times[it->head] = now_ms;
    it->head = (it->head + 1) % it->intensity;
    if (it->count < it->intensity)
        it->count++;
    return exceeded;
}

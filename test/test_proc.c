/*
 * Unit tests of cnode/proc.h on a node with no connections: names, pids, local
 * links and exit signals by Erlang's rules, and the local run queue (cn_send to
 * a local pid). The processes are tiny cn_proc_ops that record what they get.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cnode/error.h"
#include "cnode/proc.h"

#define MAX_KEPT 32
#define MAX_RECS 8

/* What one test process has seen. */
typedef struct rec {
    cn_proc *p;                 /* valid only while the process lives */
    erlang_pid pid;
    long total;                 /* messages received */
    int kept;                   /* the first MAX_KEPT are kept */
    char msg[MAX_KEPT][256];
    size_t msg_len[MAX_KEPT];
    int msg_turn[MAX_KEPT];     /* the loop turn that delivered it */
    int exits;                  /* calls of ops->exiting */
    cn_exit_cause cause;
    char reason[256];           /* the exiting reason, printed */
    int depth;                  /* > 0 while inside ops->message */
    int reentered;              /* a message arrived while one was being handled */
    /* Relay: on an integer N > 0, send N - 1 to `peer` (possibly itself). */
    struct rec *peer;
    int seen_during_send;       /* the peer received during our cn_send */
    long expect;                /* the next value a relay expects, or -1 */
    long step;
    int out_of_order;
} rec;

typedef struct fx {
    uv_loop_t loop;
    cn_node *node;
    rec recs[MAX_RECS];
    int nrecs;
} fx;

static int turn;    /* counts loop turns run by run() */

/* Prints a versioned term, without spaces, into out. */
static void print_term(const char *buf, size_t len, char *out, size_t outlen)
{
    int i = 0, ver;
    char *text = NULL;
    out[0] = '\0';
    if (len < 2 || ei_decode_version(buf, &i, &ver) < 0 || ei_s_print_term(&text, buf, &i) < 0) {
        free(text);
        return;
    }
    size_t w = 0;
    for (const char *r = text; *r && w + 1 < outlen; r++)
        if (*r != ' ')
            out[w++] = *r;
    out[w] = '\0';
    free(text);
}

static void on_message(cn_proc *p, const char *buf, size_t len)
{
    rec *r = cn_proc_data(p);
    if (r->depth > 0)
        r->reentered = 1;
    r->depth++;
    if (r->kept < MAX_KEPT) {
        assert_true(len <= sizeof r->msg[0]);
        memcpy(r->msg[r->kept], buf, len);
        r->msg_len[r->kept] = len;
        r->msg_turn[r->kept] = turn;
        r->kept++;
    }
    r->total++;
    long n;
    int i = 0, ver;
    if (r->peer && ei_decode_version(buf, &i, &ver) == 0 && ei_decode_long(buf, &i, &n) == 0) {
        if (r->expect >= 0 && n != r->expect)
            r->out_of_order = 1;
        r->expect = n - r->step;
        if (n > 0) {
            char out[32];
            int o = 0;
            ei_encode_version(out, &o);
            ei_encode_long(out, &o, n - 1);
            long before = r->peer->total;
            assert_int_equal(cn_send(p, &r->peer->pid, out, (size_t)o), 0);
            if (r->peer->total != before)
                r->seen_during_send = 1;
        }
    }
    r->depth--;
}

static void on_exiting(cn_proc *p, cn_exit_cause cause, const char *reason, size_t len)
{
    rec *r = cn_proc_data(p);
    r->exits++;
    r->cause = cause;
    print_term(reason, len, r->reason, sizeof r->reason);
}

static const cn_proc_ops rec_ops = {on_message, on_exiting};

static rec *spawn(fx *f)
{
    assert_true(f->nrecs < MAX_RECS);
    rec *r = &f->recs[f->nrecs++];
    r->expect = -1;
    r->step = 1;
    r->p = cn_proc_spawn(f->node, &rec_ops, r);
    assert_non_null(r->p);
    cn_proc_pid(r->p, &r->pid);
    return r;
}

/* Is the process still alive? Safe after its struct was freed: looks up by pid. */
static int alive(fx *f, const rec *r)
{
    return cn_proc_by_pid(f->node, &r->pid) != NULL;
}

static void run(fx *f)
{
    for (int i = 0; i < 8; i++) {
        turn++;
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
}

static size_t atom_reason(char *buf, const char *atom)
{
    return cn_term_atom(buf, atom);
}

/* {boom, 42}, with version byte. */
static size_t tuple_reason(char *buf)
{
    int i = 0;
    ei_encode_version(buf, &i);
    ei_encode_tuple_header(buf, &i, 2);
    ei_encode_atom(buf, &i, "boom");
    ei_encode_long(buf, &i, 42);
    return (size_t)i;
}

static size_t long_term(char *buf, long v)
{
    int i = 0;
    ei_encode_version(buf, &i);
    ei_encode_long(buf, &i, v);
    return (size_t)i;
}

static long msg_long(const rec *r, int k)
{
    long v = 0;
    int i = 0, ver;
    assert_true(k < r->kept);
    assert_int_equal(ei_decode_version(r->msg[k], &i, &ver), 0);
    assert_int_equal(ei_decode_long(r->msg[k], &i, &v), 0);
    assert_int_equal((size_t)i, r->msg_len[k]);
    return v;
}

/* Asserts message k of r is {'EXIT', From, Reason} with Reason printed as `reason`. */
static void assert_exit_msg(const rec *r, int k, const erlang_pid *from, const char *reason)
{
    assert_true(k < r->kept);
    const char *b = r->msg[k];
    int i = 0, ver, arity;
    char atom[MAXATOMLEN_UTF8];
    erlang_pid pid;
    assert_int_equal(ei_decode_version(b, &i, &ver), 0);
    assert_int_equal(ei_decode_tuple_header(b, &i, &arity), 0);
    assert_int_equal(arity, 3);
    assert_int_equal(ei_decode_atom(b, &i, atom), 0);
    assert_string_equal(atom, "EXIT");
    assert_int_equal(ei_decode_pid(b, &i, &pid), 0);
    erlang_pid want = *from;
    assert_int_equal(ei_cmp_pids(&pid, &want), 0);
    char *text = NULL;
    int end = i;
    assert_int_equal(ei_skip_term(b, &end), 0);
    assert_int_equal((size_t)end, r->msg_len[k]);
    assert_true(ei_s_print_term(&text, b, &i) >= 0);
    char flat[256];
    size_t w = 0;
    for (const char *c = text; *c && w + 1 < sizeof flat; c++)
        if (*c != ' ')
            flat[w++] = *c;
    flat[w] = '\0';
    free(text);
    assert_string_equal(flat, reason);
}

static void link_procs(rec *a, rec *b)
{
    assert_int_equal(cn_proc_link(a->p, &b->pid), 0);
}

static unsigned links(fx *f)
{
    cn_node_stats st;
    cn_node_get_stats(f->node, &st);
    return st.links;
}

static unsigned processes(fx *f)
{
    cn_node_stats st;
    cn_node_get_stats(f->node, &st);
    return st.processes;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    if (f == NULL || uv_loop_init(&f->loop) != 0)
        return -1;
    cn_node_config cfg = {.name = "t@127.0.0.1", .cookie = "c", .no_epmd = 1};
    if (cn_node_new(&f->loop, &cfg, &f->node) != 0)
        return -1;
    turn = 0;
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
    /* The node wants its processes gone before it closes. */
    for (int i = 0; i < f->nrecs; i++) {
        cn_proc *p = cn_proc_by_pid(f->node, &f->recs[i].pid);
        if (p)
            cn_proc_exit(p, NULL, 0);
    }
    cn_node_close(f->node, closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(cn_node_free(f->node), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* ---- Names and pids ---- */

static void spawn_register_whereis(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f);
    assert_int_equal(processes(f), 2);
    assert_int_not_equal(ei_cmp_pids(&a->pid, &b->pid), 0);
    assert_string_equal(a->pid.node, "t@127.0.0.1");
    assert_int_equal(a->pid.creation, cn_node_creation(f->node));
    assert_ptr_equal(cn_proc_node(a->p), f->node);
    assert_ptr_equal(cn_proc_data(a->p), a);
    assert_true(cn_proc_alive(a->p));

    assert_string_equal(cn_proc_name(a->p), "");
    assert_null(cn_proc_whereis(f->node, "alpha"));
    assert_int_equal(cn_proc_register(a->p, "alpha"), 0);
    assert_int_equal(cn_proc_register(b->p, "beta"), 0);
    assert_ptr_equal(cn_proc_whereis(f->node, "alpha"), a->p);
    assert_ptr_equal(cn_proc_whereis(f->node, "beta"), b->p);
    assert_string_equal(cn_proc_name(a->p), "alpha");
    assert_null(cn_proc_whereis(f->node, "alph"));
    assert_null(cn_proc_whereis(f->node, "alphaa"));

    int other;
    cn_proc_set_data(b->p, &other);
    assert_ptr_equal(cn_proc_data(b->p), &other);
    cn_proc_set_data(b->p, b);
}

static void taken_name_is_eexist(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f);
    assert_int_equal(cn_proc_register(a->p, "srv"), 0);
    assert_int_equal(cn_proc_register(b->p, "srv"), CN_EEXIST);
    assert_ptr_equal(cn_proc_whereis(f->node, "srv"), a->p);
    assert_string_equal(cn_proc_name(b->p), "");
    /* A process has one name, as in Erlang: a second one is refused and not registered. */
    assert_true(cn_proc_register(a->p, "other") < 0);
    assert_null(cn_proc_whereis(f->node, "other"));
    assert_string_equal(cn_proc_name(a->p), "srv");
}

static void bad_names_are_einval(void **state)
{
    fx *f = *state;
    rec *a = spawn(f);
    assert_int_equal(cn_proc_register(a->p, ""), -EINVAL);
    char too_long[300];
    memset(too_long, 'x', 256);
    too_long[256] = '\0';
    assert_int_equal(cn_proc_register(a->p, too_long), -EINVAL);
    assert_string_equal(cn_proc_name(a->p), "");
    assert_null(cn_proc_whereis(f->node, too_long));
    /* 255 characters is the longest atom, and a valid name. */
    too_long[255] = '\0';
    assert_int_equal(cn_proc_register(a->p, too_long), 0);
    assert_ptr_equal(cn_proc_whereis(f->node, too_long), a->p);
}

/* Names are atoms, and atoms are UTF-8 of up to 255 characters: 1020 bytes at most. */
static void utf8_names_up_to_255_characters(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f), *c = spawn(f);
    assert_int_equal(cn_proc_register(a->p, "\xE6\x97\xA5\xE6\x9C\xAC"), 0);
    assert_ptr_equal(cn_proc_whereis(f->node, "\xE6\x97\xA5\xE6\x9C\xAC"), a->p);
    static char smileys[4 * 256 + 1];
    for (int k = 0; k < 256; k++)
        memcpy(smileys + 4 * k, "\xF0\x9F\x98\x80", 4);
    smileys[4 * 256] = '\0';
    assert_int_equal(cn_proc_register(b->p, smileys), -EINVAL);
    smileys[4 * 255] = '\0';
    assert_int_equal(cn_proc_register(b->p, smileys), 0);
    assert_ptr_equal(cn_proc_whereis(f->node, smileys), b->p);
    assert_string_equal(cn_proc_name(b->p), smileys);
    /* Not UTF-8: no atom has this text (ei would have to take it for Latin-1). */
    assert_int_equal(cn_proc_register(c->p, "caf\xE9"), -EINVAL);
    assert_int_equal(cn_proc_register(c->p, "\xC0\x80"), -EINVAL);
    assert_string_equal(cn_proc_name(c->p), "");
}

static void name_is_released_at_exit(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f);
    assert_int_equal(cn_proc_register(a->p, "srv"), 0);
    cn_proc_exit(a->p, NULL, 0);
    /* At once, not at the end of the turn. */
    assert_null(cn_proc_whereis(f->node, "srv"));
    assert_false(cn_proc_alive(a->p));
    assert_int_equal(processes(f), 1);
    /* The struct stays valid until the turn ends; a dead process cannot take a name. */
    assert_true(cn_proc_register(a->p, "again") < 0);
    assert_null(cn_proc_whereis(f->node, "again"));
    assert_int_equal(cn_proc_register(b->p, "srv"), 0);
    run(f);
    assert_ptr_equal(cn_proc_whereis(f->node, "srv"), b->p);
    assert_int_equal(a->exits, 0); /* its own exit: ops->exiting does not run */
}

static void by_pid_live_dead_and_foreign(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f);
    assert_ptr_equal(cn_proc_by_pid(f->node, &a->pid), a->p);
    assert_ptr_equal(cn_proc_by_pid(f->node, &b->pid), b->p);

    erlang_pid other = a->pid;
    strcpy(other.node, "u@127.0.0.1");
    assert_null(cn_proc_by_pid(f->node, &other));
    other = a->pid;
    other.creation = a->pid.creation + 1;
    assert_null(cn_proc_by_pid(f->node, &other));
    other = a->pid;
    other.num = b->pid.num + 100;
    assert_null(cn_proc_by_pid(f->node, &other));

    cn_proc_exit(a->p, NULL, 0);
    assert_null(cn_proc_by_pid(f->node, &a->pid));
    run(f);
    assert_null(cn_proc_by_pid(f->node, &a->pid));
    /* A new process does not take the dead one's pid. */
    rec *c = spawn(f);
    assert_int_not_equal(ei_cmp_pids(&c->pid, &a->pid), 0);
    assert_ptr_equal(cn_proc_by_pid(f->node, &b->pid), b->p);
}

/* ---- Links and exit signals ---- */

static void link_kills_both_ways_with_the_same_reason(void **state)
{
    fx *f = *state;
    char reason[64];
    size_t n = tuple_reason(reason);

    /* a linked to b; a dies; b dies with a's reason. */
    rec *a = spawn(f), *b = spawn(f);
    link_procs(a, b);
    assert_int_equal(links(f), 2);
    cn_proc_exit(a->p, reason, n);
    run(f);
    assert_false(alive(f, b));
    assert_int_equal(b->exits, 1);
    assert_int_equal(b->cause, CN_EXIT_SIGNAL);
    assert_string_equal(b->reason, "{boom,42}");

    /* The other way: c linked to d; d dies; c dies. */
    rec *c = spawn(f), *d = spawn(f);
    link_procs(c, d);
    cn_proc_exit(d->p, reason, n);
    run(f);
    assert_false(alive(f, c));
    assert_int_equal(c->exits, 1);
    assert_string_equal(c->reason, "{boom,42}");
    assert_int_equal(links(f), 0);
    assert_int_equal(processes(f), 0);
}

static void death_travels_along_a_chain(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f), *c = spawn(f), *other = spawn(f);
    link_procs(a, b);
    link_procs(c, b);
    char reason[64];
    size_t n = atom_reason(reason, "boom");
    cn_proc_exit(a->p, reason, n);
    run(f);
    assert_false(alive(f, b));
    assert_false(alive(f, c));
    assert_string_equal(b->reason, "boom");
    assert_string_equal(c->reason, "boom");
    assert_true(alive(f, other));
    assert_int_equal(other->exits, 0);
    assert_int_equal(links(f), 0);
}

static void normal_exit_does_not_kill_linked(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f);
    link_procs(a, b);
    cn_proc_exit(a->p, NULL, 0);
    run(f);
    assert_true(alive(f, b));
    assert_int_equal(b->exits, 0);
    assert_int_equal(b->total, 0);
    /* The link went with a. */
    assert_int_equal(links(f), 0);

    /* 'normal' spelled out is the same. */
    rec *c = spawn(f);
    link_procs(c, b);
    char reason[16];
    size_t n = atom_reason(reason, "normal");
    cn_proc_exit(c->p, reason, n);
    run(f);
    assert_true(alive(f, b));
    assert_int_equal(b->exits, 0);
}

static void trap_exit_makes_exit_messages(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f), *c = spawn(f);
    cn_proc_trap_exit(b->p, 1);
    link_procs(a, b);
    link_procs(c, b);
    char reason[64];
    size_t n = tuple_reason(reason);
    cn_proc_exit(a->p, reason, n);
    run(f);
    assert_true(alive(f, b));
    assert_int_equal(b->exits, 0);
    assert_int_equal(b->kept, 1);
    assert_exit_msg(b, 0, &a->pid, "{boom,42}");

    /* A trapping process sees 'normal' too. */
    cn_proc_exit(c->p, NULL, 0);
    run(f);
    assert_true(alive(f, b));
    assert_int_equal(b->kept, 2);
    assert_exit_msg(b, 1, &c->pid, "normal");

    /* Trapping off again: the next abnormal signal kills. */
    rec *d = spawn(f);
    link_procs(d, b);
    cn_proc_trap_exit(b->p, 0);
    cn_proc_exit(d->p, reason, n);
    run(f);
    assert_false(alive(f, b));
    assert_int_equal(b->kept, 2);
    assert_string_equal(b->reason, "{boom,42}");
}

static void message_then_exit_arrive_in_order(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f);
    cn_proc_trap_exit(b->p, 1);
    link_procs(a, b);
    char m[32], reason[32];
    size_t mn = long_term(m, 7);
    assert_int_equal(cn_send(a->p, &b->pid, m, mn), 0);
    size_t rn = atom_reason(reason, "bye");
    cn_proc_exit(a->p, reason, rn);
    run(f);
    assert_int_equal(b->kept, 2);
    assert_int_equal(msg_long(b, 0), 7);
    assert_exit_msg(b, 1, &a->pid, "bye");
}

static void exit2_follows_erlang_rules(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f), *t = spawn(f);
    cn_proc_trap_exit(t->p, 1);
    char normal[16], boom[16];
    size_t nn = atom_reason(normal, "normal"), bn = atom_reason(boom, "boom");

    /* exit(B, normal) does nothing to a process that does not trap. */
    assert_int_equal(cn_proc_exit_pid(a->p, &b->pid, normal, nn), 0);
    run(f);
    assert_true(alive(f, b));
    assert_int_equal(b->total, 0);

    /* A trapping one gets both as messages. */
    assert_int_equal(cn_proc_exit_pid(a->p, &t->pid, normal, nn), 0);
    assert_int_equal(cn_proc_exit_pid(a->p, &t->pid, boom, bn), 0);
    run(f);
    assert_true(alive(f, t));
    assert_int_equal(t->kept, 2);
    assert_exit_msg(t, 0, &a->pid, "normal");
    assert_exit_msg(t, 1, &a->pid, "boom");

    /* Any other reason kills, with that reason; the sender lives on (no link). */
    assert_int_equal(cn_proc_exit_pid(a->p, &b->pid, boom, bn), 0);
    assert_true(alive(f, b)); /* a signal, not a call: it arrives on a later turn */
    run(f);
    assert_false(alive(f, b));
    assert_int_equal(b->cause, CN_EXIT_SIGNAL);
    assert_string_equal(b->reason, "boom");
    assert_true(alive(f, a));
}

static void exit2_kill_is_untrappable_and_links_get_killed(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f), *plain = spawn(f), *trapper = spawn(f);
    cn_proc_trap_exit(b->p, 1);
    cn_proc_trap_exit(trapper->p, 1);
    link_procs(b, plain);
    link_procs(b, trapper);
    char kill[16];
    size_t kn = atom_reason(kill, "kill");
    assert_int_equal(cn_proc_exit_pid(a->p, &b->pid, kill, kn), 0);
    run(f);
    /* b traps exits, yet dies: kill is untrappable, and the reason becomes killed. */
    assert_false(alive(f, b));
    assert_int_equal(b->total, 0);
    assert_int_equal(b->exits, 1);
    assert_int_equal(b->cause, CN_EXIT_KILL);
    assert_string_equal(b->reason, "killed");
    /* Its links get 'killed', which is an ordinary reason. */
    assert_false(alive(f, plain));
    assert_int_equal(plain->cause, CN_EXIT_SIGNAL);
    assert_string_equal(plain->reason, "killed");
    assert_true(alive(f, trapper));
    assert_int_equal(trapper->kept, 1);
    assert_exit_msg(trapper, 0, &b->pid, "killed");
    assert_true(alive(f, a));
}

static void exiting_with_reason_kill_is_trappable_for_links(void **state)
{
    fx *f = *state;
    /* As in Erlang: only exit/2 with kill is untrappable; a link that died with
     * reason kill sends an ordinary signal whose reason is kill. */
    rec *a = spawn(f), *trapper = spawn(f), *plain = spawn(f);
    cn_proc_trap_exit(trapper->p, 1);
    link_procs(a, trapper);
    link_procs(a, plain);
    char kill[16];
    size_t kn = atom_reason(kill, "kill");
    cn_proc_exit(a->p, kill, kn);
    run(f);
    assert_true(alive(f, trapper));
    assert_int_equal(trapper->kept, 1);
    assert_exit_msg(trapper, 0, &a->pid, "kill");
    assert_false(alive(f, plain));
    assert_int_equal(plain->cause, CN_EXIT_SIGNAL);
    assert_string_equal(plain->reason, "kill");
}

static void exit_now_is_synchronous(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f), *c = spawn(f), *linked = spawn(f);
    assert_int_equal(cn_proc_register(b->p, "b"), 0);
    link_procs(b, linked);
    char shutdown[16], normal[16], kill[16];
    size_t sn = atom_reason(shutdown, "shutdown"), nn = atom_reason(normal, "normal");
    size_t kn = atom_reason(kill, "kill");

    /* 'normal' does not end a process that does not trap. */
    cn_proc_exit_now(a->p, b->p, normal, nn);
    assert_true(cn_proc_alive(b->p));
    assert_int_equal(b->exits, 0);

    cn_proc_exit_now(a->p, b->p, shutdown, sn);
    /* Done when the call returns, without running the loop. */
    assert_int_equal(b->exits, 1);
    assert_int_equal(b->cause, CN_EXIT_SIGNAL);
    assert_string_equal(b->reason, "shutdown");
    assert_false(cn_proc_alive(b->p));
    assert_null(cn_proc_whereis(f->node, "b"));
    assert_null(cn_proc_by_pid(f->node, &b->pid));

    /* kill reaches a trapping process at once too. */
    cn_proc_trap_exit(c->p, 1);
    cn_proc_exit_now(a->p, c->p, kill, kn);
    assert_int_equal(c->exits, 1);
    assert_int_equal(c->cause, CN_EXIT_KILL);
    assert_string_equal(c->reason, "killed");
    assert_false(cn_proc_alive(c->p));
    assert_int_equal(c->total, 0);

    /* b's link learns on the loop, as any exit signal. */
    run(f);
    assert_false(alive(f, linked));
    assert_string_equal(linked->reason, "shutdown");
    assert_true(alive(f, a));
}

static void exit_now_to_a_trapping_process_is_a_message(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *t = spawn(f);
    cn_proc_trap_exit(t->p, 1);
    char shutdown[16];
    size_t sn = atom_reason(shutdown, "shutdown");
    cn_proc_exit_now(a->p, t->p, shutdown, sn);
    run(f);
    assert_true(alive(f, t));
    assert_int_equal(t->exits, 0);
    assert_int_equal(t->kept, 1);
    assert_exit_msg(t, 0, &a->pid, "shutdown");
}

static void unlink_stops_propagation(void **state)
{
    fx *f = *state;
    char boom[16];
    size_t bn = atom_reason(boom, "boom");

    /* Unlinked by the side that linked. */
    rec *a = spawn(f), *b = spawn(f);
    link_procs(a, b);
    assert_int_equal(cn_proc_unlink(a->p, &b->pid), 0);
    assert_int_equal(links(f), 0);
    cn_proc_exit(a->p, boom, bn);
    run(f);
    assert_true(alive(f, b));
    assert_int_equal(b->exits, 0);

    /* Unlinked by the other side. */
    rec *c = spawn(f), *d = spawn(f);
    link_procs(c, d);
    assert_int_equal(cn_proc_unlink(d->p, &c->pid), 0);
    assert_int_equal(links(f), 0);
    cn_proc_exit(d->p, boom, bn);
    run(f);
    assert_true(alive(f, c));
    assert_int_equal(c->exits, 0);

    /* Unlinking what is not linked is harmless. */
    assert_int_equal(cn_proc_unlink(b->p, &c->pid), 0);
    assert_true(alive(f, b));
    assert_true(alive(f, c));
}

/*
 * erlang:unlink/1: "Once unlink(Id) has returned, it is guaranteed that the link
 * between the caller and the entity referred to by Id has no effect on the caller
 * in the future". Here a died with the signal still queued when b unlinks.
 */
static void unlink_wins_over_a_signal_not_yet_delivered(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f);
    link_procs(a, b);
    char boom[16];
    size_t bn = atom_reason(boom, "boom");
    cn_proc_exit(a->p, boom, bn);
    assert_int_equal(cn_proc_unlink(b->p, &a->pid), 0);
    run(f);
    assert_true(alive(f, b));
    assert_int_equal(b->exits, 0);
}

static void link_to_a_dead_pid_is_noproc(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *dead = spawn(f);
    erlang_pid gone = dead->pid;
    cn_proc_exit(dead->p, NULL, 0);
    run(f);
    cn_proc_trap_exit(a->p, 1);
    assert_int_equal(cn_proc_link(a->p, &gone), CN_ENOPROC);
    run(f);
    assert_true(alive(f, a));
    assert_int_equal(a->kept, 1);
    assert_exit_msg(a, 0, &gone, "noproc");
    assert_int_equal(links(f), 0);
}

static void linking_twice_is_one_link(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f);
    link_procs(a, b);
    link_procs(a, b);
    link_procs(b, a);
    assert_int_equal(links(f), 2);
    /* Linking to oneself does nothing. */
    assert_int_equal(cn_proc_link(a->p, &a->pid), 0);
    assert_int_equal(links(f), 2);
    /* One unlink removes it. */
    assert_int_equal(cn_proc_unlink(a->p, &b->pid), 0);
    assert_int_equal(links(f), 0);
}

/* ---- Local messages ---- */

static void local_messages_arrive_in_order_on_a_later_turn(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f);
    char m[32];
    for (long v = 1; v <= 5; v++) {
        size_t n = long_term(m, v);
        assert_int_equal(cn_send(a->p, &b->pid, m, n), 0);
    }
    /* Queued, not delivered inside cn_send. */
    assert_int_equal(b->total, 0);
    run(f);
    assert_int_equal(b->total, 5);
    for (int k = 0; k < 5; k++) {
        assert_int_equal(msg_long(b, k), k + 1);
        assert_true(b->msg_turn[k] >= 1);
    }
    assert_int_equal(a->total, 0);
}

static void sends_inside_callbacks_are_not_reentrant(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f), *self = spawn(f);
    a->peer = b;
    b->peer = a;
    a->step = b->step = 2;
    self->peer = self;
    char m[32];
    size_t n = long_term(m, 20);
    assert_int_equal(cn_send(b->p, &a->pid, m, n), 0);
    n = long_term(m, 6);
    assert_int_equal(cn_send(self->p, &self->pid, m, n), 0);
    for (int i = 0; i < 10 && (a->total + b->total < 21 || self->total < 7); i++)
        run(f);
    /* a got 20, 18 .. 0; b got 19 .. 1; self got 6 .. 0: all, in order. */
    assert_int_equal(a->total, 11);
    assert_int_equal(b->total, 10);
    assert_int_equal(self->total, 7);
    assert_int_equal(msg_long(a, 0), 20);
    assert_int_equal(msg_long(a, 10), 0);
    assert_int_equal(msg_long(b, 0), 19);
    assert_int_equal(msg_long(self, 6), 0);
    assert_false(a->out_of_order);
    assert_false(b->out_of_order);
    assert_false(self->out_of_order);
    /* Nothing was delivered inside a cn_send or inside another message. */
    assert_false(a->seen_during_send);
    assert_false(b->seen_during_send);
    assert_false(self->seen_during_send);
    assert_false(a->reentered);
    assert_false(b->reentered);
    assert_false(self->reentered);
}

static void a_busy_run_queue_yields_to_the_loop(void **state)
{
    fx *f = *state;
    const long rounds = 100000;
    rec *a = spawn(f), *b = spawn(f);
    a->peer = b;
    b->peer = a;
    a->step = b->step = 2;
    char m[32];
    size_t n = long_term(m, rounds);
    assert_int_equal(cn_send(b->p, &a->pid, m, n), 0);
    turn++;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    /* One turn does some of the work, not all of it: I/O gets its turn. */
    assert_true(a->total > 0);
    assert_true(a->total + b->total < rounds + 1);
    for (int i = 0; i < 100000 && a->total + b->total < rounds + 1; i++) {
        turn++;
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(a->total + b->total, rounds + 1);
    assert_false(a->out_of_order);
    assert_false(b->out_of_order);
    assert_false(a->reentered);
    assert_false(b->reentered);
}

static void sends_to_dead_or_foreign_local_pids(void **state)
{
    fx *f = *state;
    rec *a = spawn(f), *b = spawn(f);
    char m[32];
    size_t n = long_term(m, 1);
    /* Queued for b, which dies before the turn: dropped, as in Erlang. */
    assert_int_equal(cn_send(a->p, &b->pid, m, n), 0);
    cn_proc_exit(b->p, NULL, 0);
    run(f);
    assert_int_equal(b->total, 0);
    /* A dead pid: dropped silently. */
    assert_int_equal(cn_send(a->p, &b->pid, m, n), 0);
    /* A pid of an earlier incarnation of this node names no process here. */
    erlang_pid old = a->pid;
    old.creation = a->pid.creation + 1;
    assert_int_equal(cn_send(a->p, &old, m, n), CN_ENOPROC);
    run(f);
    assert_int_equal(a->total, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(spawn_register_whereis, setup, teardown),
        cmocka_unit_test_setup_teardown(taken_name_is_eexist, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_names_are_einval, setup, teardown),
        cmocka_unit_test_setup_teardown(utf8_names_up_to_255_characters, setup, teardown),
        cmocka_unit_test_setup_teardown(name_is_released_at_exit, setup, teardown),
        cmocka_unit_test_setup_teardown(by_pid_live_dead_and_foreign, setup, teardown),
        cmocka_unit_test_setup_teardown(link_kills_both_ways_with_the_same_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(death_travels_along_a_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(normal_exit_does_not_kill_linked, setup, teardown),
        cmocka_unit_test_setup_teardown(trap_exit_makes_exit_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(message_then_exit_arrive_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(exit2_follows_erlang_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(exit2_kill_is_untrappable_and_links_get_killed, setup, teardown),
        cmocka_unit_test_setup_teardown(exiting_with_reason_kill_is_trappable_for_links, setup, teardown),
        cmocka_unit_test_setup_teardown(exit_now_is_synchronous, setup, teardown),
        cmocka_unit_test_setup_teardown(exit_now_to_a_trapping_process_is_a_message, setup, teardown),
        cmocka_unit_test_setup_teardown(unlink_stops_propagation, setup, teardown),
        cmocka_unit_test_setup_teardown(unlink_wins_over_a_signal_not_yet_delivered, setup, teardown),
        cmocka_unit_test_setup_teardown(link_to_a_dead_pid_is_noproc, setup, teardown),
        cmocka_unit_test_setup_teardown(linking_twice_is_one_link, setup, teardown),
        cmocka_unit_test_setup_teardown(local_messages_arrive_in_order_on_a_later_turn, setup, teardown),
        cmocka_unit_test_setup_teardown(sends_inside_callbacks_are_not_reentrant, setup, teardown),
        cmocka_unit_test_setup_teardown(a_busy_run_queue_yields_to_the_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(sends_to_dead_or_foreign_local_pids, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

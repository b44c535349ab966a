#include "test/fake_peer.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cnode/protocol.h"

static int fake_write(cn_conn *c, const char *data, size_t len)
{
    fake_peer *fp = cn_conn_transport_data(c);
    fp->writes++;
    if (len > fp->largest_write)
        fp->largest_write = len;
    cn_buf_append(&fp->out, data, len);
    cn_conn_written(c, 0);
    return 0;
}

static void fake_close(cn_conn *c)
{
    fake_peer *fp = cn_conn_transport_data(c);
    fp->closed = 1;
    fp->conn = NULL;
    cn_conn_closed(c);
}

static const cn_transport fake_transport = {fake_write, fake_close, 0};

static uint32_t fixed_random(void *ctx)
{
    (void)ctx;
    return 0x12345678u;
}

void fp_run(fake_peer *fp)
{
    for (int i = 0; i < 4; i++)
        uv_run(&fp->loop, UV_RUN_NOWAIT);
}

int fp_setup(fake_peer *fp, const char *node_cookie, const char *peer_cookie, uint64_t peer_flags)
{
    cn_node_config cfg = {.cookie = node_cookie};
    return fp_setup_with(fp, &cfg, peer_cookie, peer_flags);
}

int fp_setup_with(fake_peer *fp, const cn_node_config *node_cfg, const char *peer_cookie, uint64_t peer_flags)
{
    memset(fp, 0, sizeof *fp);
    cn_buf_init(&fp->out);
    fp->flags = peer_flags;
    assert_int_equal(uv_loop_init(&fp->loop), 0);
    cn_node_config cfg = *node_cfg;
    cfg.name = FP_NODE;
    cfg.no_epmd = 1;
    assert_int_equal(cn_node_new(&fp->loop, &cfg, &fp->node), 0);
    fp->conn = cn_conn_new(fp->node, &fake_transport, 0);
    assert_non_null(fp->conn);
    cn_conn_set_transport_data(fp->conn, fp);
    cn_conn_start_handshake(fp->conn, NULL);

    cn_hs_config hc = {
        .role = CN_HS_CONNECT,
        .our_name = FP_PEER,
        .cookie = peer_cookie,
        .our_flags = peer_flags,
        .our_creation = 777,
        .random32 = fixed_random,
        .expect_peer = FP_NODE,
    };
    cn_hs_init(&fp->hs, &hc);
    cn_buf tx;
    cn_buf_init(&tx);
    assert_int_equal(cn_hs_start(&fp->hs, &tx), 0);
    int rc = 0;
    for (int round = 0; round < 10 && !cn_hs_done(&fp->hs); round++) {
        if (tx.len && fp->conn) {
            cn_conn_feed(fp->conn, tx.data, tx.len);
            cn_buf_reset(&tx);
        }
        fp_run(fp);
        if (fp->out.len) {
            rc = cn_hs_feed(&fp->hs, fp->out.data, fp->out.len, &tx);
            if (rc < 0)
                break;
            cn_buf_consume(&fp->out, (size_t)rc);
        }
        if (fp->closed)
            break;
    }
    /* The peer's last message (the challenge reply) completes the node's side. */
    if (rc >= 0 && tx.len && fp->conn) {
        cn_conn_feed(fp->conn, tx.data, tx.len);
        fp_run(fp);
    }
    cn_buf_free(&tx);
    if (rc < 0)
        return rc;
    if (fp->closed || !cn_hs_done(&fp->hs))
        return -1;
    return 0;
}

static void node_closed(cn_node *node)
{
    (void)node;
}

void fp_teardown(fake_peer *fp)
{
    cn_node_close(fp->node, node_closed);
    uv_run(&fp->loop, UV_RUN_DEFAULT);
    assert_int_equal(cn_node_free(fp->node), 0);
    assert_int_equal(uv_loop_close(&fp->loop), 0);
    cn_buf_free(&fp->out);
}

void fp_frame(cn_buf *out, const ei_x_buff *ctl, const ei_x_buff *msg)
{
    uint32_t len = 1 + (uint32_t)ctl->index + (msg ? (uint32_t)msg->index : 0);
    cn_buf_put_u32(out, len);
    cn_buf_put_u8(out, CN_PASS_THROUGH);
    cn_buf_append(out, ctl->buff, (size_t)ctl->index);
    if (msg)
        cn_buf_append(out, msg->buff, (size_t)msg->index);
}

void fp_send(fake_peer *fp, const ei_x_buff *ctl, const ei_x_buff *msg)
{
    cn_buf b;
    cn_buf_init(&b);
    fp_frame(&b, ctl, msg);
    if (fp->conn)
        cn_conn_feed(fp->conn, b.data, b.len);
    cn_buf_free(&b);
    fp_run(fp);
}

int fp_next(fake_peer *fp, fp_frame_view *v)
{
    memset(v, 0, sizeof *v);
    while (fp->out.len >= 4) {
        uint32_t n = cn_get_u32(fp->out.data);
        if (fp->out.len < 4 + (size_t)n)
            return -1;
        if (n == 0) {
            cn_buf_consume(&fp->out, 4);
            continue;
        }
        cn_buf_init(&v->storage);
        cn_buf_append(&v->storage, fp->out.data + 4, n);
        cn_buf_consume(&fp->out, 4 + (size_t)n);
        v->buf = v->storage.data;
        v->len = n;
        int i = 1, ver, arity;
        assert_int_equal((unsigned char)v->buf[0], CN_PASS_THROUGH);
        assert_int_equal(ei_decode_version(v->buf, &i, &ver), 0);
        assert_int_equal(ei_decode_tuple_header(v->buf, &i, &arity), 0);
        assert_int_equal(ei_decode_long(v->buf, &i, &v->op), 0);
        v->ctl = i;
        int e = 1 + 1;
        e = 1;
        ei_decode_version(v->buf, &e, &ver);
        ei_skip_term(v->buf, &e);
        v->msg = (size_t)e < n ? e : -1;
        return 0;
    }
    return -1;
}

void fp_view_free(fp_frame_view *v)
{
    cn_buf_free(&v->storage);
}

void fp_pid(erlang_pid *pid, unsigned num)
{
    memset(pid, 0, sizeof *pid);
    strcpy(pid->node, FP_PEER);
    pid->num = num;
    pid->serial = 0;
    pid->creation = 777;
}

void fp_ref(erlang_ref *ref, unsigned a, unsigned b, unsigned c)
{
    memset(ref, 0, sizeof *ref);
    strcpy(ref->node, FP_PEER);
    ref->len = 3;
    ref->n[0] = a;
    ref->n[1] = b;
    ref->n[2] = c;
    ref->creation = 777;
}

void fp_ctl_reg_send(ei_x_buff *x, const erlang_pid *from, const char *name)
{
    ei_x_new_with_version(x);
    ei_x_encode_tuple_header(x, 4);
    ei_x_encode_long(x, DOP_REG_SEND);
    ei_x_encode_pid(x, from);
    ei_x_encode_atom(x, "");
    /* A name is UTF-8 (ei_x_encode_atom would read it as Latin-1 and cut it at 255 bytes). */
    ei_x_encode_atom_as(x, name, ERLANG_UTF8, ERLANG_UTF8);
}

void fp_send_monitor(fake_peer *fp, int op, const erlang_pid *from, const char *name, const erlang_pid *to,
                     const erlang_ref *ref)
{
    ei_x_buff ctl;
    fp_ctl_monitor(&ctl, op, from, name, to, ref);
    fp_send(fp, &ctl, NULL);
    ei_x_free(&ctl);
}

void fp_ctl_monitor(ei_x_buff *x, int op, const erlang_pid *from, const char *name, const erlang_pid *to,
                    const erlang_ref *ref)
{
    ei_x_new_with_version(x);
    ei_x_encode_tuple_header(x, 4);
    ei_x_encode_long(x, op);
    ei_x_encode_pid(x, from);
    if (name)
        ei_x_encode_atom(x, name);
    else
        ei_x_encode_pid(x, to);
    ei_x_encode_ref(x, ref);
}

void fp_msg_call(ei_x_buff *x, const erlang_pid *from, const erlang_ref *ref, int alias, const char *req)
{
    ei_x_new_with_version(x);
    ei_x_encode_tuple_header(x, 3);
    ei_x_encode_atom(x, "$gen_call");
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_pid(x, from);
    if (alias) {
        ei_x_encode_list_header(x, 1);
        ei_x_encode_atom(x, "alias");
        ei_x_encode_ref(x, ref);
    } else {
        ei_x_encode_ref(x, ref);
    }
    ei_x_encode_atom(x, req);
}

void fp_msg_cast(ei_x_buff *x, const char *req)
{
    ei_x_new_with_version(x);
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "$gen_cast");
    ei_x_encode_atom(x, req);
}

void fp_cast(fake_peer *fp, unsigned from, const char *name, const char *req)
{
    erlang_pid pid;
    fp_pid(&pid, from);
    ei_x_buff ctl, msg;
    fp_ctl_reg_send(&ctl, &pid, name);
    fp_msg_cast(&msg, req);
    fp_send(fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
}

void fp_msg_request(ei_x_buff *x, const char *label, const erlang_pid *from, const erlang_ref *ref,
                    const char *req, size_t req_len)
{
    ei_x_new_with_version(x);
    ei_x_encode_tuple_header(x, 3);
    ei_x_encode_atom(x, label);
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_pid(x, from);
    ei_x_encode_list_header(x, 1);
    ei_x_encode_atom(x, "alias");
    ei_x_encode_ref(x, ref);
    ei_x_append_buf(x, req, (int)req_len);
}

void fp_request(fake_peer *fp, const char *label, unsigned from, unsigned refn, const char *name,
                const char *req, size_t req_len)
{
    erlang_pid pid;
    erlang_ref ref;
    fp_pid(&pid, from);
    fp_ref(&ref, refn, 0, 0);
    ei_x_buff ctl, msg;
    fp_ctl_reg_send(&ctl, &pid, name);
    fp_msg_request(&msg, label, &pid, &ref, req, req_len);
    fp_send(fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
}

int fp_next_reply(fake_peer *fp, fp_frame_view *v, int *index)
{
    if (fp_next(fp, v) != 0)
        return -1;
    assert_int_equal(v->op, DOP_ALIAS_SEND);
    assert_true(v->msg > 0);
    int i = v->msg, ver, arity;
    assert_int_equal(ei_decode_version(v->buf, &i, &ver), 0);
    assert_int_equal(ei_decode_tuple_header(v->buf, &i, &arity), 0);
    assert_int_equal(arity, 2);
    assert_int_equal(ei_skip_term(v->buf, &i), 0);
    *index = i;
    return 0;
}

char *fp_next_reply_text(fake_peer *fp)
{
    fp_frame_view v;
    int i;
    if (fp_next_reply(fp, &v, &i) != 0)
        return NULL;
    char *text = NULL;
    assert_true(ei_s_print_term(&text, v.buf, &i) >= 0);
    fp_view_free(&v);
    char *w = text;
    for (const char *r = text; *r; r++)
        if (*r != ' ')
            *w++ = *r;
    *w = '\0';
    return text;
}

int fp_answer_rex(fake_peer *fp, const char *mod, const char *fun, const char *answer, size_t len)
{
    fp_frame_view v;
    if (fp_next(fp, &v) != 0)
        return -1;
    assert_int_equal(v.op, DOP_REG_SEND);
    int i = v.ctl, ver, arity;
    erlang_pid from;
    char name[MAXATOMLEN_UTF8];
    assert_int_equal(ei_decode_pid(v.buf, &i, &from), 0);
    assert_int_equal(ei_skip_term(v.buf, &i), 0);
    assert_int_equal(ei_decode_atom(v.buf, &i, name), 0);
    assert_string_equal(name, "rex");
    /* {'$gen_call', {Pid, Tag}, {call, Mod, Fun, Args, user}} */
    i = v.msg;
    assert_int_equal(ei_decode_version(v.buf, &i, &ver), 0);
    assert_int_equal(ei_decode_tuple_header(v.buf, &i, &arity), 0);
    assert_int_equal(arity, 3);
    assert_int_equal(ei_decode_atom(v.buf, &i, name), 0);
    assert_string_equal(name, "$gen_call");
    erlang_pid caller;
    assert_int_equal(ei_decode_tuple_header(v.buf, &i, &arity), 0);
    assert_int_equal(ei_decode_pid(v.buf, &i, &caller), 0);
    int tag = i;
    assert_int_equal(ei_skip_term(v.buf, &i), 0);
    int tag_end = i;
    assert_int_equal(ei_decode_tuple_header(v.buf, &i, &arity), 0);
    assert_int_equal(arity, 5);
    assert_int_equal(ei_decode_atom(v.buf, &i, name), 0);
    assert_string_equal(name, "call");
    assert_int_equal(ei_decode_atom(v.buf, &i, name), 0);
    assert_string_equal(name, mod);
    assert_int_equal(ei_decode_atom(v.buf, &i, name), 0);
    assert_string_equal(name, fun);
    ei_x_buff ctl, msg;
    ei_x_new_with_version(&ctl);
    ei_x_encode_tuple_header(&ctl, 3);
    ei_x_encode_long(&ctl, DOP_SEND);
    ei_x_encode_atom(&ctl, "");
    ei_x_encode_pid(&ctl, &caller);
    ei_x_new_with_version(&msg);
    ei_x_encode_tuple_header(&msg, 2);
    ei_x_append_buf(&msg, v.buf + tag, tag_end - tag);
    ei_x_append_buf(&msg, answer, (int)len);
    fp_view_free(&v);
    fp_send(fp, &ctl, &msg);
    ei_x_free(&ctl);
    ei_x_free(&msg);
    return 0;
}

void fp_answer_stdlib(fake_peer *fp, const char *vsn)
{
    char answer[64];
    int n = 0;
    ei_encode_tuple_header(answer, &n, 2);
    ei_encode_atom(answer, &n, "ok");
    ei_encode_string(answer, &n, vsn);
    assert_int_equal(fp_answer_rex(fp, "application", "get_key", answer, (size_t)n), 0);
}

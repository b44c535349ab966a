/*
 * Node names and socket addresses (addr.h). libuv's uv_ip4_addr/uv_ip6_addr
 * parse literals (the IPv6 one with its "%scope") and uv_ip4_name/uv_ip6_name
 * print them; this file adds the node-name rules and the log format.
 */
#include "cnode/addr.h"

#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <uv.h>

int cn_name_split(const char *name, char *alive, size_t alive_size, char *host, size_t host_size)
{
    const char *at = name ? strchr(name, '@') : NULL;
    if (at == NULL || at == name || at[1] == '\0' || strchr(at + 1, '@') != NULL)
        return -EINVAL;
    size_t an = (size_t)(at - name), hn = strlen(at + 1);
    if (an >= alive_size || hn >= host_size)
        return -EINVAL;
    memcpy(alive, name, an);
    alive[an] = '\0';
    memcpy(host, at + 1, hn + 1);
    return 0;
}

int cn_addr_family(int family)
{
    if (family == 0 || family == AF_INET)
        return AF_INET;
    if (family == AF_INET6)
        return AF_INET6;
    return -EINVAL;
}

int cn_addr_literal(int family, const char *host, uint16_t port, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    int rc = -EINVAL;
    if (family == AF_INET)
        rc = uv_ip4_addr(host, port, (struct sockaddr_in *)out);
    else if (family == AF_INET6)
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)out);
    if (rc != 0) {
        memset(out, 0, sizeof *out);
        return -EINVAL;
    }
    return 0;
}

void cn_addr_loopback(int family, uint16_t port, struct sockaddr_storage *out)
{
    int rc = cn_addr_literal(family, family == AF_INET6 ? "::1" : "127.0.0.1", port, out);
    (void)rc; /* a literal of the right family cannot fail */
}

void cn_addr_any(int family, uint16_t port, struct sockaddr_storage *out)
{
    int rc = cn_addr_literal(family, family == AF_INET6 ? "::" : "0.0.0.0", port, out);
    (void)rc;
}

void cn_addr_set_port(struct sockaddr_storage *addr, uint16_t port)
{
    if (addr->ss_family == AF_INET)
        ((struct sockaddr_in *)addr)->sin_port = htons(port);
    else if (addr->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)addr)->sin6_port = htons(port);
}

uint16_t cn_addr_port(const struct sockaddr *addr)
{
    if (addr->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)addr)->sin_port);
    if (addr->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
    return 0;
}

/* "[addr%scope]:port" for an IPv6 address; the IPv4 form for an IPv4-mapped one. */
static void format6(const struct sockaddr_in6 *in6, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    uint16_t port = ntohs(in6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
        uv_inet_ntop(AF_INET, in6->sin6_addr.s6_addr + 12, ip, sizeof ip);
        snprintf(out, size, "%s:%u", ip, (unsigned)port);
        return;
    }
    uv_ip6_name(in6, ip, sizeof ip);
    char scope[IF_NAMESIZE + 2] = "";
    if (in6->sin6_scope_id != 0) {
        char ifname[IF_NAMESIZE];
        if (if_indextoname(in6->sin6_scope_id, ifname) != NULL)
            snprintf(scope, sizeof scope, "%%%s", ifname);
        else
            snprintf(scope, sizeof scope, "%%%u", (unsigned)in6->sin6_scope_id);
    }
    snprintf(out, size, "[%s%s]:%u", ip, scope, (unsigned)port);
}

void cn_addr_format(const struct sockaddr *addr, char *out, size_t size)
{
    if (size == 0)
        return;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        char ip[INET_ADDRSTRLEN] = "?";
        uv_ip4_name(in, ip, sizeof ip);
        snprintf(out, size, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
    } else if (addr->sa_family == AF_INET6) {
        format6((const struct sockaddr_in6 *)addr, out, size);
    } else {
        snprintf(out, size, "?");
    }
}

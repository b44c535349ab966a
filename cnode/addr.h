/*
 * Node names and socket addresses: where a node name's host part ends and what
 * address a host part is, for IPv4 (inet_tcp) and IPv6 (inet6_tcp) alike.
 *
 * A node name is ALIVE@HOST, split at the first '@' as OTP's net_kernel and
 * inet_tcp_dist split it: with IPv6 the host part may itself hold colons
 * ("cnode@::1", "a@fe80::1%eth0"), never another '@'. Pure functions: nothing
 * here blocks, allocates or touches a loop; host names (not literals) are
 * resolved by the callers with uv_getaddrinfo for the node's family.
 */
#ifndef CN_ADDR_H
#define CN_ADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * Room for any address cn_addr_format writes: "[" an IPv6 address with a scope
 * "]:65535" and the NUL.
 */
#define CN_ADDR_STRLEN 80

/*
 * Splits name at its first '@' into alive (alive_size bytes of room) and host
 * (host_size bytes). Returns 0, or -EINVAL when there is no '@', either part is
 * empty, the host holds another '@', or a part does not fit its room (nothing
 * is then written).
 */
int cn_name_split(const char *name, char *alive, size_t alive_size, char *host, size_t host_size);

/*
 * The family a node of this config uses: AF_INET for 0 (the default) and
 * AF_INET, AF_INET6 for AF_INET6, -EINVAL for anything else.
 */
int cn_addr_family(int family);

/*
 * host as an address of family (AF_INET or AF_INET6) with port, when host is
 * a numeric literal of that family: "127.0.0.1"; "::1", "fd00::2",
 * "fe80::1%eth0" (a scope by interface name). Returns 0, or -EINVAL
 * for anything else (a host name to resolve, a literal of the other family:
 * OTP's inet6_tcp does not map "127.0.0.1" to IPv6 either).
 */
int cn_addr_literal(int family, const char *host, uint16_t port, struct sockaddr_storage *out);

/* The loopback address of family with port: 127.0.0.1 or ::1 (where epmd is). */
void cn_addr_loopback(int family, uint16_t port, struct sockaddr_storage *out);

/* The wildcard address of family with port: 0.0.0.0 or :: (where the node listens). */
void cn_addr_any(int family, uint16_t port, struct sockaddr_storage *out);

/* Sets the port of an AF_INET or AF_INET6 address. */
void cn_addr_set_port(struct sockaddr_storage *addr, uint16_t port);

/* The port of an AF_INET or AF_INET6 address (0 for another family). */
uint16_t cn_addr_port(const struct sockaddr *addr);

/*
 * The address for logs into out (size bytes, truncated to fit, always
 * terminated): "10.0.0.1:4370", "[::1]:4370", "[fe80::1%eth0]:4370". An
 * IPv4-mapped IPv6 address (an IPv4 peer on a dual-stack listener) is written
 * as the IPv4 address it is. Another family is "?".
 */
void cn_addr_format(const struct sockaddr *addr, char *out, size_t size);

#endif

/*
** peer.c: an accepted connection's peer in the small form the listener
** queues with its fd (aio_peer, loop.h), for both backends: set from
** accept's address around the AIO_SEV_ACCEPT callback, turned into text
** when get_extra_info asks.
*/
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif
#include <string.h>

#include "loop.h"

/* the peer of the connection being handed over */
static __thread aio_peer accepted;

void aio__peer_accepting(const void *sa, size_t len) {
  const struct sockaddr *s = sa;
  memset(&accepted, 0, sizeof accepted);
  if (s == NULL) return;
  if (s->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *sin = sa;
    accepted.family = AIO_AF_INET;
    accepted.port = ntohs(sin->sin_port);
    memcpy(accepted.ip, &sin->sin_addr, 4);
  } else if (s->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *sin6 = sa;
    accepted.family = AIO_AF_INET6;
    accepted.port = ntohs(sin6->sin6_port);
    memcpy(accepted.ip, &sin6->sin6_addr, 16);
  }
}

void aio__stream_accepted_peer(aio_peer *p) {
  *p = accepted;
}

void aio__peer_addr(const aio_peer *p, aio_addr *a) {
  memset(a, 0, sizeof *a);
  if (p->family != AIO_AF_INET && p->family != AIO_AF_INET6) return;
  inet_ntop(p->family == AIO_AF_INET ? AF_INET : AF_INET6, (void *)p->ip,
            a->host, sizeof a->host);
  a->family = p->family;
  a->port = p->port;
}

/*
** tls.h: a TLS session as a filter over any byte stream (internal, between
** src/bindings/tls.c and stream.c).  mbedTLS talks to the stream only
** through the two callbacks given at creation (its memory-buffer I/O), so
** the filter knows nothing of sockets or of the loop backend: stream.c
** gives it the transport's read buffer and write queue.
**
** The session keeps the plaintext it has decrypted in a buffer of its own;
** stream.c reads and consumes from there as it does from a transport.
** Nothing here waits: AIO_TLS_WANT_READ means "park until the transport
** has more bytes", the same path as a plain read.
*/
#ifndef AIO_TLS_H
#define AIO_TLS_H

#include <stddef.h>

#include "lua.h"

typedef struct aio_tls aio_tls;

/* the byte stream under a session: as mbedTLS's f_send / f_recv, they
** return a count, 0 at end of stream (recv), or a negative mbedTLS code;
** AIO_TLS_WANT_READ when nothing is buffered yet */
typedef int (*aio_tls_send)(void *io, const unsigned char *p, size_t n);
typedef int (*aio_tls_recv)(void *io, unsigned char *p, size_t n);

#define AIO_TLS_WANT_READ (-0x6900)   /* MBEDTLS_ERR_SSL_WANT_READ */
#define AIO_TLS_SEND_FAILED (-0x004E) /* MBEDTLS_ERR_NET_SEND_FAILED */
#define AIO_TLS_CONN_RESET (-0x0050)  /* MBEDTLS_ERR_NET_CONN_RESET */
#define AIO_TLS_TIMEOUT   (-1)        /* ours: the handshake took too long */

/* A new session for the context userdata at ctxidx (raises a plain error
** when it is not one).  hostname: the name to verify and send as SNI, or
** NULL; an IP address is checked against the certificate's IP entries
** and not sent.  Raises on failure; the session is malloc'd, free it with
** aio__tls_free. */
aio_tls *aio__tls_new(lua_State *L, int ctxidx, const char *hostname,
                      void *io, aio_tls_send send, aio_tls_recv recv);
void aio__tls_free(aio_tls *s);
/* the context's handshake timeout in seconds (<= 0: none); 1 for a server */
double aio__tls_timeout(aio_tls *s);
int aio__tls_is_server(aio_tls *s);

/* 1 once the handshake is complete */
int aio__tls_ready(aio_tls *s);
/* one step of the handshake: 0 done, AIO_TLS_WANT_READ, or an error code */
int aio__tls_handshake(aio_tls *s);
/* Decrypt what the stream has buffered into the plaintext buffer: 0, 1 at
** the peer's close_notify or a clean end of the stream, or an error code
** (a record cut short by the end of the stream is one) */
int aio__tls_pull(aio_tls *s);
const char *aio__tls_rbuf(aio_tls *s, size_t *len);
void aio__tls_consume(aio_tls *s, size_t n);
/* encrypt and send all of p; 0 or an error code */
int aio__tls_write(aio_tls *s, const char *p, size_t n);
/* send close_notify (once); 0 or an error code */
int aio__tls_close_notify(aio_tls *s);

/* push a TLSError for code, "<what>: <mbedTLS's reason>" (the failed
** checks of the peer's certificate when that was the reason) */
void aio__tls_pusherror(lua_State *L, aio_tls *s, int code, const char *what);
/* get_extra_info for "cipher", "tls_version", "alpn", "peercert":
** pushes 1 value (nil when none), or returns 0 for another name */
int aio__tls_info(lua_State *L, aio_tls *s, const char *name);

/* What get_extra_info still tells once the session is gone, as asyncio
** keeps them from the handshake: a copy (malloc'd, free() it) of the
** names and the peer's certificate; NULL before the handshake ended, or
** out of memory.  aio__tls_kept_info answers as aio__tls_info (k may be
** NULL: nil). */
typedef struct aio_tls_kept aio_tls_kept;
aio_tls_kept *aio__tls_keep(aio_tls *s);
int aio__tls_kept_info(lua_State *L, const aio_tls_kept *k, const char *name);

#endif

/*
** tls_ca.h: the trusted roots a client context uses when it is given no
** ca_file.  On Windows they are the system's certificate store (tls_ca_win.c);
** elsewhere a CA bundle file, tls.c's DEFAULT_CA.
*/
#ifndef AIO_TLS_CA_H
#define AIO_TLS_CA_H

#include <mbedtls/x509_crt.h>

#include "lua.h"

#ifdef _WIN32
#define AIO_SYSTEM_CA 1
/* Append the certificates of the Windows store "ROOT" (or the one the
** environment variable AIOLUA_CA_STORE names) to ca; returns how many.
** Raises a TLSError naming the store when it cannot be opened or holds no
** certificate mbedTLS can read. */
int aio__tls_system_ca(lua_State *L, mbedtls_x509_crt *ca);
#else
#define AIO_SYSTEM_CA 0
static inline int aio__tls_system_ca(lua_State *L, mbedtls_x509_crt *ca) {
  (void)L; (void)ca;
  return 0;
}
#endif

#endif

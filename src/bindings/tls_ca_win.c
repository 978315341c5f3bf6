/*
** tls_ca_win.c: the system's trusted roots for TLS on Windows (tls_ca.h):
** CertOpenSystemStoreW, each certificate's DER into mbedTLS.  Certificates
** mbedTLS cannot parse are skipped.
*/
#include <stdlib.h>
#include <string.h>

#include <windows.h>
#include <wincrypt.h>

#include "sched.h"
#include "tls_ca.h"

#define STORE_ENV  "AIOLUA_CA_STORE"
#define STORE_NAME "ROOT"

int aio__tls_system_ca(lua_State *L, mbedtls_x509_crt *ca) {
  const char *name = getenv(STORE_ENV);
  wchar_t wname[128];
  HCERTSTORE st;
  PCCERT_CONTEXT cc = NULL;
  int n = 0, bad = 0;
  if (name == NULL || *name == '\0') name = STORE_NAME;
  if (MultiByteToWideChar(CP_UTF8, 0, name, -1, wname, 128) == 0)
    return aio__error(L, "TLSError", 0, "tls.context: bad certificate store "
                      "name %s (%s)", name, STORE_ENV);
  st = CertOpenSystemStoreW(0, wname);
  if (st == NULL)
    return aio__error(L, "TLSError", 0, "tls.context: cannot open the "
                      "Windows certificate store %s (error %d): pass ca_file",
                      name, (int)GetLastError());
  while ((cc = CertEnumCertificatesInStore(st, cc)) != NULL) {
    if ((cc->dwCertEncodingType & X509_ASN_ENCODING) &&
        mbedtls_x509_crt_parse_der(ca, cc->pbCertEncoded,
                                   cc->cbCertEncoded) == 0)
      n++;
    else
      bad++;
  }
  CertCloseStore(st, 0);
  if (n == 0)
    return aio__error(L, "TLSError", 0, "tls.context: no certificate in the "
                      "Windows certificate store %s (%d unreadable): pass "
                      "ca_file", name, bad);
  return n;
}

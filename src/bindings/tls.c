/*
** tls.c: the module _aio.tls (TLS contexts) and the TLS session filter of
** tls.h, on mbedTLS.  The policy (option checks, the default context,
** which stream gets a session) is lua/aio/tls.lua and lua/aio/stream.lua.
**
** A context's mbedTLS configuration (certificates, key, random generator)
** lives in a malloc'd, reference-counted block: the userdata holds one
** reference and every session one more, so a connection keeps working
** whatever order the garbage collector finalises things in.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#endif

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#include "sched.h"
#include "tls.h"
#include "tls_ca.h"

#define CONTEXT_MT "aio.TLSContext"
#define DEFAULT_CA "/etc/ssl/certs/ca-certificates.crt"
#define PBUF_MIN   (16 * 1024 + 256)  /* room for one whole record */

typedef struct tlsconf {
  int refs;
  int server, verify;
  double timeout;
  mbedtls_ssl_config conf;
  mbedtls_x509_crt ca, cert;
  mbedtls_pk_context key;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  char **alpn;              /* NULL-terminated, for mbedTLS */
} tlsconf;

typedef struct aio_tlsctx_t {
  tlsconf *c;               /* NULL once freed */
} aio_tlsctx_t;

struct aio_tls {
  mbedtls_ssl_context ssl;
  tlsconf *c;
  void *io;                 /* the byte stream under the session */
  aio_tls_send send;
  aio_tls_recv recv;
  unsigned char *fbuf;      /* the handshake flight being gathered */
  size_t flen, fcap;
  char *pbuf;               /* plaintext: [pstart, pend) is unread */
  size_t pstart, pend, pcap;
  unsigned char ip[16];     /* the peer's expected IP address */
  int iplen;                /* 4 or 16 when the name was an address */
  int done, notified, ended, err;
};

/* Key exchange curves, in order.  mbedTLS 2.28 has optimised arithmetic
** for the NIST curves (MBEDTLS_ECP_NIST_OPTIM) but not for x25519, whose
** ECDHE costs about as much as the rest of a server's handshake: without
** it a server handshakes about 1.6 times as fast (bench/tls.sh).  Every
** TLS 1.2 implementation has P-256. */
static const mbedtls_ecp_group_id curves[] = {
  MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_SECP384R1,
  MBEDTLS_ECP_DP_SECP521R1, MBEDTLS_ECP_DP_NONE
};

/* The suites: mbedTLS's own order puts ChaCha20-Poly1305 first, its
** fastest cipher as it comes (about 350 MB/s here, AES-GCM about 230).
** The program's mbedTLS has AES-GCM in AES-NI and PCLMULQDQ for whole
** blocks (src/bindings/mbedtls_gcm_aesni.patch, about 1,600 MB/s), so on a
** CPU that has them the AES-GCM suites go first, in mbedTLS's order among
** themselves, as OpenSSL orders them.  NULL: mbedTLS's list as it is. */
#if defined(AIO_MBEDTLS_FAST_GCM)
#include <mbedtls/ssl_ciphersuites.h>

static int *gcm_first;  /* made on first need, kept for the process */

static const int *suites(void) {
  const int *all;
  int *mine, *none = NULL;
  size_t n = 0, len = 0, i, pass;
  if (!(__builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul")))
    return NULL;
  if ((mine = __atomic_load_n(&gcm_first, __ATOMIC_ACQUIRE)) != NULL)
    return mine;
  all = mbedtls_ssl_list_ciphersuites();
  while (all[len] != 0) len++;
  if ((mine = malloc((len + 1) * sizeof *mine)) == NULL) return NULL;
  for (pass = 0; pass < 2; pass++)
    for (i = 0; i < len; i++) {
      const mbedtls_ssl_ciphersuite_t *cs =
          mbedtls_ssl_ciphersuite_from_id(all[i]);
      int gcm = cs != NULL && (cs->cipher == MBEDTLS_CIPHER_AES_128_GCM ||
                               cs->cipher == MBEDTLS_CIPHER_AES_192_GCM ||
                               cs->cipher == MBEDTLS_CIPHER_AES_256_GCM);
      if (gcm == (pass == 0)) mine[n++] = all[i];
    }
  mine[n] = 0;
  /* two threads may make it at once: the first to publish wins */
  if (!__atomic_compare_exchange_n(&gcm_first, &none, mine, 0,
                                   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    free(mine);
    return none;
  }
  return mine;
}
#else
static const int *suites(void) { return NULL; }
#endif

/* ---- the shared configuration ---- */

static void conf_unref(tlsconf *c) {
  char **a;
  if (c == NULL || --c->refs > 0) return;
  mbedtls_ssl_config_free(&c->conf);
  mbedtls_x509_crt_free(&c->ca);
  mbedtls_x509_crt_free(&c->cert);
  mbedtls_pk_free(&c->key);
  mbedtls_ctr_drbg_free(&c->drbg);
  mbedtls_entropy_free(&c->entropy);
  if (c->alpn) {
    for (a = c->alpn; *a; a++) free(*a);
    free(c->alpn);
  }
  free(c);
}

/* mbedTLS's text for code, without its "SSL - " module prefix */
static const char *reason(int code, char *buf, size_t size) {
  const char *p;
  mbedtls_strerror(code, buf, size);
  p = strstr(buf, " - ");
  return p ? p + 3 : buf;
}

/* a file the caller named must exist: OSError otherwise */
static void checkfile(lua_State *L, const char *opt, const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    int e = errno;
    aio__error(L, "OSError", -e, "tls.context: %s %s: %s", opt, path,
               strerror(e));
  }
  fclose(f);
}

static int loaderr(lua_State *L, const char *opt, const char *path,
                   int code) {
  char buf[160];
  return aio__error(L, "TLSError", 0, "tls.context: cannot load %s %s: %s",
                    opt, path, reason(code, buf, sizeof buf));
}

/* load the PEM certificates of the file path into ca; opt names where
** the path came from in errors */
static void loadca(lua_State *L, mbedtls_x509_crt *ca, const char *opt,
                   const char *path) {
  int rc;
  checkfile(L, opt, path);
  if ((rc = mbedtls_x509_crt_parse_file(ca, path)) < 0)
    loaderr(L, opt, path, rc);
  if (ca->version == 0)
    aio__error(L, "TLSError", 0, "tls.context: no certificate in %s %s", opt,
               path);
}

/* The roots of a verifying client given no ca_file, as OpenSSL's default
** verify paths (asyncio's ssl=True): the PEM bundle SSL_CERT_FILE names,
** else every certificate file in the directories SSL_CERT_DIR lists
** (':'-separated, as OpenSSL reads it; the hash links of a c_rehash
** directory are certificate files too; other files, and directories that
** cannot be read, are skipped), else the system's: DEFAULT_CA, or on
** Windows its certificate store (tls_ca.h), where the variables are not
** read.  An empty variable counts as unset.  Raises as ca_file does,
** naming the variable. */
static void default_ca(lua_State *L, mbedtls_x509_crt *ca) {
  const char *file = getenv("SSL_CERT_FILE"), *dirs = getenv("SSL_CERT_DIR");
  const char *p, *end;
  if (AIO_SYSTEM_CA) {
    aio__tls_system_ca(L, ca);
  } else if (file != NULL && file[0] != '\0') {
    loadca(L, ca, "SSL_CERT_FILE", file);
  } else if (dirs != NULL && dirs[0] != '\0') {
    for (p = dirs; *p != '\0'; p = *end ? end + 1 : end) {
      if ((end = strchr(p, ':')) == NULL) end = p + strlen(p);
      if (end == p) continue;
      lua_pushlstring(L, p, (size_t)(end - p));              /* +1 */
      mbedtls_x509_crt_parse_path(ca, lua_tostring(L, -1));  /* skips bad */
      lua_pop(L, 1);
    }
    if (ca->version == 0)
      aio__error(L, "TLSError", 0, "tls.context: no certificate in "
                 "SSL_CERT_DIR %s", dirs);
  } else {
    loadca(L, ca, "ca_file", DEFAULT_CA);
  }
}

static aio_tlsctx_t *checkctx(lua_State *L, int i) {
  aio_tlsctx_t *x = luaL_checkudata(L, i, CONTEXT_MT);
  if (x->c == NULL) luaL_argerror(L, i, "the TLS context is closed");
  return x;
}

/* context(server, verify, ca_file, cert_file, key_file, alpn, minor,
** timeout) -> TLSContext.  lua/aio/tls.lua has checked the types. */
static int l_context(lua_State *L) {
  int server = lua_toboolean(L, 1), verify = lua_toboolean(L, 2);
  const char *ca_file = luaL_optstring(L, 3, NULL);
  const char *cert_file = luaL_optstring(L, 4, NULL);
  const char *key_file = luaL_optstring(L, 5, NULL);
  int minor = (int)luaL_optinteger(L, 7, MBEDTLS_SSL_MINOR_VERSION_3);
  double timeout = luaL_optnumber(L, 8, 60.0);
  aio_tlsctx_t *x;
  tlsconf *c;
  int rc;
  x = lua_newuserdatauv(L, sizeof *x, 0);    /* closed until complete */
  x->c = NULL;
  luaL_setmetatable(L, CONTEXT_MT);
  if ((c = calloc(1, sizeof *c)) == NULL)
    return luaL_error(L, "not enough memory");
  c->refs = 1;
  mbedtls_ssl_config_init(&c->conf);
  mbedtls_x509_crt_init(&c->ca);
  mbedtls_x509_crt_init(&c->cert);
  mbedtls_pk_init(&c->key);
  mbedtls_entropy_init(&c->entropy);
  mbedtls_ctr_drbg_init(&c->drbg);
  x->c = c;  /* from here on __gc frees whatever was set up */
  c->server = server;
  c->verify = verify;
  c->timeout = timeout;
  rc = mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy,
                             (const unsigned char *)"aiolua", 6);
  if (rc == 0)
    rc = mbedtls_ssl_config_defaults(&c->conf, server ? MBEDTLS_SSL_IS_SERVER
                                     : MBEDTLS_SSL_IS_CLIENT,
                                     MBEDTLS_SSL_TRANSPORT_STREAM,
                                     MBEDTLS_SSL_PRESET_DEFAULT);
  if (rc != 0) {
    char buf[160];
    return aio__error(L, "TLSError", 0, "tls.context: %s",
                      reason(rc, buf, sizeof buf));
  }
  mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
  mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3, minor);
  mbedtls_ssl_conf_renegotiation(&c->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
  mbedtls_ssl_conf_curves(&c->conf, curves);
  if (suites() != NULL) mbedtls_ssl_conf_ciphersuites(&c->conf, suites());
  /* the peer's certificate: a client always checks the server's (unless
  ** verify is false); a server asks for one only when given a CA */
  if (verify && (!server || ca_file != NULL)) {
    if (ca_file != NULL) loadca(L, &c->ca, "ca_file", ca_file);
    else default_ca(L, &c->ca);
    mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
  } else {
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_NONE);
  }
  if (cert_file != NULL) {
    if (key_file == NULL) key_file = cert_file;  /* both in one file */
    checkfile(L, "cert_file", cert_file);
    checkfile(L, "key_file", key_file);
    if ((rc = mbedtls_x509_crt_parse_file(&c->cert, cert_file)) != 0)
      return loaderr(L, "cert_file", cert_file, rc < 0 ? rc :
                     MBEDTLS_ERR_X509_INVALID_FORMAT);
    if ((rc = mbedtls_pk_parse_keyfile(&c->key, key_file, NULL)) != 0)
      return loaderr(L, "key_file", key_file, rc);
    if (mbedtls_pk_check_pair(&c->cert.pk, &c->key) != 0)
      /* as OpenSSL's "key values mismatch", here, not at a handshake */
      return aio__error(L, "TLSError", 0, "tls.context: key_file %s is not "
                        "the private key of cert_file %s", key_file,
                        cert_file);
    if ((rc = mbedtls_ssl_conf_own_cert(&c->conf, &c->cert, &c->key)) != 0)
      return loaderr(L, "cert_file", cert_file, rc);
  }
  if (lua_istable(L, 6)) {
    lua_Integer i, n = luaL_len(L, 6);
    if ((c->alpn = calloc((size_t)n + 1, sizeof *c->alpn)) == NULL)
      return luaL_error(L, "not enough memory");
    for (i = 1; i <= n; i++) {
      const char *name;
      lua_geti(L, 6, i);
      if ((name = lua_tostring(L, -1)) == NULL)
        return luaL_error(L, "tls.context: alpn[%d] is not a string", (int)i);
      if ((c->alpn[i - 1] = strdup(name)) == NULL)
        return luaL_error(L, "not enough memory");
      lua_pop(L, 1);
    }
    if (n > 0 &&
        (rc = mbedtls_ssl_conf_alpn_protocols(&c->conf,
                                              (const char **)c->alpn)) != 0)
      return luaL_error(L, "tls.context: bad alpn list");
  }
  return 1;
}

static int ctx_gc(lua_State *L) {
  aio_tlsctx_t *x = lua_touserdata(L, 1);
  conf_unref(x->c);
  x->c = NULL;
  return 0;
}

static int ctx_index(lua_State *L) {
  aio_tlsctx_t *x = checkctx(L, 1);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "server") == 0) lua_pushboolean(L, x->c->server);
  else if (strcmp(k, "verify") == 0) lua_pushboolean(L, x->c->verify);
  else if (strcmp(k, "handshake_timeout") == 0)
    lua_pushnumber(L, x->c->timeout);
  else lua_pushnil(L);
  return 1;
}

static int ctx_tostring(lua_State *L) {
  aio_tlsctx_t *x = lua_touserdata(L, 1);
  lua_pushfstring(L, "aio.TLSContext (%s) (%p)", x->c == NULL ? "closed" :
                  x->c->server ? "server" : "client", (void *)x);
  return 1;
}

/* ====================================================================== */
/* sessions                                                               */
/* ====================================================================== */

/* the name was an IP address: check it against the certificate's
** iPAddress entries (mbedTLS 2.28 matches only DNS names and CN) */
static int verify_ip(void *data, mbedtls_x509_crt *crt, int depth,
                     uint32_t *flags) {
  aio_tls *s = data;
  const mbedtls_x509_sequence *san;
  if (depth != 0) return 0;
  for (san = &crt->subject_alt_names; san != NULL; san = san->next) {
    if (san->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) &&
        san->buf.len == (size_t)s->iplen &&
        memcmp(san->buf.p, s->ip, (size_t)s->iplen) == 0)
      return 0;
  }
  *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
  return 0;
}

/* The session's I/O.  While the handshake runs, the records of a flight
** (ServerHello, Certificate, ServerKeyExchange, ServerHelloDone; or
** ChangeCipherSpec and Finished) are gathered and written together when
** mbedTLS waits for the peer: one write and one wakeup of the peer per
** flight instead of one per record.  After it, records go straight to
** the stream. */
static int bio_send(void *ctx, const unsigned char *p, size_t n) {
  aio_tls *s = ctx;
  if (s->done) return s->send(s->io, p, n);
  if (s->fcap - s->flen < n) {
    size_t cap = s->fcap ? s->fcap : 4096;
    unsigned char *q;
    while (cap - s->flen < n) cap *= 2;
    if ((q = realloc(s->fbuf, cap)) == NULL)
      return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    s->fbuf = q;
    s->fcap = cap;
  }
  memcpy(s->fbuf + s->flen, p, n);
  s->flen += n;
  return (int)n;
}

static int bio_recv(void *ctx, unsigned char *p, size_t n) {
  aio_tls *s = ctx;
  return s->recv(s->io, p, n);
}

/* write the gathered flight: 0 or the stream's error code */
static int flush_flight(aio_tls *s) {
  size_t off = 0;
  while (off < s->flen) {
    int rc = s->send(s->io, s->fbuf + off, s->flen - off);
    if (rc < 0) { s->flen = 0; return rc; }
    off += (size_t)rc;
  }
  s->flen = 0;
  return 0;
}

aio_tls *aio__tls_new(lua_State *L, int ctxidx, const char *hostname,
                      void *io, aio_tls_send send, aio_tls_recv recv) {
  aio_tlsctx_t *x = checkctx(L, ctxidx);
  aio_tls *s = calloc(1, sizeof *s);
  int rc;
  if (s == NULL) { luaL_error(L, "not enough memory"); return NULL; }
  mbedtls_ssl_init(&s->ssl);
  s->c = x->c;
  s->c->refs++;
  if ((rc = mbedtls_ssl_setup(&s->ssl, &s->c->conf)) != 0) goto fail;
  if (hostname != NULL && hostname[0] != '\0' && !s->c->server) {
    if (inet_pton(AF_INET, hostname, s->ip) == 1) s->iplen = 4;
    else if (inet_pton(AF_INET6, hostname, s->ip) == 1) s->iplen = 16;
    if (s->iplen) mbedtls_ssl_set_verify(&s->ssl, verify_ip, s);
    else if ((rc = mbedtls_ssl_set_hostname(&s->ssl, hostname)) != 0)
      goto fail;
  }
  s->io = io;
  s->send = send;
  s->recv = recv;
  mbedtls_ssl_set_bio(&s->ssl, s, bio_send, bio_recv, NULL);
  return s;
fail:
  aio__tls_free(s);
  {
    char buf[160];
    aio__error(L, "TLSError", 0, "TLS session: %s",
               reason(rc, buf, sizeof buf));
  }
  return NULL;
}

void aio__tls_free(aio_tls *s) {
  if (s == NULL) return;
  mbedtls_ssl_free(&s->ssl);
  conf_unref(s->c);
  free(s->pbuf);
  free(s->fbuf);
  free(s);
}

double aio__tls_timeout(aio_tls *s) { return s->c->timeout; }
int aio__tls_is_server(aio_tls *s) { return s->c->server; }

int aio__tls_ready(aio_tls *s) { return s->done; }

int aio__tls_handshake(aio_tls *s) {
  int rc;
  if (s->done) return 0;
  if (s->err) return s->err;
  rc = mbedtls_ssl_handshake(&s->ssl);
  /* a server that requires a client certificate and got none: mbedTLS
  ** 2.28 just stops; tell the client why, as OpenSSL does (RFC 5246
  ** 7.4.6: a fatal handshake_failure), rather than leave it an EOF */
  if (rc == MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE)
    (void)mbedtls_ssl_send_alert_message(&s->ssl,
        MBEDTLS_SSL_ALERT_LEVEL_FATAL, MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE);
  if (s->flen > 0) {  /* the flight, or the alert of a failure */
    int frc = flush_flight(s);
    if (frc < 0 && (rc == 0 || rc == AIO_TLS_WANT_READ ||
                    rc == MBEDTLS_ERR_SSL_WANT_WRITE))
      rc = frc;
  }
  if (rc == 0) {
    s->done = 1;
    free(s->fbuf);  /* an idle connection keeps no flight buffer */
    s->fbuf = NULL;
    s->fcap = 0;
  } else if (rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
    rc = AIO_TLS_WANT_READ;
  } else if (rc != AIO_TLS_WANT_READ) {
    s->err = rc;
  }
  return rc;
}

/* room for one more record at the end of the plaintext buffer */
static int proom(aio_tls *s) {
  size_t used = s->pend - s->pstart;
  if (s->pcap - s->pend >= PBUF_MIN) return 0;
  if (s->pstart > 0) {
    memmove(s->pbuf, s->pbuf + s->pstart, used);
    s->pstart = 0;
    s->pend = used;
  }
  if (s->pcap - s->pend < PBUF_MIN) {
    size_t cap = s->pcap ? s->pcap : PBUF_MIN;
    char *p;
    while (cap - used < PBUF_MIN) cap *= 2;
    if ((p = realloc(s->pbuf, cap)) == NULL) return -1;
    s->pbuf = p;
    s->pcap = cap;
  }
  return 0;
}

int aio__tls_pull(aio_tls *s) {
  if (s->err) return s->err;
  if (s->ended) return 1;
  if (!s->done) return 0;
  for (;;) {
    int rc;
    if (proom(s) < 0) return s->err = MBEDTLS_ERR_SSL_ALLOC_FAILED;
    rc = mbedtls_ssl_read(&s->ssl, (unsigned char *)s->pbuf + s->pend,
                          s->pcap - s->pend);
    if (rc > 0) {
      s->pend += (size_t)rc;
      continue;
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
      return 0;
    if (rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
      s->ended = 1;
      return 1;
    }
    if (rc == 0 || rc == MBEDTLS_ERR_SSL_CONN_EOF) {
      /* the stream ended without close_notify: an end of stream between
      ** records (as many HTTP servers do), a cut one inside a record */
      if (s->ssl.in_left > 0) return s->err = MBEDTLS_ERR_SSL_CONN_EOF;
      s->ended = 1;
      return 1;
    }
    return s->err = rc;
  }
}

const char *aio__tls_rbuf(aio_tls *s, size_t *len) {
  *len = s->pend - s->pstart;
  return s->pbuf ? s->pbuf + s->pstart : "";
}

void aio__tls_consume(aio_tls *s, size_t n) {
  s->pstart += n;
  if (s->pstart >= s->pend) s->pstart = s->pend = 0;
}

int aio__tls_write(aio_tls *s, const char *p, size_t n) {
  if (s->err) return s->err;
  while (n > 0) {
    int rc = mbedtls_ssl_write(&s->ssl, (const unsigned char *)p, n);
    if (rc < 0) return rc;  /* our send never asks to wait */
    p += rc;
    n -= (size_t)rc;
  }
  return 0;
}

int aio__tls_close_notify(aio_tls *s) {
  if (s->notified || !s->done || s->err) return 0;
  s->notified = 1;
  return mbedtls_ssl_close_notify(&s->ssl);
}

/* ---- errors ---- */

static const char *alertname(int a) {
  switch (a) {
    case 0: return "close_notify";
    case 10: return "unexpected_message";
    case 20: return "bad_record_mac";
    case 22: return "record_overflow";
    case 40: return "handshake_failure";
    case 42: return "bad_certificate";
    case 43: return "unsupported_certificate";
    case 44: return "certificate_revoked";
    case 45: return "certificate_expired";
    case 46: return "certificate_unknown";
    case 47: return "illegal_parameter";
    case 48: return "unknown_ca";
    case 49: return "access_denied";
    case 50: return "decode_error";
    case 51: return "decrypt_error";
    case 70: return "protocol_version";
    case 71: return "insufficient_security";
    case 80: return "internal_error";
    case 86: return "inappropriate_fallback";
    case 90: return "user_canceled";
    case 109: return "missing_extension";
    case 110: return "unsupported_extension";
    case 112: return "unrecognized_name";
    case 116: return "certificate_required";
    case 120: return "no_application_protocol";
  }
  return "unknown alert";
}

void aio__tls_pusherror(lua_State *L, aio_tls *s, int code,
                        const char *what) {
  char buf[512];
  const char *why;
  uint32_t flags = s ? mbedtls_ssl_get_verify_result(&s->ssl) : 0;
  if (code == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags != 0 &&
      flags != (uint32_t)-1) {
    char *p;
    size_t n;
    strcpy(buf, "certificate verify failed: ");
    n = strlen(buf);
    mbedtls_x509_crt_verify_info(buf + n, sizeof buf - n, "", flags);
    for (p = buf; *p; p++)
      if (*p == '\n') *p = p[1] ? ';' : '\0';
    why = buf;
  } else if (code == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE && s != NULL &&
             s->ssl.in_msg != NULL) {
    snprintf(buf, sizeof buf, "the peer sent a fatal alert: %s",
             alertname(s->ssl.in_msg[1]));
    why = buf;
  } else if (code == MBEDTLS_ERR_SSL_CONN_EOF) {
    why = s && s->done ? "the connection was closed in the middle of a "
          "TLS record" : "the connection was closed by the peer";
  } else if (code == MBEDTLS_ERR_SSL_INVALID_RECORD ||
             code == MBEDTLS_ERR_SSL_BAD_INPUT_DATA) {
    why = "invalid TLS record (not TLS, or a record too large)";
  } else {
    why = reason(code, buf, sizeof buf);
  }
  aio__pusherror(L, "TLSError", 0, "%s: %s", what, why);
  lua_pushstring(L, why);
  lua_setfield(L, -2, "reason");
}

/* ---- get_extra_info ---- */

static const char *longname(const char *s) {
  static const char *const names[][2] = {
    { "CN", "commonName" }, { "O", "organizationName" },
    { "OU", "organizationalUnitName" }, { "C", "countryName" },
    { "ST", "stateOrProvinceName" }, { "L", "localityName" },
    { "R", "emailAddress" }, { "emailAddress", "emailAddress" },
    { "serialNumber", "serialNumber" }, { "DC", "domainComponent" },
  };
  size_t i;
  for (i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(names[i][0], s) == 0) return names[i][1];
  return NULL;
}

/* a name as a table by short and long attribute names: {CN=, commonName=} */
static void pushname(lua_State *L, const mbedtls_x509_name *n) {
  lua_newtable(L);
  for (; n != NULL; n = n->next) {
    const char *sn = NULL, *ln;
    if (n->oid.p == NULL) continue;
    if (mbedtls_oid_get_attr_short_name(&n->oid, &sn) != 0) continue;
    lua_pushlstring(L, (const char *)n->val.p, n->val.len);
    if ((ln = longname(sn)) != NULL) {
      lua_pushvalue(L, -1);
      lua_setfield(L, -3, ln);
    }
    lua_setfield(L, -2, sn);
  }
}

static void pushtime(lua_State *L, const mbedtls_x509_time *t) {
  static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May",
    "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
  char buf[64];
  snprintf(buf, sizeof buf, "%s %2d %02d:%02d:%02d %d GMT",
           mon[(t->mon >= 1 && t->mon <= 12) ? t->mon - 1 : 0], t->day,
           t->hour, t->min, t->sec, t->year);
  lua_pushstring(L, buf);
}

/* the peer's certificate as a table, in the names of Python's
** getpeercert(): subject, issuer, version, serialNumber, notBefore,
** notAfter, subjectAltName ({{"DNS", name}, {"IP Address", ip}}); also
** subject_dn / issuer_dn as text and der, the raw certificate */
static void pushcert(lua_State *L, const mbedtls_x509_crt *crt) {
  char buf[1024];
  const mbedtls_x509_sequence *san;
  size_t i;
  int n = 0;
  lua_newtable(L);
  pushname(L, &crt->subject);
  lua_setfield(L, -2, "subject");
  pushname(L, &crt->issuer);
  lua_setfield(L, -2, "issuer");
  if (mbedtls_x509_dn_gets(buf, sizeof buf, &crt->subject) >= 0) {
    lua_pushstring(L, buf);
    lua_setfield(L, -2, "subject_dn");
  }
  if (mbedtls_x509_dn_gets(buf, sizeof buf, &crt->issuer) >= 0) {
    lua_pushstring(L, buf);
    lua_setfield(L, -2, "issuer_dn");
  }
  lua_pushinteger(L, crt->version);
  lua_setfield(L, -2, "version");
  for (i = 0; i < crt->serial.len && 2 * i + 2 < sizeof buf; i++)
    snprintf(buf + 2 * i, 3, "%02X", crt->serial.p[i]);
  buf[2 * i] = '\0';
  lua_pushstring(L, buf);
  lua_setfield(L, -2, "serialNumber");
  pushtime(L, &crt->valid_from);
  lua_setfield(L, -2, "notBefore");
  pushtime(L, &crt->valid_to);
  lua_setfield(L, -2, "notAfter");
  lua_newtable(L);
  for (san = &crt->subject_alt_names; san != NULL; san = san->next) {
    const mbedtls_asn1_buf *b = &san->buf;
    int tag = b->tag & 0x1f;
    if (b->p == NULL) continue;
    if (tag == MBEDTLS_X509_SAN_DNS_NAME ||
        tag == MBEDTLS_X509_SAN_RFC822_NAME ||
        tag == MBEDTLS_X509_SAN_UNIFORM_RESOURCE_IDENTIFIER) {
      lua_createtable(L, 2, 0);
      lua_pushstring(L, tag == MBEDTLS_X509_SAN_DNS_NAME ? "DNS" :
                     tag == MBEDTLS_X509_SAN_RFC822_NAME ? "email" : "URI");
      lua_rawseti(L, -2, 1);
      lua_pushlstring(L, (const char *)b->p, b->len);
      lua_rawseti(L, -2, 2);
      lua_rawseti(L, -2, ++n);
    } else if (tag == MBEDTLS_X509_SAN_IP_ADDRESS &&
               (b->len == 4 || b->len == 16)) {
      char ip[64];
      inet_ntop(b->len == 4 ? AF_INET : AF_INET6, b->p, ip, sizeof ip);
      lua_createtable(L, 2, 0);
      lua_pushliteral(L, "IP Address");
      lua_rawseti(L, -2, 1);
      lua_pushstring(L, ip);
      lua_rawseti(L, -2, 2);
      lua_rawseti(L, -2, ++n);
    }
  }
  if (n > 0) lua_setfield(L, -2, "subjectAltName");
  else lua_pop(L, 1);  /* none: no key, as in getpeercert() */
  lua_pushlstring(L, (const char *)crt->raw.p, crt->raw.len);
  lua_setfield(L, -2, "der");
}

/* push 1 value for a name: its text (nil when NULL); 0 for another name */
static int pushinfo(lua_State *L, const char *name, const char *cipher,
                    const char *version, const char *alpn) {
  const char *v;
  if (strcmp(name, "cipher") == 0) v = cipher;
  else if (strcmp(name, "tls_version") == 0) v = version;
  else if (strcmp(name, "alpn") == 0) v = alpn;
  else return 0;
  if (v) lua_pushstring(L, v);
  else lua_pushnil(L);
  return 1;
}

int aio__tls_info(lua_State *L, aio_tls *s, const char *name) {
  int done = s && s->done;
  if (strcmp(name, "peercert") == 0) {
    const mbedtls_x509_crt *crt = done ? mbedtls_ssl_get_peer_cert(&s->ssl)
                                       : NULL;
    if (crt == NULL) lua_pushnil(L);
    else pushcert(L, crt);
    return 1;
  }
  return pushinfo(L, name,
                  done ? mbedtls_ssl_get_ciphersuite(&s->ssl) : NULL,
                  done ? mbedtls_ssl_get_version(&s->ssl) : NULL,
                  done ? mbedtls_ssl_get_alpn_protocol(&s->ssl) : NULL);
}

struct aio_tls_kept {
  const char *cipher, *version;  /* mbedTLS's own names (static) */
  size_t alpnlen;                /* with its '\0'; 0: none agreed */
  size_t certlen;                /* the peer's certificate; 0: none */
  unsigned char data[];          /* the alpn, then the certificate (DER) */
};

aio_tls_kept *aio__tls_keep(aio_tls *s) {
  const char *alpn;
  const mbedtls_x509_crt *crt;
  aio_tls_kept *k;
  size_t alen, clen;
  if (s == NULL || !s->done) return NULL;
  alpn = mbedtls_ssl_get_alpn_protocol(&s->ssl);
  crt = mbedtls_ssl_get_peer_cert(&s->ssl);
  alen = alpn ? strlen(alpn) + 1 : 0;
  clen = crt ? crt->raw.len : 0;
  if ((k = malloc(sizeof *k + alen + clen)) == NULL) return NULL;
  k->cipher = mbedtls_ssl_get_ciphersuite(&s->ssl);
  k->version = mbedtls_ssl_get_version(&s->ssl);
  k->alpnlen = alen;
  k->certlen = clen;
  if (alen) memcpy(k->data, alpn, alen);
  if (clen) memcpy(k->data + alen, crt->raw.p, clen);
  return k;
}

static int l_pushcert(lua_State *L) {
  pushcert(L, lua_touserdata(L, 1));
  return 1;
}

int aio__tls_kept_info(lua_State *L, const aio_tls_kept *k, const char *name) {
  if (strcmp(name, "peercert") == 0) {
    mbedtls_x509_crt crt;
    int rc;
    if (k == NULL || k->certlen == 0) {
      lua_pushnil(L);
      return 1;
    }
    mbedtls_x509_crt_init(&crt);
    if (mbedtls_x509_crt_parse_der(&crt, k->data + k->alpnlen,
                                   k->certlen) != 0) {
      mbedtls_x509_crt_free(&crt);  /* it was parsed once: out of memory */
      return luaL_error(L, "get_extra_info: not enough memory");
    }
    lua_pushcfunction(L, l_pushcert);  /* protected: crt is freed anyway */
    lua_pushlightuserdata(L, &crt);
    rc = lua_pcall(L, 1, 1, 0);
    mbedtls_x509_crt_free(&crt);
    if (rc != LUA_OK) return lua_error(L);
    return 1;
  }
  return pushinfo(L, name, k ? k->cipher : NULL, k ? k->version : NULL,
                  k && k->alpnlen ? (const char *)k->data : NULL);
}

/* ====================================================================== */
/* the module                                                             */
/* ====================================================================== */

static const luaL_Reg ctx_meta[] = {
  { "__gc", ctx_gc },
  { "__index", ctx_index },
  { "__tostring", ctx_tostring },
  { NULL, NULL }
};

/* is_context(v) -> boolean */
static int l_is_context(lua_State *L) {
  lua_pushboolean(L, luaL_testudata(L, 1, CONTEXT_MT) != NULL);
  return 1;
}

static const luaL_Reg funcs[] = {
  { "context", l_context },
  { "is_context", l_is_context },
  { NULL, NULL }
};

int luaopen__aio_tls(lua_State *L) {
  luaL_newlib(L, funcs);
  luaL_newmetatable(L, CONTEXT_MT);
  luaL_setfuncs(L, ctx_meta, 0);
  lua_pop(L, 1);
  lua_pushstring(L, MBEDTLS_VERSION_STRING);
  lua_setfield(L, -2, "mbedtls_version");
  lua_pushstring(L, AIO_SYSTEM_CA ? NULL : DEFAULT_CA);  /* nil: a store */
  lua_setfield(L, -2, "default_ca_file");
  return 1;
}

/* tls.h names mbedTLS's codes without including its headers */
_Static_assert(AIO_TLS_WANT_READ == MBEDTLS_ERR_SSL_WANT_READ, "want read");
_Static_assert(AIO_TLS_SEND_FAILED == MBEDTLS_ERR_NET_SEND_FAILED, "send");
_Static_assert(AIO_TLS_CONN_RESET == MBEDTLS_ERR_NET_CONN_RESET, "reset");

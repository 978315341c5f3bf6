/*
** test_gcm.c: mbedTLS's AES-GCM as the program links it, with
** src/bindings/mbedtls_gcm_aesni.patch (whole 64-byte groups with AES-NI
** and PCLMULQDQ).  The patched path must give exactly what the generic
** code gives -- which updates shorter than 64 bytes always take -- for
** random keys of every size, IVs, additional data, lengths and ways of
** cutting a message, in place and not; a changed bit must fail to
** authenticate; and mbedTLS's own GCM self-test must pass.  (On a CPU
** without AES-NI both sides are the generic code and it still holds.)
*/
#include <stdlib.h>

#include <mbedtls/gcm.h>

#include "t.h"

#define MAXLEN 20000

static unsigned long long seed = 0x9e3779b97f4a7c15ull;

static unsigned rnd(void) {
  return (unsigned)(t_xorshift(&seed) >> 32);
}

static void fill(unsigned char *p, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) p[i] = (unsigned char)rnd();
}

typedef struct {
  int mode;
  const unsigned char *iv, *aad;
  size_t ivlen, aadlen;
} msg;

/* the message in updates of the given sizes (0-terminated; the last size
** goes on until the message ends), then the tag */
static int gcm_cut(mbedtls_gcm_context *g, const msg *m, const size_t *cuts,
                   const unsigned char *in, size_t n, unsigned char *out,
                   unsigned char tag[16]) {
  size_t off = 0, len = 0;
  int rc = mbedtls_gcm_starts(g, m->mode, m->iv, m->ivlen, m->aad, m->aadlen);
  while (rc == 0 && off < n) {
    if (*cuts) len = *cuts++;
    if (len == 0 || len > n - off) len = n - off;
    rc = mbedtls_gcm_update(g, len, in + off, out + off);
    off += len;
  }
  return rc ? rc : mbedtls_gcm_finish(g, tag, 16);
}

TEST(gcm_fast_matches_generic) {
  static const unsigned bits[] = { 128, 192, 256 };
  static const size_t sixteens[] = { 16, 0 };  /* only the generic code */
  unsigned char key[32], iv[32], aad[64], tag1[16], tag2[16], tag3[16];
  unsigned char *pt = malloc(MAXLEN), *ct1 = malloc(MAXLEN),
                *ct2 = malloc(MAXLEN), *buf = malloc(MAXLEN + 16);
  size_t *cuts = calloc(MAXLEN / 16 + 2, sizeof *cuts);
  int round;
  ASSERT(pt && ct1 && ct2 && buf && cuts);
  for (round = 0; round < 900; round++) {
    mbedtls_gcm_context g;
    msg m;
    size_t n, i, k, left;
    unsigned kb = bits[round % 3];
    /* every length to 300, then random ones, and TLS's record sizes */
    if (round < 300) n = (size_t)round;
    else if (round % 50 == 0) n = 16384;
    else n = rnd() % MAXLEN;
    m.iv = iv;
    m.ivlen = round % 7 == 0 ? 1 + rnd() % 32 : 12;
    m.aad = aad;
    m.aadlen = rnd() % 3 == 0 ? 13 : rnd() % 64;
    fill(key, sizeof key);
    fill(iv, sizeof iv);
    fill(aad, sizeof aad);
    fill(pt, n);
    mbedtls_gcm_init(&g);
    ASSERT_OK(mbedtls_gcm_setkey(&g, MBEDTLS_CIPHER_ID_AES, key, kb));

    /* one update: the whole 64-byte groups take the patched path */
    m.mode = MBEDTLS_GCM_ENCRYPT;
    ASSERT_OK(mbedtls_gcm_crypt_and_tag(&g, MBEDTLS_GCM_ENCRYPT, n, m.iv,
                                        m.ivlen, m.aad, m.aadlen, pt, ct1,
                                        16, tag1));
    /* 16 bytes at a time: only the generic code */
    ASSERT_OK(gcm_cut(&g, &m, sixteens, pt, n, ct2, tag2));
    if (memcmp(ct1, ct2, n) != 0 || memcmp(tag1, tag2, 16) != 0)
      T_FAIL("round %d: %zu bytes, AES-%u: the one-update result differs "
             "from the generic one", round, n, kb);

    /* cut at random multiples of 16 (some under 64, some over), the
    ** counter and the hash going on from one update to the next */
    for (k = 0, left = n; left > 0 && k < MAXLEN / 16; k++) {
      size_t c = 16 * (1 + rnd() % 24);
      cuts[k] = c;
      left = c < left ? left - c : 0;
    }
    cuts[k] = 0;
    ASSERT_OK(gcm_cut(&g, &m, cuts, pt, n, ct2, tag3));
    if (memcmp(ct1, ct2, n) != 0 || memcmp(tag1, tag3, 16) != 0)
      T_FAIL("round %d: %zu bytes cut at random: differs", round, n);

    /* decrypt in place, and one byte further down the buffer (TLS
    ** decrypts in place; mbedTLS allows an output before its input) */
    memcpy(buf, ct1, n);
    ASSERT_OK(mbedtls_gcm_auth_decrypt(&g, n, m.iv, m.ivlen, m.aad, m.aadlen,
                                       tag1, 16, buf, buf));
    ASSERT(memcmp(buf, pt, n) == 0);
    memcpy(buf + 1, ct1, n);
    ASSERT_OK(mbedtls_gcm_auth_decrypt(&g, n, m.iv, m.ivlen, m.aad, m.aadlen,
                                       tag1, 16, buf + 1, buf));
    ASSERT(memcmp(buf, pt, n) == 0);
    /* decrypting in small steps gives the same plaintext and tag */
    m.mode = MBEDTLS_GCM_DECRYPT;
    ASSERT_OK(gcm_cut(&g, &m, sixteens, ct1, n, buf, tag2));
    ASSERT(memcmp(buf, pt, n) == 0 && memcmp(tag1, tag2, 16) == 0);

    /* any changed bit, in the text or the tag, fails to authenticate */
    memcpy(buf, ct1, n);
    memcpy(tag2, tag1, 16);
    i = rnd() % (n + 16);
    if (i < n) buf[i] ^= (unsigned char)(1u << rnd() % 8);
    else tag2[i - n] ^= (unsigned char)(1u << rnd() % 8);
    ASSERT_EQ(mbedtls_gcm_auth_decrypt(&g, n, m.iv, m.ivlen, m.aad, m.aadlen,
                                       tag2, 16, buf, buf),
              MBEDTLS_ERR_GCM_AUTH_FAILED);
    mbedtls_gcm_free(&g);
  }
  free(pt);
  free(ct1);
  free(ct2);
  free(buf);
  free(cuts);
}

/* mbedTLS's own test vectors (the GCM specification's), one of them a
** 64-byte message: the patched path against known answers */
TEST(gcm_self_test) {
  ASSERT_OK(mbedtls_gcm_self_test(0));
}

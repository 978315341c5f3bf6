/*
** test_expmod.c: mbedtls_mpi_exp_mod as the program links it, with
** src/bindings/mbedtls_expmod.patch (16- and 32-limb moduli in assembly
** rows and fixed windows, src/bindings/mbedtls_expmod.c; other sizes stay
** mbedTLS's).  Every result must be what plain square-and-multiply with
** mbedtls_mpi_mul_mpi and mbedtls_mpi_mod_mpi gives, for moduli of both
** sizes and their neighbours, moduli with leading zero limbs, exponents
** from 0 to 2,100 bits, bases of 0, 1, N - 1, above N and negative, with
** and without the R^2 cache, and in place; so must RSA's two halves
** computed at once (aiolua_exp_mod2, AVX-512 IFMA); RSA must sign and
** verify, and mbedTLS's own RSA self-test must pass.  (make test also
** runs these under valgrind, whose CPU has neither ADX nor AVX-512: that
** covers mbedTLS's own code, which the new code hands other CPUs.)
*/
#include <stdlib.h>

#include <mbedtls/bignum.h>
#include <mbedtls/rsa.h>

#include "t.h"

static unsigned long long seed = 0x853c49e6748fea9bull;

static int rng(void *ctx, unsigned char *out, size_t n) {
  (void)ctx;
  t_xorshift_fill(&seed, out, n);
  return 0;
}

/* a random number of exactly `bits` bits (0 for 0) */
static void random_bits(mbedtls_mpi *x, size_t bits) {
  unsigned char b[512];
  size_t len = (bits + 7) / 8;
  ASSERT(len <= sizeof b);
  if (bits == 0) {
    ASSERT_OK(mbedtls_mpi_lset(x, 0));
    return;
  }
  rng(NULL, b, len);
  ASSERT_OK(mbedtls_mpi_read_binary(x, b, len));
  ASSERT_OK(mbedtls_mpi_shift_r(x, len * 8 - bits));
  ASSERT_OK(mbedtls_mpi_set_bit(x, bits - 1, 1));
}

/* X = A^E mod N by square-and-multiply, with mbedTLS's sign rule: a
** negative A and an odd E give N - (|A|^E mod N) */
static void reference(mbedtls_mpi *X, const mbedtls_mpi *A,
                      const mbedtls_mpi *E, const mbedtls_mpi *N) {
  mbedtls_mpi b, r;
  size_t i = mbedtls_mpi_bitlen(E);
  mbedtls_mpi_init(&b);
  mbedtls_mpi_init(&r);
  ASSERT_OK(mbedtls_mpi_copy(&b, A));
  b.s = 1;
  ASSERT_OK(mbedtls_mpi_mod_mpi(&b, &b, N));
  ASSERT_OK(mbedtls_mpi_lset(&r, 1));
  ASSERT_OK(mbedtls_mpi_mod_mpi(&r, &r, N));
  while (i-- > 0) {
    ASSERT_OK(mbedtls_mpi_mul_mpi(&r, &r, &r));
    ASSERT_OK(mbedtls_mpi_mod_mpi(&r, &r, N));
    if (mbedtls_mpi_get_bit(E, i)) {
      ASSERT_OK(mbedtls_mpi_mul_mpi(&r, &r, &b));
      ASSERT_OK(mbedtls_mpi_mod_mpi(&r, &r, N));
    }
  }
  if (A->s < 0 && mbedtls_mpi_get_bit(E, 0))
    ASSERT_OK(mbedtls_mpi_sub_mpi(&r, N, &r));
  ASSERT_OK(mbedtls_mpi_copy(X, &r));
  mbedtls_mpi_free(&b);
  mbedtls_mpi_free(&r);
}

TEST(expmod_matches_reference) {
  /* modulus sizes in bits: the two sizes the new code takes (16 and 32
  ** limbs, full and not), and sizes on either side that mbedTLS keeps */
  static const size_t nbits[] = { 1024, 1000, 961, 2048, 2047, 1985,
                                  960, 1088, 1536, 64, 4096 };
  static const size_t ebits[] = { 0, 1, 2, 17, 24, 80, 240, 1052, 2100 };
  mbedtls_mpi N, A, E, X, Y, RR;
  size_t m, e, k;
  int round = 0;
  mbedtls_mpi_init(&N);
  mbedtls_mpi_init(&A);
  mbedtls_mpi_init(&E);
  mbedtls_mpi_init(&X);
  mbedtls_mpi_init(&Y);
  mbedtls_mpi_init(&RR);
  for (m = 0; m < sizeof nbits / sizeof *nbits; m++) {
    random_bits(&N, nbits[m]);
    ASSERT_OK(mbedtls_mpi_set_bit(&N, 0, 1));  /* odd */
    mbedtls_mpi_free(&RR);
    for (e = 0; e < sizeof ebits / sizeof *ebits; e++) {
      for (k = 0; k < 7; k++, round++) {
        if (nbits[m] > 2048 && ebits[e] > 80) continue;  /* slow reference */
        random_bits(&E, ebits[e]);
        if (ebits[e] == 17) ASSERT_OK(mbedtls_mpi_lset(&E, 65537));
        switch (k) {
        case 0: ASSERT_OK(mbedtls_mpi_lset(&A, 0)); break;
        case 1: ASSERT_OK(mbedtls_mpi_lset(&A, 1)); break;
        case 2: ASSERT_OK(mbedtls_mpi_sub_int(&A, &N, 1)); break;
        case 3:  /* above N */
          ASSERT_OK(mbedtls_mpi_add_int(&A, &N, 12345));
          ASSERT_OK(mbedtls_mpi_shift_l(&A, 3));
          break;
        case 4:  /* negative */
          random_bits(&A, nbits[m] - 1);
          A.s = -1;
          break;
        default: random_bits(&A, nbits[m] - 1 - k); break;
        }
        reference(&Y, &A, &E, &N);
        /* the first call of a modulus fills the R^2 cache, the next use it */
        ASSERT_OK(mbedtls_mpi_exp_mod(&X, &A, &E, &N, &RR));
        if (mbedtls_mpi_cmp_mpi(&X, &Y) != 0)
          T_FAIL("round %d: %zu-bit modulus, %zu-bit exponent, base %zu: "
                 "differs from square-and-multiply", round, nbits[m],
                 ebits[e], k);
        ASSERT_OK(mbedtls_mpi_exp_mod(&X, &A, &E, &N, NULL));
        ASSERT(mbedtls_mpi_cmp_mpi(&X, &Y) == 0);
        /* in place */
        ASSERT_OK(mbedtls_mpi_copy(&X, &A));
        ASSERT_OK(mbedtls_mpi_exp_mod(&X, &X, &E, &N, &RR));
        ASSERT(mbedtls_mpi_cmp_mpi(&X, &Y) == 0);
      }
    }
  }

  /* a 1024-bit modulus with leading zero limbs (32 limbs held): the
  ** Montgomery radix is then 2^2048, and the result is the same */
  random_bits(&N, 1024);
  ASSERT_OK(mbedtls_mpi_set_bit(&N, 0, 1));
  ASSERT_OK(mbedtls_mpi_grow(&N, 32));
  ASSERT_EQ(N.n, 32);
  random_bits(&A, 1000);
  random_bits(&E, 1052);
  reference(&Y, &A, &E, &N);
  ASSERT_OK(mbedtls_mpi_exp_mod(&X, &A, &E, &N, NULL));
  ASSERT(mbedtls_mpi_cmp_mpi(&X, &Y) == 0);

  mbedtls_mpi_free(&N);
  mbedtls_mpi_free(&A);
  mbedtls_mpi_free(&E);
  mbedtls_mpi_free(&X);
  mbedtls_mpi_free(&Y);
  mbedtls_mpi_free(&RR);
}

/* in bignum.c with the patch: mbedtls_rsa_private's two halves at once */
int aiolua_exp_mod2(mbedtls_mpi *XP, const mbedtls_mpi *A,
                    const mbedtls_mpi *EP, const mbedtls_mpi *P,
                    mbedtls_mpi *RP, mbedtls_mpi *XQ,
                    const mbedtls_mpi *EQ, const mbedtls_mpi *Q,
                    mbedtls_mpi *RQ);

/* both halves match square-and-multiply: 1024-bit moduli (AVX-512 IFMA
** where the CPU has it), exponents of different lengths, bases above the
** moduli, the R^2 caches filled and then used, a result in place of the
** base; and moduli the fast code does not take (two plain calls) */
TEST(expmod_two_halves) {
  static const size_t nbits[][2] = { { 1024, 1024 }, { 1024, 1001 },
                                     { 1000, 1024 }, { 999, 1024 },
                                     { 960, 1024 }, { 2048, 1024 } };
  static const size_t ebits[][2] = { { 1052, 1052 }, { 1052, 1030 },
                                     { 0, 1024 }, { 1, 5 }, { 17, 2100 } };
  mbedtls_mpi P, Q, A, EP, EQ, XP, XQ, YP, YQ, RP, RQ;
  size_t m, e, k;
  mbedtls_mpi *all[] = { &P, &Q, &A, &EP, &EQ, &XP, &XQ, &YP, &YQ, &RP, &RQ };
  for (k = 0; k < sizeof all / sizeof *all; k++) mbedtls_mpi_init(all[k]);
  for (m = 0; m < sizeof nbits / sizeof *nbits; m++) {
    random_bits(&P, nbits[m][0]);
    random_bits(&Q, nbits[m][1]);
    ASSERT_OK(mbedtls_mpi_set_bit(&P, 0, 1));
    ASSERT_OK(mbedtls_mpi_set_bit(&Q, 0, 1));
    mbedtls_mpi_free(&RP);
    mbedtls_mpi_free(&RQ);
    for (e = 0; e < sizeof ebits / sizeof *ebits; e++) {
      for (k = 0; k < 4; k++) {
        random_bits(&EP, ebits[e][0]);
        random_bits(&EQ, ebits[e][1]);
        switch (k) {
        case 0: random_bits(&A, 2040); break;  /* above both, as in RSA */
        case 1: ASSERT_OK(mbedtls_mpi_lset(&A, 0)); break;
        case 2: ASSERT_OK(mbedtls_mpi_sub_int(&A, &P, 1)); break;
        default: random_bits(&A, 900); break;
        }
        reference(&YP, &A, &EP, &P);
        reference(&YQ, &A, &EQ, &Q);
        ASSERT_OK(aiolua_exp_mod2(&XP, &A, &EP, &P, &RP, &XQ, &EQ, &Q, &RQ));
        if (mbedtls_mpi_cmp_mpi(&XP, &YP) != 0 ||
            mbedtls_mpi_cmp_mpi(&XQ, &YQ) != 0)
          T_FAIL("moduli of %zu and %zu bits, exponents of %zu and %zu, "
                 "base %zu: differs from square-and-multiply", nbits[m][0],
                 nbits[m][1], ebits[e][0], ebits[e][1], k);
        ASSERT_OK(aiolua_exp_mod2(&XP, &A, &EP, &P, NULL, &XQ, &EQ, &Q, NULL));
        ASSERT(mbedtls_mpi_cmp_mpi(&XP, &YP) == 0);
        ASSERT(mbedtls_mpi_cmp_mpi(&XQ, &YQ) == 0);
        ASSERT_OK(mbedtls_mpi_copy(&XP, &A));  /* the result in the base */
        ASSERT_OK(aiolua_exp_mod2(&XP, &XP, &EP, &P, &RP, &XQ, &EQ, &Q, &RQ));
        ASSERT(mbedtls_mpi_cmp_mpi(&XP, &YP) == 0);
        ASSERT(mbedtls_mpi_cmp_mpi(&XQ, &YQ) == 0);
      }
    }
  }
  for (k = 0; k < sizeof all / sizeof *all; k++) mbedtls_mpi_free(all[k]);
}

/* mbedTLS's checks still come first */
TEST(expmod_refuses_bad_input) {
  mbedtls_mpi N, A, E, X;
  mbedtls_mpi_init(&N);
  mbedtls_mpi_init(&A);
  mbedtls_mpi_init(&E);
  mbedtls_mpi_init(&X);
  random_bits(&N, 1024);
  ASSERT_OK(mbedtls_mpi_set_bit(&N, 0, 0));  /* even */
  ASSERT_OK(mbedtls_mpi_lset(&A, 5));
  ASSERT_OK(mbedtls_mpi_lset(&E, 3));
  ASSERT_EQ(mbedtls_mpi_exp_mod(&X, &A, &E, &N, NULL),
            MBEDTLS_ERR_MPI_BAD_INPUT_DATA);
  ASSERT_OK(mbedtls_mpi_set_bit(&N, 0, 1));
  N.s = -1;
  ASSERT_EQ(mbedtls_mpi_exp_mod(&X, &A, &E, &N, NULL),
            MBEDTLS_ERR_MPI_BAD_INPUT_DATA);
  N.s = 1;
  E.s = -1;
  ASSERT_EQ(mbedtls_mpi_exp_mod(&X, &A, &E, &N, NULL),
            MBEDTLS_ERR_MPI_BAD_INPUT_DATA);
  mbedtls_mpi_free(&N);
  mbedtls_mpi_free(&A);
  mbedtls_mpi_free(&E);
  mbedtls_mpi_free(&X);
}

/* RSA-2048 (CRT halves of 16 limbs, the public modulus of 32) signs and
** verifies; a changed hash does not verify; mbedTLS's self-test passes */
TEST(expmod_rsa) {
  mbedtls_rsa_context rsa;
  unsigned char hash[32], sig[256];
  int i;
  mbedtls_rsa_init(&rsa, MBEDTLS_RSA_PKCS_V15, 0);
  ASSERT_OK(mbedtls_rsa_gen_key(&rsa, rng, NULL, 2048, 65537));
  ASSERT_OK(mbedtls_rsa_check_privkey(&rsa));
  for (i = 0; i < 8; i++) {
    rng(NULL, hash, sizeof hash);
    ASSERT_OK(mbedtls_rsa_pkcs1_sign(&rsa, rng, NULL, MBEDTLS_RSA_PRIVATE,
                                     MBEDTLS_MD_SHA256, 32, hash, sig));
    ASSERT_OK(mbedtls_rsa_pkcs1_verify(&rsa, NULL, NULL, MBEDTLS_RSA_PUBLIC,
                                       MBEDTLS_MD_SHA256, 32, hash, sig));
    hash[i] ^= 0x80;
    ASSERT(mbedtls_rsa_pkcs1_verify(&rsa, NULL, NULL, MBEDTLS_RSA_PUBLIC,
                                    MBEDTLS_MD_SHA256, 32, hash, sig) != 0);
  }
  mbedtls_rsa_free(&rsa);
  ASSERT_OK(mbedtls_rsa_self_test(0));
}

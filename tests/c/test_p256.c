/*
** test_p256.c: mbedTLS's P-256 as the program links it, with
** src/bindings/mbedtls_p256.patch (point multiplication in 64-bit limbs,
** src/bindings/mbedtls_p256.c).  The group mbedTLS loads for P-256 takes
** that path; the same group with its id cleared takes mbedTLS's generic
** comb code, and both must agree for the base point and other points, for
** scalars at the edges and random ones, in ECDSA and in ECDH.  Bad input
** is refused as before, and a failing RNG is reported.  (make test also
** runs these under valgrind, whose CPU has no ADX: that covers the C
** product the assembly replaces.)
*/
#include <mbedtls/ecdh.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>

#include "t.h"

static unsigned long long seed = 0x2545f4914f6cdd1dull;

static int rng(void *ctx, unsigned char *out, size_t n) {
  (void)ctx;
  t_xorshift_fill(&seed, out, n);
  return 0;
}

static int rng_calls;
static int counting_rng(void *ctx, unsigned char *out, size_t n) {
  rng_calls++;
  return rng(ctx, out, n);
}

#define RNG_BROKEN (-0x7f)
static int broken_rng(void *ctx, unsigned char *out, size_t n) {
  (void)ctx;
  (void)out;
  (void)n;
  return RNG_BROKEN;
}

/* fast: the group as loaded; ref: the same curve, generic code */
static void groups(mbedtls_ecp_group *fast, mbedtls_ecp_group *ref) {
  mbedtls_ecp_group_init(fast);
  mbedtls_ecp_group_init(ref);
  ASSERT_OK(mbedtls_ecp_group_load(fast, MBEDTLS_ECP_DP_SECP256R1));
  ASSERT_OK(mbedtls_ecp_group_load(ref, MBEDTLS_ECP_DP_SECP256R1));
  ref->id = MBEDTLS_ECP_DP_NONE;
}

/* the i-th test scalar in [1, n-1]: the edges first, then random ones */
static void scalar(const mbedtls_ecp_group *g, int i, mbedtls_mpi *m) {
  unsigned char b[32];
  switch (i) {
  case 0: ASSERT_OK(mbedtls_mpi_lset(m, 1)); return;
  case 1: ASSERT_OK(mbedtls_mpi_lset(m, 2)); return;
  case 2: ASSERT_OK(mbedtls_mpi_lset(m, 15)); return;   /* one window */
  case 3: ASSERT_OK(mbedtls_mpi_lset(m, 16)); return;   /* a zero window */
  case 4: ASSERT_OK(mbedtls_mpi_sub_int(m, &g->N, 1)); return;  /* -1 */
  case 5: ASSERT_OK(mbedtls_mpi_sub_int(m, &g->N, 2)); return;
  case 6:  /* 2^252: every window zero but the top one */
    ASSERT_OK(mbedtls_mpi_lset(m, 1));
    ASSERT_OK(mbedtls_mpi_shift_l(m, 252));
    return;
  case 7:  /* 2^252 - 1: every window 15 */
    ASSERT_OK(mbedtls_mpi_lset(m, 1));
    ASSERT_OK(mbedtls_mpi_shift_l(m, 252));
    ASSERT_OK(mbedtls_mpi_sub_int(m, m, 1));
    return;
  case 8:  /* (n+1)/2: its double wraps around to 1 */
    ASSERT_OK(mbedtls_mpi_add_int(m, &g->N, 1));
    ASSERT_OK(mbedtls_mpi_shift_r(m, 1));
    return;
  default:
    do {
      rng(NULL, b, sizeof b);
      ASSERT_OK(mbedtls_mpi_read_binary(m, b, sizeof b));
      ASSERT_OK(mbedtls_mpi_mod_mpi(m, m, &g->N));
    } while (mbedtls_mpi_cmp_int(m, 0) == 0);
  }
}

#define NSCALARS 160

TEST(p256_matches_generic) {
  mbedtls_ecp_group fast, ref;
  mbedtls_ecp_point r1, r2, q, a;
  mbedtls_mpi m, k;
  int i;
  groups(&fast, &ref);
  mbedtls_ecp_point_init(&r1);
  mbedtls_ecp_point_init(&r2);
  mbedtls_ecp_point_init(&q);
  mbedtls_ecp_point_init(&a);
  mbedtls_mpi_init(&m);
  mbedtls_mpi_init(&k);
  for (i = 0; i < NSCALARS; i++) {
    scalar(&fast, i, &m);
    /* m * G: the base point's table */
    ASSERT_OK(mbedtls_ecp_mul(&fast, &r1, &m, &fast.G, rng, NULL));
    ASSERT_OK(mbedtls_ecp_mul(&ref, &r2, &m, &ref.G, rng, NULL));
    if (mbedtls_ecp_point_cmp(&r1, &r2) != 0)
      T_FAIL("scalar %d: m * G differs from the generic code", i);
    ASSERT_OK(mbedtls_ecp_check_pubkey(&fast, &r1));

    /* m * Q for another point: the windowed ladder, with and without
    ** coordinates randomized by an RNG */
    scalar(&fast, NSCALARS - 1 - i, &k);
    ASSERT_OK(mbedtls_ecp_mul(&ref, &q, &k, &ref.G, rng, NULL));
    ASSERT_OK(mbedtls_ecp_mul(&fast, &r1, &m, &q, rng, NULL));
    ASSERT_OK(mbedtls_ecp_mul(&ref, &r2, &m, &q, rng, NULL));
    if (mbedtls_ecp_point_cmp(&r1, &r2) != 0)
      T_FAIL("scalar %d: m * Q differs from the generic code", i);
    ASSERT_OK(mbedtls_ecp_mul(&fast, &r1, &m, &q, NULL, NULL));
    ASSERT(mbedtls_ecp_point_cmp(&r1, &r2) == 0);

    /* the result may be the input point */
    ASSERT_OK(mbedtls_ecp_copy(&a, &q));
    ASSERT_OK(mbedtls_ecp_mul(&fast, &a, &m, &a, rng, NULL));
    ASSERT(mbedtls_ecp_point_cmp(&a, &r2) == 0);

    /* m * G + k * Q, as ECDSA verifies */
    ASSERT_OK(mbedtls_ecp_muladd(&fast, &r1, &m, &fast.G, &k, &q));
    ASSERT_OK(mbedtls_ecp_muladd(&ref, &r2, &m, &ref.G, &k, &q));
    if (mbedtls_ecp_point_cmp(&r1, &r2) != 0)
      T_FAIL("scalar %d: m * G + k * Q differs from the generic code", i);
  }

  /* a group whose G was changed after loading: m * G is then m times
  ** that point (the base point's table is only for the curve's G).  The
  ** reference is a fresh group: mbedTLS keeps a comb table for the G it
  ** first multiplied in the group. */
  scalar(&fast, 200, &m);
  ASSERT_OK(mbedtls_mpi_lset(&k, 2));
  ASSERT_OK(mbedtls_ecp_mul(&ref, &q, &k, &ref.G, rng, NULL));
  mbedtls_ecp_group_free(&fast);
  mbedtls_ecp_group_free(&ref);
  groups(&fast, &ref);
  mbedtls_ecp_point_init(&fast.G);  /* the loaded G is static data */
  mbedtls_ecp_point_init(&ref.G);
  ASSERT_OK(mbedtls_ecp_copy(&fast.G, &q));
  ASSERT_OK(mbedtls_ecp_copy(&ref.G, &q));
  ASSERT_OK(mbedtls_ecp_mul(&fast, &r1, &m, &fast.G, rng, NULL));
  ASSERT_OK(mbedtls_ecp_mul(&ref, &r2, &m, &ref.G, rng, NULL));
  ASSERT(mbedtls_ecp_point_cmp(&r1, &r2) == 0);
  mbedtls_ecp_point_free(&fast.G);  /* a loaded group does not free G */
  mbedtls_ecp_point_free(&ref.G);
  mbedtls_ecp_group_free(&fast);
  mbedtls_ecp_group_free(&ref);
  groups(&fast, &ref);

  /* (n - 1) * G is -G: the same x, and y = p - y(G) */
  scalar(&fast, 4, &m);
  ASSERT_OK(mbedtls_ecp_mul(&fast, &r1, &m, &fast.G, rng, NULL));
  ASSERT(mbedtls_mpi_cmp_mpi(&r1.X, &fast.G.X) == 0);
  ASSERT_OK(mbedtls_mpi_sub_mpi(&k, &fast.P, &fast.G.Y));
  ASSERT(mbedtls_mpi_cmp_mpi(&r1.Y, &k) == 0);
  ASSERT(mbedtls_mpi_cmp_int(&r1.Z, 1) == 0);

  mbedtls_ecp_point_free(&r1);
  mbedtls_ecp_point_free(&r2);
  mbedtls_ecp_point_free(&q);
  mbedtls_ecp_point_free(&a);
  mbedtls_mpi_free(&m);
  mbedtls_mpi_free(&k);
  mbedtls_ecp_group_free(&fast);
  mbedtls_ecp_group_free(&ref);
}

/* signatures made on one path verify on the other, a changed hash does
** not; both sides of an ECDH exchange agree */
TEST(p256_ecdsa_and_ecdh) {
  mbedtls_ecp_group fast, ref;
  mbedtls_ecp_point qa, qb;
  mbedtls_mpi da, db, r, s, za, zb;
  unsigned char hash[32];
  int i;
  groups(&fast, &ref);
  mbedtls_ecp_point_init(&qa);
  mbedtls_ecp_point_init(&qb);
  mbedtls_mpi_init(&da);
  mbedtls_mpi_init(&db);
  mbedtls_mpi_init(&r);
  mbedtls_mpi_init(&s);
  mbedtls_mpi_init(&za);
  mbedtls_mpi_init(&zb);
  for (i = 0; i < 20; i++) {
    mbedtls_ecp_group *g1 = i % 2 ? &fast : &ref, *g2 = i % 2 ? &ref : &fast;
    ASSERT_OK(mbedtls_ecp_gen_keypair(g1, &da, &qa, rng, NULL));
    rng(NULL, hash, sizeof hash);
    ASSERT_OK(mbedtls_ecdsa_sign(g1, &r, &s, &da, hash, sizeof hash, rng,
                                 NULL));
    ASSERT_OK(mbedtls_ecdsa_verify(g2, hash, sizeof hash, &qa, &r, &s));
    ASSERT_OK(mbedtls_ecdsa_verify(g1, hash, sizeof hash, &qa, &r, &s));
    hash[i % 32] ^= 1;
    ASSERT_EQ(mbedtls_ecdsa_verify(&fast, hash, sizeof hash, &qa, &r, &s),
              MBEDTLS_ERR_ECP_VERIFY_FAILED);

    ASSERT_OK(mbedtls_ecp_gen_keypair(g2, &db, &qb, rng, NULL));
    ASSERT_OK(mbedtls_ecdh_compute_shared(g1, &za, &qb, &da, rng, NULL));
    ASSERT_OK(mbedtls_ecdh_compute_shared(g2, &zb, &qa, &db, rng, NULL));
    ASSERT(mbedtls_mpi_cmp_mpi(&za, &zb) == 0);
  }
  mbedtls_ecp_point_free(&qa);
  mbedtls_ecp_point_free(&qb);
  mbedtls_mpi_free(&da);
  mbedtls_mpi_free(&db);
  mbedtls_mpi_free(&r);
  mbedtls_mpi_free(&s);
  mbedtls_mpi_free(&za);
  mbedtls_mpi_free(&zb);
  mbedtls_ecp_group_free(&fast);
  mbedtls_ecp_group_free(&ref);
}

/* mbedTLS's own checks still come first, and an RNG's failure is the
** caller's error */
TEST(p256_refuses_bad_input) {
  mbedtls_ecp_group fast, ref;
  mbedtls_ecp_point r, q;
  mbedtls_mpi m;
  groups(&fast, &ref);
  mbedtls_ecp_point_init(&r);
  mbedtls_ecp_point_init(&q);
  mbedtls_mpi_init(&m);

  ASSERT_OK(mbedtls_mpi_lset(&m, 0));
  ASSERT_EQ(mbedtls_ecp_mul(&fast, &r, &m, &fast.G, rng, NULL),
            MBEDTLS_ERR_ECP_INVALID_KEY);
  ASSERT_OK(mbedtls_mpi_copy(&m, &fast.N));
  ASSERT_EQ(mbedtls_ecp_mul(&fast, &r, &m, &fast.G, rng, NULL),
            MBEDTLS_ERR_ECP_INVALID_KEY);

  /* a point off the curve, and one not in affine form */
  ASSERT_OK(mbedtls_mpi_lset(&m, 7));
  ASSERT_OK(mbedtls_ecp_copy(&q, &fast.G));
  ASSERT_OK(mbedtls_mpi_add_int(&q.Y, &q.Y, 1));
  ASSERT_EQ(mbedtls_ecp_mul(&fast, &r, &m, &q, rng, NULL),
            MBEDTLS_ERR_ECP_INVALID_KEY);
  ASSERT_OK(mbedtls_ecp_copy(&q, &fast.G));
  ASSERT_OK(mbedtls_mpi_lset(&q.Z, 2));
  ASSERT_EQ(mbedtls_ecp_mul(&fast, &r, &m, &q, rng, NULL),
            MBEDTLS_ERR_ECP_INVALID_KEY);

  /* the new path asks the RNG once, for the factor that randomizes a
  ** point's coordinates, and not at all for G's fixed table (mbedTLS's
  ** generic code draws several times for both); so its failure is
  ** reported for a point other than G */
  rng_calls = 0;
  ASSERT_OK(mbedtls_ecp_mul(&fast, &q, &m, &fast.G, counting_rng, NULL));
  ASSERT_EQ(rng_calls, 0);
  ASSERT_OK(mbedtls_ecp_mul(&fast, &r, &m, &q, counting_rng, NULL));
  ASSERT_EQ(rng_calls, 1);
  ASSERT_EQ(mbedtls_ecp_mul(&fast, &r, &m, &q, broken_rng, NULL),
            RNG_BROKEN);

  mbedtls_ecp_point_free(&r);
  mbedtls_ecp_point_free(&q);
  mbedtls_mpi_free(&m);
  mbedtls_ecp_group_free(&fast);
  mbedtls_ecp_group_free(&ref);
}

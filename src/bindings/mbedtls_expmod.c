/*
** mbedtls_expmod.c: modular exponentiation for the program's own mbedTLS
** build (issue 12): RSA's private and public operations and DHM.
** Makefile copies this file into mbedTLS's library directory as
** aiolua_expmod.c, and src/bindings/mbedtls_expmod.patch includes it into
** bignum.c, where mbedtls_mpi_exp_mod() hands it, once mbedTLS has checked
** its arguments, every modulus of 16 or 32 limbs (RSA-2048 and RSA-4096's
** halves, RSA-2048's modulus) on an x86-64 CPU with BMI2 and ADX.  Other
** sizes and CPUs keep mbedTLS's own code.
**
** mbedTLS 2.28 multiplies in two passes per limb (the product, then the
** reduction), each a chain of one carry per limb, and hides its sliding
** window's table reads by copying every entry through
** mbedtls_mpi_safe_cond_assign before every multiplication and squaring,
** which keeps its window at 2 bits.  Here a Montgomery product is rows in
** assembly, as OpenSSL's bn_mulx4x_mont does: MULX leaves the flags
** alone, so a row keeps two carry chains going at once (ADCX and ADOX).
** The exponent is read in fixed windows of up to 5 bits: every window is
** the same squarings, one read of the whole table with masks, and one
** product, whatever its bits -- a regular trace, where mbedTLS's sliding
** window showed where its windows fell.  Results are those of mbedTLS's
** code, including its R^2 mod N cache (prec_RR) and the sign of a negative
** base; tests/c/test_expmod.c compares them with plain square-and-multiply.
*/
#if defined(__SIZEOF_INT128__) && defined(MBEDTLS_HAVE_INT64) && \
    defined(__x86_64__) && defined(__GNUC__)
#define AIOLUA_EXPMOD 1

#define AIOLUA_EXPMOD_DECLINED 1  /* mbedTLS's own code does it */

typedef unsigned __int128 expmod_u128;
typedef uint64_t expmod_limb;

#include <cpuid.h>

/* t[0..n+1] += a[0..n-1] * b, with t[n+1] 0 on entry: the row step j
** adds the previous high half (ADCX) and t[j] (ADOX) to the low one */
#define EXPMOD_STEP(j, hin, hout)                                     \
    "mulx " #j "*8(%[a]), %[lo], %[" #hout "]\n\t"                   \
    "adcx %[" #hin "], %[lo]\n\t"                                     \
    "adox " #j "*8(%[t]), %[lo]\n\t"                                  \
    "mov %[lo], " #j "*8(%[t])\n\t"
#define EXPMOD_STEP2(j, k) EXPMOD_STEP(j, h0, h1) EXPMOD_STEP(k, h1, h0)
#define EXPMOD_STEP16(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p)      \
    EXPMOD_STEP2(a, b) EXPMOD_STEP2(c, d) EXPMOD_STEP2(e, f)             \
    EXPMOD_STEP2(g, h) EXPMOD_STEP2(i, j) EXPMOD_STEP2(k, l)             \
    EXPMOD_STEP2(m, n) EXPMOD_STEP2(o, p)
/* the last high half, and both carries, into t[n] and t[n+1] */
#define EXPMOD_END(n, n1)                                             \
    "mov $0, %k[lo]\n\t"                                              \
    "adcx %[lo], %[h0]\n\t"                                           \
    "adox " #n "*8(%[t]), %[h0]\n\t"                                  \
    "mov %[h0], " #n "*8(%[t])\n\t"                                   \
    "adox %[lo], %[lo]\n\t"                                           \
    "add %[lo], " #n1 "*8(%[t])\n\t"

static inline void expmod_row16(expmod_limb *t, const expmod_limb *a,
                                expmod_limb b)
{
    expmod_limb lo, h0, h1;
    __asm__ volatile(
        "xor %k[h0], %k[h0]\n\t"  /* h0 = 0, CF = OF = 0 */
        EXPMOD_STEP16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        EXPMOD_END(16, 17)
        : [lo] "=&r" (lo), [h0] "=&r" (h0), [h1] "=&r" (h1), "+d" (b)
        : [a] "r" (a), [t] "r" (t)
        : "cc", "memory");
}

static inline void expmod_row32(expmod_limb *t, const expmod_limb *a,
                                expmod_limb b)
{
    expmod_limb lo, h0, h1;
    __asm__ volatile(
        "xor %k[h0], %k[h0]\n\t"
        EXPMOD_STEP16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        EXPMOD_STEP16(16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
                      29, 30, 31)
        EXPMOD_END(32, 33)
        : [lo] "=&r" (lo), [h0] "=&r" (h0), [h1] "=&r" (h1), "+d" (b)
        : [a] "r" (a), [t] "r" (t)
        : "cc", "memory");
}

/* r = a * b / 2^(64n) mod N for a, b < N, n = 16 or 32, t of 2n + 2
** limbs (r may be a or b): each pair of rows adds a * b[i] and the m * N
** that zeroes the lowest limb, and the window d moves up past that zero */
static inline __attribute__((always_inline)) void
expmod_mulx_n(expmod_limb *r, const expmod_limb *a, const expmod_limb *b,
              const expmod_limb *np, expmod_limb mm, size_t n,
              expmod_limb *t)
{
    expmod_limb *d = t, borrow = 0, keep;
    expmod_u128 x;
    size_t i, j;
    memset(t, 0, (2 * n + 2) * sizeof *t);
    for (i = 0; i < n; i++, d++) {
        if (n == 16) {
            expmod_row16(d, a, b[i]);
            expmod_row16(d, np, d[0] * mm);
        } else {
            expmod_row32(d, a, b[i]);
            expmod_row32(d, np, d[0] * mm);
        }
    }
    for (j = 0; j < n; j++) {  /* d < 2N: subtract N unless it borrows */
        x = (expmod_u128) d[j] - np[j] - borrow;
        borrow = (expmod_limb) (x >> 64) & 1;
        r[j] = d[j];
        d[j] = (expmod_limb) x;
    }
    keep = 0 - (expmod_limb) (d[n] < borrow);
    for (j = 0; j < n; j++) {
        r[j] = (r[j] & keep) | (d[j] & ~keep);
    }
}

static void expmod_mulx16(expmod_limb *r, const expmod_limb *a,
                          const expmod_limb *b, const expmod_limb *np,
                          expmod_limb mm, expmod_limb *t)
{
    expmod_mulx_n(r, a, b, np, mm, 16, t);
}

static void expmod_mulx32(expmod_limb *r, const expmod_limb *a,
                          const expmod_limb *b, const expmod_limb *np,
                          expmod_limb mm, expmod_limb *t)
{
    expmod_mulx_n(r, a, b, np, mm, 32, t);
}

/* 1 if the CPU has BMI2 (MULX) and ADX (ADCX, ADOX); asked once */
static int expmod_have_mulx(void)
{
    static int known;  /* 0 unknown, 1 no, 2 yes */
    int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (k == 0) {
        unsigned eax, ebx = 0, ecx, edx;
        k = 1;
        if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) &&
            (ebx & (1u << 8)) && (ebx & (1u << 19))) {
            k = 2;
        }
        __atomic_store_n(&known, k, __ATOMIC_RELAXED);
    }
    return k == 2;
}

typedef void (*expmod_mul_fn)(expmod_limb *, const expmod_limb *,
                              const expmod_limb *, const expmod_limb *,
                              expmod_limb, expmod_limb *);

/* the product for n limbs, or NULL: mbedTLS's own code then does it */
static expmod_mul_fn expmod_pick(size_t n)
{
    if ((n == 16 || n == 32) && expmod_have_mulx()) {
        return n == 16 ? expmod_mulx16 : expmod_mulx32;
    }
    return NULL;
}

/* r = tab[idx] of `size` entries of n limbs, reading every entry */
static void expmod_select(expmod_limb *r, const expmod_limb *tab,
                          size_t size, size_t idx, size_t n)
{
    size_t k, j;
    expmod_limb mask;
    memset(r, 0, n * sizeof *r);
    for (k = 0; k < size; k++) {
        mask = 0 - (expmod_limb) ((((expmod_limb) (k ^ idx)) - 1) >> 63);
        for (j = 0; j < n; j++) {
            r[j] |= tab[k * n + j] & mask;
        }
    }
}

/* the w bits of E from bit `pos` up (bits past E's top are 0) */
static size_t expmod_window(const mbedtls_mpi *E, size_t pos, size_t w)
{
    size_t v = 0, i;
    for (i = 0; i < w; i++) {
        v |= (size_t) mbedtls_mpi_get_bit(E, pos + i) << i;
    }
    return v;
}

/* r = v, a value below N, in n limbs */
static void expmod_load(expmod_limb *r, const mbedtls_mpi *v, size_t n)
{
    size_t k = v->n < n ? v->n : n;
    memcpy(r, v->p, k * sizeof *r);
    memset(r + k, 0, (n - k) * sizeof *r);
}

/* X = A^E mod N as mbedtls_mpi_exp_mod(), whose checks have passed (N odd
** and positive, E not negative, sizes within MBEDTLS_MPI_MAX_BITS) */
static int aiolua_exp_mod(mbedtls_mpi *X, const mbedtls_mpi *A,
                          const mbedtls_mpi *E, const mbedtls_mpi *N,
                          mbedtls_mpi *prec_RR)
{
    int ret = 0, neg;
    size_t n = N->n, bits, w, size, windows, i, k, len;
    expmod_limb mm, *buf, *np, *rr, *x, *s, *t, *tab;
    expmod_mul_fn f = expmod_pick(n);
    mbedtls_mpi RR, Apos;

    if (f == NULL) {
        return AIOLUA_EXPMOD_DECLINED;
    }
    bits = mbedtls_mpi_bitlen(E);
    w = bits > 239 ? 5 : bits > 79 ? 4 : bits > 23 ? 3 : 2;
    size = (size_t) 1 << w;
    windows = (bits + w - 1) / w;

    /* N, R^2 mod N, the result, a scratch entry, the product's 2n + 2
     * limbs, and the table: one allocation */
    len = (6 + size) * n + 2;
    buf = mbedtls_calloc(len, sizeof *buf);
    if (buf == NULL) {
        return MBEDTLS_ERR_MPI_ALLOC_FAILED;
    }
    np = buf;
    rr = np + n;
    x = rr + n;
    s = x + n;
    t = s + n;
    tab = t + 2 * n + 2;
    memcpy(np, N->p, n * sizeof *np);
    mpi_montg_init(&mm, N);
    mbedtls_mpi_init(&RR);
    mbedtls_mpi_init(&Apos);

    /* R^2 mod N for R = 2^(64n), as mbedTLS computes and caches it */
    if (prec_RR != NULL && prec_RR->p != NULL) {
        expmod_load(rr, prec_RR, n);
    } else {
        MBEDTLS_MPI_CHK(mbedtls_mpi_lset(&RR, 1));
        MBEDTLS_MPI_CHK(mbedtls_mpi_shift_l(&RR, n * 2 * biL));
        MBEDTLS_MPI_CHK(mbedtls_mpi_mod_mpi(&RR, &RR, N));
        expmod_load(rr, &RR, n);
        if (prec_RR != NULL) {
            memcpy(prec_RR, &RR, sizeof(mbedtls_mpi));  /* now its owner */
            mbedtls_mpi_init(&RR);
        }
    }

    /* |A| mod N */
    neg = (A->s == -1);
    MBEDTLS_MPI_CHK(mbedtls_mpi_copy(&Apos, A));
    Apos.s = 1;
    if (mbedtls_mpi_cmp_mpi(&Apos, N) >= 0) {
        MBEDTLS_MPI_CHK(mbedtls_mpi_mod_mpi(&Apos, &Apos, N));
    }
    expmod_load(s, &Apos, n);

    /* tab[k] = A^k R mod N */
    memset(x, 0, n * sizeof *x);
    x[0] = 1;
    f(tab, rr, x, np, mm, t);           /* R mod N */
    f(tab + n, s, rr, np, mm, t);       /* A R mod N */
    for (k = 2; k < size; k++) {
        f(tab + k * n, tab + (k - 1) * n, tab + n, np, mm, t);
    }

    /* the windows from the top: w squarings, one read, one product */
    memcpy(x, tab, n * sizeof *x);
    for (i = windows; i-- > 0;) {
        if (i + 1 < windows) {
            for (k = 0; k < w; k++) {
                f(x, x, x, np, mm, t);
            }
        }
        expmod_select(s, tab, size, expmod_window(E, i * w, w), n);
        f(x, x, s, np, mm, t);
    }

    /* out of Montgomery form */
    memset(s, 0, n * sizeof *s);
    s[0] = 1;
    f(x, x, s, np, mm, t);

    MBEDTLS_MPI_CHK(mbedtls_mpi_grow(X, n));
    memcpy(X->p, x, n * sizeof *x);
    memset(X->p + n, 0, (X->n - n) * ciL);
    X->s = 1;
    if (neg && E->n != 0 && (E->p[0] & 1) != 0) {
        X->s = -1;
        MBEDTLS_MPI_CHK(mbedtls_mpi_add_mpi(X, N, X));
    }

cleanup:
    mbedtls_platform_zeroize(buf, len * sizeof *buf);
    mbedtls_free(buf);
    mbedtls_mpi_free(&RR);
    mbedtls_mpi_free(&Apos);
    return ret;
}

#endif /* x86-64, 64-bit limbs, unsigned __int128 */

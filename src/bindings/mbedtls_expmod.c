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
**
** The patch also has mbedtls_rsa_private() compute its two CRT halves in
** one call, aiolua_exp_mod2(), which on CPUs with AVX-512 IFMA does both
** at once in 52-bit digits (below); elsewhere it is the two calls.
*/
/* the two exponentiations one after the other, A read before it changes */
static int expmod_two_calls(mbedtls_mpi *XP, const mbedtls_mpi *A,
                            const mbedtls_mpi *EP, const mbedtls_mpi *P,
                            mbedtls_mpi *RP, mbedtls_mpi *XQ,
                            const mbedtls_mpi *EQ, const mbedtls_mpi *Q,
                            mbedtls_mpi *RQ)
{
    int ret = mbedtls_mpi_exp_mod(XQ, A, EQ, Q, RQ);
    return ret != 0 ? ret : mbedtls_mpi_exp_mod(XP, A, EP, P, RP);
}

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

/* RR = R^2 mod N for R = 2^(64 N->n), from mbedTLS's cache prec_RR or
** computed as mbedTLS does and then kept in the cache (when there is one) */
static int expmod_rr(mbedtls_mpi *RR, const mbedtls_mpi *N,
                     mbedtls_mpi *prec_RR)
{
    int ret = 0;
    if (prec_RR != NULL && prec_RR->p != NULL) {
        return mbedtls_mpi_copy(RR, prec_RR);
    }
    MBEDTLS_MPI_CHK(mbedtls_mpi_lset(RR, 1));
    MBEDTLS_MPI_CHK(mbedtls_mpi_shift_l(RR, N->n * 2 * biL));
    MBEDTLS_MPI_CHK(mbedtls_mpi_mod_mpi(RR, RR, N));
    if (prec_RR != NULL) {
        MBEDTLS_MPI_CHK(mbedtls_mpi_copy(prec_RR, RR));
    }
cleanup:
    return ret;
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

    MBEDTLS_MPI_CHK(expmod_rr(&RR, N, prec_RR));
    expmod_load(rr, &RR, n);

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

/*
** RSA's two halves at once with AVX-512 IFMA (issue 12), for 1024-bit
** primes (RSA-2048), on CPUs that have it: src/bindings/mbedtls_expmod.patch
** has mbedtls_rsa_private() call aiolua_exp_mod2() for T^DP mod P and
** T^DQ mod Q.  Numbers are 20 digits of 52 bits in three vectors of eight
** 64-bit lanes; VPMADD52LUQ/HUQ add the low and high 52 bits of digit
** products to the lanes, and an almost-Montgomery product (Gueron and
** Krasnov; OpenSSL's rsaz-avx512) takes 20 rounds: add a * b[i] and y * N,
** where y clears the lowest digit, then move every lane down one.  Results
** stay below 2N between products (R = 2^1040, N < 2^1024), so only the
** last one is reduced.  One round waits on the last (the lowest digit
** decides y), so the two halves' rounds are interleaved.  Windows, table
** reads and the R^2 cache are as in aiolua_exp_mod().
*/
#include <immintrin.h>

#define IFMA_MASK52 0xfffffffffffffull

/* 1 if the CPU and the OS have AVX-512F and IFMA (and keep ZMM state) */
static int ifma_have(void)
{
    static int known;  /* 0 unknown, 1 no, 2 yes */
    int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (k == 0) {
        unsigned eax, ebx = 0, ecx = 0, edx;
        k = 1;
        if (__get_cpuid_count(1, 0, &eax, &ebx, &ecx, &edx) &&
            (ecx & (1u << 27))) {  /* OSXSAVE: XGETBV works */
            unsigned lo, hi;
            __asm__("xgetbv" : "=a" (lo), "=d" (hi) : "c" (0));
            if ((lo & 0xe6) == 0xe6 &&
                __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) &&
                (ebx & (1u << 16)) && (ebx & (1u << 21))) {
                k = 2;
            }
        }
        __atomic_store_n(&known, k, __ATOMIC_RELAXED);
    }
    return k == 2;
}

/* 16 limbs -> 20 digits of 52 bits, lanes 20..23 zero */
static void ifma_to52(uint64_t d[24], const expmod_limb x[16])
{
    unsigned k, bit, l, off;
    for (k = 0; k < 24; k++) {
        d[k] = 0;
        if (k < 20) {
            bit = 52 * k;
            l = bit / 64;
            off = bit % 64;
            d[k] = x[l] >> off;
            if (off > 12 && l + 1 < 16) {
                d[k] |= x[l + 1] << (64 - off);
            }
            d[k] &= IFMA_MASK52;
        }
    }
}

/* 20 digits of 52 bits -> 17 limbs */
static void ifma_from52(expmod_limb x[17], const uint64_t d[24])
{
    unsigned k, bit, l, off;
    memset(x, 0, 17 * sizeof *x);
    for (k = 0; k < 20; k++) {
        bit = 52 * k;
        l = bit / 64;
        off = bit % 64;
        x[l] |= d[k] << off;
        if (off > 12) {
            x[l + 1] |= d[k] >> (64 - off);
        }
    }
}

/* lanes back to digits below 2^52 (the value is below 2^1040) */
static void ifma_normalize(uint64_t r[24])
{
    uint64_t carry = 0, v;
    int k;
    for (k = 0; k < 20; k++) {
        v = r[k] + carry;
        r[k] = v & IFMA_MASK52;
        carry = v >> 52;
    }
}

/* one side of the interleaved product: its vectors and constants */
typedef struct {
    __m512i a0, a1, a2, m0, m1, m2, x0, x1, x2;
    const uint64_t *a, *b, *m;
    uint64_t k0;
} ifma_side;

#define IFMA_ROUND(s, i)                                                 \
    do {                                                                 \
        uint64_t bi_ = (s).b[i], t_, y_, c_;                             \
        __m512i B_ = _mm512_set1_epi64((long long) bi_), Y_;             \
        t_ = (uint64_t) _mm_cvtsi128_si64(_mm512_castsi512_si128((s).x0)) \
             + (((s).a[0] * bi_) & IFMA_MASK52);                         \
        y_ = (t_ * (s).k0) & IFMA_MASK52;                                \
        c_ = (t_ + (((s).m[0] * y_) & IFMA_MASK52)) >> 52;               \
        Y_ = _mm512_set1_epi64((long long) y_);                          \
        (s).x0 = _mm512_madd52lo_epu64((s).x0, (s).a0, B_);              \
        (s).x1 = _mm512_madd52lo_epu64((s).x1, (s).a1, B_);              \
        (s).x2 = _mm512_madd52lo_epu64((s).x2, (s).a2, B_);              \
        (s).x0 = _mm512_madd52lo_epu64((s).x0, (s).m0, Y_);              \
        (s).x1 = _mm512_madd52lo_epu64((s).x1, (s).m1, Y_);              \
        (s).x2 = _mm512_madd52lo_epu64((s).x2, (s).m2, Y_);              \
        (s).x0 = _mm512_alignr_epi64((s).x1, (s).x0, 1);                 \
        (s).x1 = _mm512_alignr_epi64((s).x2, (s).x1, 1);                 \
        (s).x2 = _mm512_alignr_epi64(_mm512_setzero_si512(), (s).x2, 1); \
        (s).x0 = _mm512_add_epi64((s).x0,                                \
                                  _mm512_maskz_set1_epi64(1, (long long) c_)); \
        (s).x0 = _mm512_madd52hi_epu64((s).x0, (s).a0, B_);              \
        (s).x1 = _mm512_madd52hi_epu64((s).x1, (s).a1, B_);              \
        (s).x2 = _mm512_madd52hi_epu64((s).x2, (s).a2, B_);              \
        (s).x0 = _mm512_madd52hi_epu64((s).x0, (s).m0, Y_);              \
        (s).x1 = _mm512_madd52hi_epu64((s).x1, (s).m1, Y_);              \
        (s).x2 = _mm512_madd52hi_epu64((s).x2, (s).m2, Y_);              \
    } while (0)

__attribute__((target("avx512f,avx512ifma")))
static void ifma_side_load(ifma_side *s, const uint64_t *a, const uint64_t *b,
                           const uint64_t *m, uint64_t k0)
{
    s->a = a;
    s->b = b;
    s->m = m;
    s->k0 = k0;
    s->a0 = _mm512_loadu_si512((const void *) a);
    s->a1 = _mm512_loadu_si512((const void *) (a + 8));
    s->a2 = _mm512_loadu_si512((const void *) (a + 16));
    s->m0 = _mm512_loadu_si512((const void *) m);
    s->m1 = _mm512_loadu_si512((const void *) (m + 8));
    s->m2 = _mm512_loadu_si512((const void *) (m + 16));
    s->x0 = s->x1 = s->x2 = _mm512_setzero_si512();
}

__attribute__((target("avx512f,avx512ifma")))
static void ifma_side_store(uint64_t *r, const ifma_side *s)
{
    _mm512_storeu_si512((void *) r, s->x0);
    _mm512_storeu_si512((void *) (r + 8), s->x1);
    _mm512_storeu_si512((void *) (r + 16), s->x2);
    ifma_normalize(r);
}

/* ra = aa * ba / 2^1040 mod ma (below 2 ma), and the same for the second
** side; inputs below 2 m in normalized digits; outputs may be inputs */
__attribute__((target("avx512f,avx512ifma")))
static void ifma_amm2(uint64_t *ra, const uint64_t *aa, const uint64_t *ba,
                      const uint64_t *ma, uint64_t ka,
                      uint64_t *rb, const uint64_t *ab, const uint64_t *bb,
                      const uint64_t *mb, uint64_t kb)
{
    ifma_side p, q;
    int i;
    ifma_side_load(&p, aa, ba, ma, ka);
    ifma_side_load(&q, ab, bb, mb, kb);
    for (i = 0; i < 20; i++) {
        IFMA_ROUND(p, i);
        IFMA_ROUND(q, i);
    }
    ifma_side_store(ra, &p);
    ifma_side_store(rb, &q);
}

/* r = tab[idx] of `size` entries of 24 lanes, reading every entry */
__attribute__((target("avx512f")))
static void ifma_select(uint64_t *r, const uint64_t *tab, size_t size,
                        size_t idx)
{
    __m512i r0 = _mm512_setzero_si512(), r1 = r0, r2 = r0, m;
    size_t k;
    for (k = 0; k < size; k++, tab += 24) {
        m = _mm512_set1_epi64((long long) (0 - (((uint64_t) (k ^ idx) - 1) >> 63)));
        r0 = _mm512_or_si512(r0, _mm512_and_si512(m, _mm512_loadu_si512((const void *) tab)));
        r1 = _mm512_or_si512(r1, _mm512_and_si512(m, _mm512_loadu_si512((const void *) (tab + 8))));
        r2 = _mm512_or_si512(r2, _mm512_and_si512(m, _mm512_loadu_si512((const void *) (tab + 16))));
    }
    _mm512_storeu_si512((void *) r, r0);
    _mm512_storeu_si512((void *) (r + 8), r1);
    _mm512_storeu_si512((void *) (r + 16), r2);
}

/* one half: its modulus and numbers in digits */
typedef struct {
    uint64_t n[24], x[24], s[24], one[24], *tab;
    expmod_limb np[16], mm;
    size_t windows;
} ifma_half;

/* the half's R^2 (2^2048 mod N as mbedTLS caches it) times 2^32 mod N, and
** A mod N, as digits; 0 or an mbedTLS error */
static int ifma_half_init(ifma_half *h, const mbedtls_mpi *A,
                          const mbedtls_mpi *N, mbedtls_mpi *prec_RR,
                          uint64_t *rr52, uint64_t *a52)
{
    int ret = 0;
    mbedtls_mpi T;
    expmod_limb limbs[16];
    mbedtls_mpi_init(&T);
    MBEDTLS_MPI_CHK(expmod_rr(&T, N, prec_RR));
    MBEDTLS_MPI_CHK(mbedtls_mpi_shift_l(&T, 32));  /* R = 2^1040 here */
    MBEDTLS_MPI_CHK(mbedtls_mpi_mod_mpi(&T, &T, N));
    expmod_load(limbs, &T, 16);
    ifma_to52(rr52, limbs);
    MBEDTLS_MPI_CHK(mbedtls_mpi_mod_mpi(&T, A, N));
    expmod_load(limbs, &T, 16);
    ifma_to52(a52, limbs);
    memcpy(h->np, N->p, 16 * sizeof(expmod_limb));
    ifma_to52(h->n, h->np);
    mpi_montg_init(&h->mm, N);
    memset(h->one, 0, sizeof h->one);
    h->one[0] = 1;
cleanup:
    mbedtls_mpi_free(&T);
    return ret;
}

/* X = the half's result: out of Montgomery form, below N */
static int ifma_half_result(ifma_half *h, mbedtls_mpi *X)
{
    int ret = 0;
    expmod_limb r[17], d[16], borrow = 0, keep;
    expmod_u128 v;
    size_t j;
    ifma_from52(r, h->x);  /* at most N */
    for (j = 0; j < 16; j++) {
        v = (expmod_u128) r[j] - h->np[j] - borrow;
        borrow = (expmod_limb) (v >> 64) & 1;
        d[j] = (expmod_limb) v;
    }
    keep = 0 - (expmod_limb) (r[16] < borrow);
    for (j = 0; j < 16; j++) {
        r[j] = (r[j] & keep) | (d[j] & ~keep);
    }
    MBEDTLS_MPI_CHK(mbedtls_mpi_grow(X, 16));
    memcpy(X->p, r, 16 * sizeof *r);
    memset(X->p + 16, 0, (X->n - 16) * ciL);
    X->s = 1;
cleanup:
    mbedtls_platform_zeroize(r, sizeof r);
    mbedtls_platform_zeroize(d, sizeof d);
    return ret;
}

/* XP = A^EP mod P and XQ = A^EQ mod Q (XQ is not A; XP may be):
** interleaved with IFMA for 16-limb P and Q, else two
** mbedtls_mpi_exp_mod() calls */
int aiolua_exp_mod2(mbedtls_mpi *XP, const mbedtls_mpi *A,
                    const mbedtls_mpi *EP, const mbedtls_mpi *P,
                    mbedtls_mpi *RP, mbedtls_mpi *XQ,
                    const mbedtls_mpi *EQ, const mbedtls_mpi *Q,
                    mbedtls_mpi *RQ)
{
    int ret = 0;
    ifma_half hp, hq;
    uint64_t *buf = NULL, rrp[24], rrq[24], ap[24], aq[24];
    size_t windows, i, k, bp, bq;
    const size_t w = 5, size = 32;

    if (!ifma_have() || P->n != 16 || Q->n != 16 || P->s != 1 ||
        Q->s != 1 || (P->p[0] & 1) == 0 || (Q->p[0] & 1) == 0 ||
        A->s != 1 || EP->s != 1 || EQ->s != 1 ||
        mbedtls_mpi_bitlen(P) < 1000 || mbedtls_mpi_bitlen(Q) < 1000 ||
        (bp = mbedtls_mpi_bitlen(EP)) > MBEDTLS_MPI_MAX_BITS ||
        (bq = mbedtls_mpi_bitlen(EQ)) > MBEDTLS_MPI_MAX_BITS) {
        return expmod_two_calls(XP, A, EP, P, RP, XQ, EQ, Q, RQ);
    }
    windows = ((bp > bq ? bp : bq) + w - 1) / w;
    buf = mbedtls_calloc(2 * size * 24, sizeof *buf);
    if (buf == NULL) {
        return MBEDTLS_ERR_MPI_ALLOC_FAILED;
    }
    hp.tab = buf;
    hq.tab = buf + size * 24;
    MBEDTLS_MPI_CHK(ifma_half_init(&hp, A, P, RP, rrp, ap));
    MBEDTLS_MPI_CHK(ifma_half_init(&hq, A, Q, RQ, rrq, aq));

    /* tab[k] = A^k R mod N, below 2N */
    ifma_amm2(hp.tab, rrp, hp.one, hp.n, hp.mm & IFMA_MASK52,
              hq.tab, rrq, hq.one, hq.n, hq.mm & IFMA_MASK52);
    ifma_amm2(hp.tab + 24, ap, rrp, hp.n, hp.mm & IFMA_MASK52,
              hq.tab + 24, aq, rrq, hq.n, hq.mm & IFMA_MASK52);
    for (k = 2; k < size; k++) {
        ifma_amm2(hp.tab + k * 24, hp.tab + (k - 1) * 24, hp.tab + 24, hp.n,
                  hp.mm & IFMA_MASK52,
                  hq.tab + k * 24, hq.tab + (k - 1) * 24, hq.tab + 24, hq.n,
                  hq.mm & IFMA_MASK52);
    }

    /* the windows from the top, both exponents side by side (the shorter
     * one's top windows are 0: products by 1) */
    memcpy(hp.x, hp.tab, sizeof hp.x);
    memcpy(hq.x, hq.tab, sizeof hq.x);
    for (i = windows; i-- > 0;) {
        if (i + 1 < windows) {
            for (k = 0; k < w; k++) {
                ifma_amm2(hp.x, hp.x, hp.x, hp.n, hp.mm & IFMA_MASK52,
                          hq.x, hq.x, hq.x, hq.n, hq.mm & IFMA_MASK52);
            }
        }
        ifma_select(hp.s, hp.tab, size, expmod_window(EP, i * w, w));
        ifma_select(hq.s, hq.tab, size, expmod_window(EQ, i * w, w));
        ifma_amm2(hp.x, hp.x, hp.s, hp.n, hp.mm & IFMA_MASK52,
                  hq.x, hq.x, hq.s, hq.n, hq.mm & IFMA_MASK52);
    }
    ifma_amm2(hp.x, hp.x, hp.one, hp.n, hp.mm & IFMA_MASK52,
              hq.x, hq.x, hq.one, hq.n, hq.mm & IFMA_MASK52);
    MBEDTLS_MPI_CHK(ifma_half_result(&hp, XP));
    MBEDTLS_MPI_CHK(ifma_half_result(&hq, XQ));

cleanup:
    if (buf != NULL) {
        mbedtls_platform_zeroize(buf, 2 * size * 24 * sizeof *buf);
        mbedtls_free(buf);
    }
    mbedtls_platform_zeroize(&hp, sizeof hp);
    mbedtls_platform_zeroize(&hq, sizeof hq);
    mbedtls_platform_zeroize(ap, sizeof ap);
    mbedtls_platform_zeroize(aq, sizeof aq);
    return ret;
}

#else

/* without the fast code: the two calls it replaces (XQ is not A) */
int aiolua_exp_mod2(mbedtls_mpi *XP, const mbedtls_mpi *A,
                    const mbedtls_mpi *EP, const mbedtls_mpi *P,
                    mbedtls_mpi *RP, mbedtls_mpi *XQ,
                    const mbedtls_mpi *EQ, const mbedtls_mpi *Q,
                    mbedtls_mpi *RQ)
{
    return expmod_two_calls(XP, A, EP, P, RP, XQ, EQ, Q, RQ);
}

#endif /* x86-64, 64-bit limbs, unsigned __int128 */

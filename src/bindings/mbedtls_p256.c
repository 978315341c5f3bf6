/*
** mbedtls_p256.c: point multiplication on NIST P-256 for the program's own
** mbedTLS build (issue 12).  Makefile copies this file into mbedTLS's
** library directory as aiolua_p256.c, and src/bindings/mbedtls_p256.patch
** includes it into ecp.c, where mbedtls_ecp_mul_restartable() hands it
** every P-256 multiplication once mbedTLS has checked the scalar and the
** point.  That is all of TLS's P-256 work: the server's ECDHE key, the
** shared secret, ECDSA signatures, and (two multiplications and mbedTLS's
** own addition) ECDSA verification.
**
** mbedTLS 2.28 does this arithmetic with its general bignums: every field
** operation allocates, loops over limbs of unknown count and reduces
** separately.  Here a field element is four 64-bit limbs in Montgomery
** form, multiplied by the CIOS method (for this p the Montgomery factor
** -p^-1 mod 2^64 is 1): in MULX/ADCX/ADOX assembly on x86-64 CPUs with
** BMI2 and ADX, else in C with 128-bit products; on x86-64 addition and
** subtraction are ADC/SBB/CMOV assembly.  Points use the complete
** projective formulas of Renes, Costello and Batina (eprint 2015/1060,
** algorithms 4 and 6, a = -3): one formula for every pair of points,
** the point at infinity and doubling included, so no input needs a branch.
**
** Everything that depends on the scalar is constant-time: fixed 4-bit
** windows, each table entry read with masks, no early exit; inversion is
** Fermat's (a fixed chain of squarings and multiplications).  The input
** point's coordinates are randomized with the caller's RNG, as mbedTLS does.
** Multiples of the base point use a table of j * 16^i * G (j = 1..15,
** i = 0..63) made once per process (92 KiB, published with an atomic
** compare-and-swap), so k * G is 64 additions and no doubling.
**
** Needs a compiler with unsigned __int128 (GCC and Clang on 64-bit
** targets, MinGW-w64 included); elsewhere mbedTLS's own code runs.
** tests/c/test_p256.c compares every path with mbedTLS's generic one.
*/
#if defined(__SIZEOF_INT128__) && defined(MBEDTLS_ECP_DP_SECP256R1_ENABLED)
#define AIOLUA_P256 1

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* returned when this code does not take the multiplication (no memory for
** the base point's table): mbedTLS's own code then does it */
#define AIOLUA_P256_DECLINED 1

typedef unsigned __int128 p256_u128;
typedef uint64_t p256_fe[4];  /* little-endian limbs, Montgomery form */

typedef struct {
    p256_fe x, y, z;  /* projective: (x/z, y/z); infinity is (0 : 1 : 0) */
} p256_point;

static const p256_fe p256_p = {
    0xffffffffffffffffull, 0x00000000ffffffffull,
    0x0000000000000000ull, 0xffffffff00000001ull
};
static const p256_fe p256_rr = {  /* 2^512 mod p: into Montgomery form */
    0x0000000000000003ull, 0xfffffffbffffffffull,
    0xfffffffffffffffeull, 0x00000004fffffffdull
};
static const p256_fe p256_one = {  /* 1 in Montgomery form: 2^256 mod p */
    0x0000000000000001ull, 0xffffffff00000000ull,
    0xffffffffffffffffull, 0x00000000fffffffeull
};
static const p256_fe p256_b = {  /* the curve's b in Montgomery form */
    0xd89cdf6229c4bddfull, 0xacf005cd78843090ull,
    0xe5a220abf7212ed6ull, 0xdc30061d04874834ull
};

/* r = t (five limbs, t < 2p) reduced below p, without a branch */
static void p256_reduce_once(p256_fe r, const uint64_t t[5])
{
    uint64_t s[4], borrow = 0, keep;
    p256_u128 d;
    int i;
    for (i = 0; i < 4; i++) {
        d = (p256_u128) t[i] - p256_p[i] - borrow;
        s[i] = (uint64_t) d;
        borrow = (uint64_t) (d >> 64) & 1;
    }
    /* t - p went below zero exactly when the fifth limb cannot pay it */
    keep = 0 - (uint64_t) (t[4] < borrow);
    for (i = 0; i < 4; i++) {
        r[i] = (t[i] & keep) | (s[i] & ~keep);
    }
}

static void p256_add_c(p256_fe r, const p256_fe a, const p256_fe b)
{
    uint64_t t[5];
    p256_u128 c = 0;
    int i;
    for (i = 0; i < 4; i++) {
        c = (p256_u128) a[i] + b[i] + (uint64_t) (c >> 64);
        t[i] = (uint64_t) c;
    }
    t[4] = (uint64_t) (c >> 64);
    p256_reduce_once(r, t);
}

static void p256_sub_c(p256_fe r, const p256_fe a, const p256_fe b)
{
    uint64_t t[4], borrow = 0, mask;
    p256_u128 d, c = 0;
    int i;
    for (i = 0; i < 4; i++) {
        d = (p256_u128) a[i] - b[i] - borrow;
        t[i] = (uint64_t) d;
        borrow = (uint64_t) (d >> 64) & 1;
    }
    mask = 0 - borrow;  /* add p back if a < b */
    for (i = 0; i < 4; i++) {
        c = (p256_u128) t[i] + (p256_p[i] & mask) + (uint64_t) (c >> 64);
        r[i] = (uint64_t) c;
    }
}

/* r = a * b / 2^256 mod p (CIOS; -p^-1 mod 2^64 is 1, so m = t[0]) */
static void p256_mul_c(p256_fe r, const p256_fe a, const p256_fe b)
{
    uint64_t t[5] = { 0, 0, 0, 0, 0 }, hi, m;
    p256_u128 c;
    int i, j;
    for (i = 0; i < 4; i++) {
        c = 0;
        for (j = 0; j < 4; j++) {
            c = (p256_u128) a[j] * b[i] + t[j] + (uint64_t) (c >> 64);
            t[j] = (uint64_t) c;
        }
        c = (p256_u128) t[4] + (uint64_t) (c >> 64);
        t[4] = (uint64_t) c;
        hi = (uint64_t) (c >> 64);
        m = t[0];
        c = (p256_u128) m * p256_p[0] + t[0];
        for (j = 1; j < 4; j++) {
            c = (p256_u128) m * p256_p[j] + t[j] + (uint64_t) (c >> 64);
            t[j - 1] = (uint64_t) c;
        }
        c = (p256_u128) t[4] + (uint64_t) (c >> 64);
        t[3] = (uint64_t) c;
        t[4] = hi + (uint64_t) (c >> 64);
    }
    p256_reduce_once(r, t);
}

#if defined(__x86_64__) && defined(__GNUC__)
/*
** The same product in assembly on CPUs with BMI2 and ADX, the limbs held
** in six registers that take turns: a round adds a * b[i] with MULX and
** two carry chains (ADOX for the low halves, ADCX for the high ones),
** then (t + m * p) / 2^64 for m = t[0] with one MULX: below 2^192, m * p
** is m * 2^96 - m, which clears t[0] and adds m * 2^32 (two shifts) above
** it, and only m * p[3] needs a product.
*/
#include <cpuid.h>

/* r = t - p, or t where that borrows (t < 2p): CMOV, no branch */
static inline __attribute__((always_inline)) void
p256_reduce_x86(p256_fe r, uint64_t t0, uint64_t t1, uint64_t t2,
                uint64_t t3, uint64_t t4)
{
    uint64_t s0 = t0, s1 = t1, s2 = t2, s3 = t3;
    __asm__(
        "sub %[p0], %[s0]\n\t"
        "sbb %[p1], %[s1]\n\t"
        "sbb $0, %[s2]\n\t"
        "sbb %[p3], %[s3]\n\t"
        "sbb $0, %[t4]\n\t"
        "cmovc %[t0], %[s0]\n\t"
        "cmovc %[t1], %[s1]\n\t"
        "cmovc %[t2], %[s2]\n\t"
        "cmovc %[t3], %[s3]\n\t"
        : [s0] "+&r" (s0), [s1] "+&r" (s1), [s2] "+&r" (s2), [s3] "+&r" (s3),
          [t4] "+&r" (t4)  /* early: s0..s3 start equal to t0..t3 */
        : [t0] "r" (t0), [t1] "r" (t1), [t2] "r" (t2), [t3] "r" (t3),
          [p0] "m" (p256_p[0]), [p1] "m" (p256_p[1]), [p3] "m" (p256_p[3])
        : "cc");
    r[0] = s0;
    r[1] = s1;
    r[2] = s2;
    r[3] = s3;
}

/* add and subtract in plain x86-64 (ADC, SBB, CMOV): the compiler turns
** the C versions' masks into vector moves through the stack.  They go
** with the product (on CPUs with ADX), so that a run under valgrind, which
** hides ADX, tests all of the C code. */
static void p256_add_x86(p256_fe r, const p256_fe a, const p256_fe b)
{
    uint64_t t0 = a[0], t1 = a[1], t2 = a[2], t3 = a[3], t4 = 0;
    __asm__(
        "add %[b0], %[t0]\n\t"
        "adc %[b1], %[t1]\n\t"
        "adc %[b2], %[t2]\n\t"
        "adc %[b3], %[t3]\n\t"
        "adc $0, %[t4]\n\t"
        : [t0] "+r" (t0), [t1] "+r" (t1), [t2] "+r" (t2), [t3] "+r" (t3),
          [t4] "+r" (t4)
        : [b0] "m" (b[0]), [b1] "m" (b[1]), [b2] "m" (b[2]), [b3] "m" (b[3])
        : "cc");
    p256_reduce_x86(r, t0, t1, t2, t3, t4);
}

static void p256_sub_x86(p256_fe r, const p256_fe a, const p256_fe b)
{
    uint64_t t0 = a[0], t1 = a[1], t2 = a[2], t3 = a[3], m, m1, m3;
    __asm__(
        "sub %[b0], %[t0]\n\t"
        "sbb %[b1], %[t1]\n\t"
        "sbb %[b2], %[t2]\n\t"
        "sbb %[b3], %[t3]\n\t"
        "sbb %[m], %[m]\n\t"          /* all ones if a < b */
        "mov %k[m], %k[m1]\n\t"       /* then add p: its limbs masked */
        "mov %[m], %[m3]\n\t"
        "and %[p3], %[m3]\n\t"
        "add %[m], %[t0]\n\t"
        "adc %[m1], %[t1]\n\t"
        "adc $0, %[t2]\n\t"
        "adc %[m3], %[t3]\n\t"
        : [t0] "+r" (t0), [t1] "+r" (t1), [t2] "+r" (t2), [t3] "+r" (t3),
          [m] "=&r" (m), [m1] "=&r" (m1), [m3] "=&r" (m3)
        : [b0] "m" (b[0]), [b1] "m" (b[1]), [b2] "m" (b[2]), [b3] "m" (b[3]),
          [p3] "m" (p256_p[3])
        : "cc");
    r[0] = t0;
    r[1] = t1;
    r[2] = t2;
    r[3] = t3;
}

#define P256_OP(x) "%[" #x "]"
#define P256_ROUND(i, t0, t1, t2, t3, t4, t5)                          \
    "mov " #i "*8(%[b]), %%rdx\n\t"                                   \
    "xor %k[" #t5 "], %k[" #t5 "]\n\t"  /* and CF = OF = 0 */          \
    "mulx 0(%[a]), %[lo], %[hi]\n\t"                                  \
    "adox %[lo], " P256_OP(t0) "\n\t"                                 \
    "adcx %[hi], " P256_OP(t1) "\n\t"                                 \
    "mulx 8(%[a]), %[lo], %[hi]\n\t"                                  \
    "adox %[lo], " P256_OP(t1) "\n\t"                                 \
    "adcx %[hi], " P256_OP(t2) "\n\t"                                 \
    "mulx 16(%[a]), %[lo], %[hi]\n\t"                                 \
    "adox %[lo], " P256_OP(t2) "\n\t"                                 \
    "adcx %[hi], " P256_OP(t3) "\n\t"                                 \
    "mulx 24(%[a]), %[lo], %[hi]\n\t"                                 \
    "adox %[lo], " P256_OP(t3) "\n\t"                                 \
    "adcx %[hi], " P256_OP(t4) "\n\t"                                 \
    "mov $0, %k[lo]\n\t"                                              \
    "adox %[lo], " P256_OP(t4) "\n\t"                                 \
    "adcx %[lo], " P256_OP(t5) "\n\t"                                 \
    "adox %[lo], " P256_OP(t5) "\n\t"                                 \
    "mov " P256_OP(t0) ", %%rdx\n\t"                                  \
    "mulx %[p3], %[lo], %[hi]\n\t"                                    \
    "shl $32, %%rdx\n\t"                                              \
    "shr $32, " P256_OP(t0) "\n\t"                                    \
    "add %%rdx, " P256_OP(t1) "\n\t"                                  \
    "adc " P256_OP(t0) ", " P256_OP(t2) "\n\t"                        \
    "adc %[lo], " P256_OP(t3) "\n\t"                                  \
    "adc %[hi], " P256_OP(t4) "\n\t"                                  \
    "adc $0, " P256_OP(t5) "\n\t"

static void p256_mul_adx(p256_fe r, const p256_fe a, const p256_fe b)
{
    uint64_t r0 = 0, r1 = 0, r2 = 0, r3 = 0, r4 = 0, r5 = 0, lo, hi;
    __asm__(
        P256_ROUND(0, r0, r1, r2, r3, r4, r5)
        P256_ROUND(1, r1, r2, r3, r4, r5, r0)
        P256_ROUND(2, r2, r3, r4, r5, r0, r1)
        P256_ROUND(3, r3, r4, r5, r0, r1, r2)
        : [r0] "+r" (r0), [r1] "+r" (r1), [r2] "+r" (r2), [r3] "+r" (r3),
          [r4] "+r" (r4), [r5] "+r" (r5), [lo] "=&r" (lo), [hi] "=&r" (hi)
        : [a] "r" (a), [b] "r" (b), [p3] "m" (p256_p[3]),
          "m" (*(const uint64_t (*)[4]) a), "m" (*(const uint64_t (*)[4]) b)
        : "rdx", "cc");
    p256_reduce_x86(r, r4, r5, r0, r1, r2);
}

/* 0 not asked yet, 1 no, 2 the CPU has BMI2 (MULX) and ADX */
static int p256_adx;

static void p256_cpu(void)
{
    if (__atomic_load_n(&p256_adx, __ATOMIC_RELAXED) == 0) {
        unsigned eax, ebx = 0, ecx, edx;
        int k = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) &&
                (ebx & (1u << 8)) && (ebx & (1u << 19)) ? 2 : 1;
        __atomic_store_n(&p256_adx, k, __ATOMIC_RELAXED);
    }
}
/* set by p256_cpu() before any arithmetic, to the same value by every
** thread; read relaxed (a plain load on x86-64) */
#define P256_ADX (__atomic_load_n(&p256_adx, __ATOMIC_RELAXED) == 2)
#define P256_MUL(r, a, b) \
    (P256_ADX ? p256_mul_adx(r, a, b) : p256_mul_c(r, a, b))
#define P256_ADD(r, a, b) \
    (P256_ADX ? p256_add_x86(r, a, b) : p256_add_c(r, a, b))
#define P256_SUB(r, a, b) \
    (P256_ADX ? p256_sub_x86(r, a, b) : p256_sub_c(r, a, b))
#else
static void p256_cpu(void)
{
}
#define P256_MUL(r, a, b) p256_mul_c(r, a, b)
#define P256_ADD(r, a, b) p256_add_c(r, a, b)
#define P256_SUB(r, a, b) p256_sub_c(r, a, b)
#endif

static void p256_add(p256_fe r, const p256_fe a, const p256_fe b)
{
    P256_ADD(r, a, b);
}

static void p256_sub(p256_fe r, const p256_fe a, const p256_fe b)
{
    P256_SUB(r, a, b);
}

static void p256_mul(p256_fe r, const p256_fe a, const p256_fe b)
{
    P256_MUL(r, a, b);
}

static void p256_sqr(p256_fe r, const p256_fe a)
{
    P256_MUL(r, a, a);
}

/* r = a^(p-2) = 1/a (0 for 0): p - 2 is
** ffffffff 00000001 00000000 00000000 00000000 ffffffff ffffffff fffffffd */
static void p256_inv(p256_fe r, const p256_fe a)
{
    static const uint64_t e[4] = {
        0xfffffffffffffffdull, 0x00000000ffffffffull,
        0x0000000000000000ull, 0xffffffff00000001ull
    };
    p256_fe x;
    int i;
    memcpy(x, p256_one, sizeof x);
    for (i = 255; i >= 0; i--) {  /* the exponent is public */
        p256_sqr(x, x);
        if ((e[i / 64] >> (i % 64)) & 1) {
            p256_mul(x, x, a);
        }
    }
    memcpy(r, x, sizeof x);
}

static void p256_from_bytes(p256_fe r, const unsigned char b[32])
{
    p256_fe t;
    int i, j;
    for (i = 0; i < 4; i++) {
        t[i] = 0;
        for (j = 0; j < 8; j++) {
            t[i] |= (uint64_t) b[31 - 8 * i - j] << (8 * j);
        }
    }
    p256_mul(r, t, p256_rr);
}

static void p256_to_bytes(unsigned char b[32], const p256_fe a)
{
    static const p256_fe one = { 1, 0, 0, 0 };
    p256_fe t;
    int i, j;
    p256_mul(t, a, one);
    for (i = 0; i < 4; i++) {
        for (j = 0; j < 8; j++) {
            b[31 - 8 * i - j] = (unsigned char) (t[i] >> (8 * j));
        }
    }
}

/* r = p + q, for every p and q (RCB algorithm 4); r may be p or q */
static void p256_point_add(p256_point *r, const p256_point *p,
                           const p256_point *q)
{
    p256_fe t0, t1, t2, t3, t4, x3, y3, z3;
    p256_mul(t0, p->x, q->x);
    p256_mul(t1, p->y, q->y);
    p256_mul(t2, p->z, q->z);
    p256_add(t3, p->x, p->y);
    p256_add(t4, q->x, q->y);
    p256_mul(t3, t3, t4);
    p256_add(t4, t0, t1);
    p256_sub(t3, t3, t4);
    p256_add(t4, p->y, p->z);
    p256_add(x3, q->y, q->z);
    p256_mul(t4, t4, x3);
    p256_add(x3, t1, t2);
    p256_sub(t4, t4, x3);
    p256_add(x3, p->x, p->z);
    p256_add(y3, q->x, q->z);
    p256_mul(x3, x3, y3);
    p256_add(y3, t0, t2);
    p256_sub(y3, x3, y3);
    p256_mul(z3, p256_b, t2);
    p256_sub(x3, y3, z3);
    p256_add(z3, x3, x3);
    p256_add(x3, x3, z3);
    p256_sub(z3, t1, x3);
    p256_add(x3, t1, x3);
    p256_mul(y3, p256_b, y3);
    p256_add(t1, t2, t2);
    p256_add(t2, t1, t2);
    p256_sub(y3, y3, t2);
    p256_sub(y3, y3, t0);
    p256_add(t1, y3, y3);
    p256_add(y3, t1, y3);
    p256_add(t1, t0, t0);
    p256_add(t0, t1, t0);
    p256_sub(t0, t0, t2);
    p256_mul(t1, t4, y3);
    p256_mul(t2, t0, y3);
    p256_mul(y3, x3, z3);
    p256_add(y3, y3, t2);
    p256_mul(x3, t3, x3);
    p256_sub(x3, x3, t1);
    p256_mul(z3, t4, z3);
    p256_mul(t1, t3, t0);
    p256_add(z3, z3, t1);
    memcpy(r->x, x3, sizeof x3);
    memcpy(r->y, y3, sizeof y3);
    memcpy(r->z, z3, sizeof z3);
}

/* r = 2p, for every p (RCB algorithm 6); r may be p */
static void p256_point_double(p256_point *r, const p256_point *p)
{
    p256_fe t0, t1, t2, t3, x3, y3, z3;
    p256_sqr(t0, p->x);
    p256_sqr(t1, p->y);
    p256_sqr(t2, p->z);
    p256_mul(t3, p->x, p->y);
    p256_add(t3, t3, t3);
    p256_mul(z3, p->x, p->z);
    p256_add(z3, z3, z3);
    p256_mul(y3, p256_b, t2);
    p256_sub(y3, y3, z3);
    p256_add(x3, y3, y3);
    p256_add(y3, x3, y3);
    p256_sub(x3, t1, y3);
    p256_add(y3, t1, y3);
    p256_mul(y3, x3, y3);
    p256_mul(x3, x3, t3);
    p256_add(t3, t2, t2);
    p256_add(t2, t2, t3);
    p256_mul(z3, p256_b, z3);
    p256_sub(z3, z3, t2);
    p256_sub(z3, z3, t0);
    p256_add(t3, z3, z3);
    p256_add(z3, z3, t3);
    p256_add(t3, t0, t0);
    p256_add(t0, t3, t0);
    p256_sub(t0, t0, t2);
    p256_mul(t0, t0, z3);
    p256_add(y3, y3, t0);
    p256_mul(t0, p->y, p->z);
    p256_add(t0, t0, t0);
    p256_mul(z3, t0, z3);
    p256_sub(x3, x3, z3);
    p256_mul(z3, t0, t1);
    p256_add(z3, z3, z3);
    p256_add(z3, z3, z3);
    memcpy(r->x, x3, sizeof x3);
    memcpy(r->y, y3, sizeof y3);
    memcpy(r->z, z3, sizeof z3);
}

static void p256_point_infinity(p256_point *r)
{
    memset(r, 0, sizeof *r);
    memcpy(r->y, p256_one, sizeof r->y);
}

/* r = t[w - 1], or infinity for w = 0, reading all 15 entries */
static void p256_select(p256_point *r, const p256_point t[15], unsigned w)
{
    const uint64_t *src;
    uint64_t *dst = (uint64_t *) r, mask;
    unsigned j;
    int k;
    p256_point_infinity(r);
    for (j = 1; j <= 15; j++) {
        mask = 0 - (uint64_t) ((((j ^ w) - 1u) >> 8) & 1u);  /* j == w */
        src = (const uint64_t *) &t[j - 1];
        for (k = 0; k < 12; k++) {
            dst[k] = (dst[k] & ~mask) | (src[k] & mask);
        }
    }
}

/* the i-th 4-bit window of a big-endian 32-byte scalar, i = 0 the lowest */
static unsigned p256_window(const unsigned char k[32], int i)
{
    return (k[31 - i / 2] >> (4 * (i & 1))) & 15u;
}

/* the curve's base point G, big-endian */
static const unsigned char p256_gx[32] = {
    0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47,
    0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2,
    0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0,
    0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96
};
static const unsigned char p256_gy[32] = {
    0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b,
    0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16,
    0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce,
    0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5
};

/* j * 16^i * G for j = 1..15, i = 0..63: made once, then read-only */
static p256_point (*p256_g_table)[15];

static p256_point (*p256_g_table_get(void))[15]
{
    p256_point (*t)[15], (*none)[15] = NULL, base;
    int i, j;
    t = __atomic_load_n(&p256_g_table, __ATOMIC_ACQUIRE);
    if (t != NULL) {
        return t;
    }
    t = mbedtls_calloc(64, sizeof *t);
    if (t == NULL) {
        return NULL;
    }
    p256_from_bytes(base.x, p256_gx);
    p256_from_bytes(base.y, p256_gy);
    memcpy(base.z, p256_one, sizeof base.z);
    for (i = 0; i < 64; i++) {
        t[i][0] = base;
        for (j = 1; j < 15; j++) {
            p256_point_add(&t[i][j], &t[i][j - 1], &base);
        }
        p256_point_add(&base, &t[i][14], &base);  /* 16^(i+1) * G */
    }
    if (!__atomic_compare_exchange_n(&p256_g_table, &none, t, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        mbedtls_free(t);  /* another thread published one first */
        t = none;
    }
    return t;
}

/* a random nonzero field element in Montgomery form, or 1 without an RNG */
static int p256_random(p256_fe r,
                       int (*f_rng)(void *, unsigned char *, size_t),
                       void *p_rng)
{
    unsigned char b[32];
    p256_fe zero = { 0, 0, 0, 0 };
    int ret, tries;
    if (f_rng == NULL) {
        memcpy(r, p256_one, sizeof(p256_fe));
        return 0;
    }
    ret = MBEDTLS_ERR_ECP_RANDOM_FAILED;
    for (tries = 0; tries < 10; tries++) {
        int rc = f_rng(p_rng, b, sizeof b);
        if (rc != 0) {
            ret = rc;
            break;
        }
        p256_from_bytes(r, b);  /* reduced mod p: uniform enough */
        if (memcmp(r, zero, sizeof zero) != 0) {
            ret = 0;
            break;
        }
    }
    mbedtls_platform_zeroize(b, sizeof b);
    return ret;
}

/* R = m * P; m and P were checked by mbedTLS (1 <= m < n, P on the curve,
** affine).  The group is P-256 as mbedtls_ecp_group_load() made it (the
** only way its id is set); the base point is known by its coordinates,
** not by the group's G, which a caller may have changed.  0, an mbedTLS
** error, or AIOLUA_P256_DECLINED. */
static int aiolua_p256_mul(mbedtls_ecp_group *grp, mbedtls_ecp_point *R,
                           const mbedtls_mpi *m, const mbedtls_ecp_point *P,
                           int (*f_rng)(void *, unsigned char *, size_t),
                           void *p_rng)
{
    int ret, i;
    unsigned char k[32], b[32], px[32], py[32];
    p256_point q, s, t[15];
    p256_point (*g)[15] = NULL;
    p256_fe lambda, zinv;

    (void) grp;
    p256_cpu();
    MBEDTLS_MPI_CHK(mbedtls_mpi_write_binary(&P->X, px, 32));
    MBEDTLS_MPI_CHK(mbedtls_mpi_write_binary(&P->Y, py, 32));
    /* the base point (the curve's, whatever the group holds) */
    if (memcmp(px, p256_gx, 32) == 0 && memcmp(py, p256_gy, 32) == 0) {
        if ((g = p256_g_table_get()) == NULL) {
            return AIOLUA_P256_DECLINED;
        }
    }
    MBEDTLS_MPI_CHK(mbedtls_mpi_write_binary(m, k, 32));
    p256_point_infinity(&q);
    if (g != NULL) {
        for (i = 0; i < 64; i++) {
            p256_select(&s, g[i], p256_window(k, i));
            p256_point_add(&q, &q, &s);
        }
    } else {
        MBEDTLS_MPI_CHK(p256_random(lambda, f_rng, p_rng));
        p256_from_bytes(t[0].x, px);
        p256_from_bytes(t[0].y, py);
        p256_mul(t[0].x, t[0].x, lambda);
        p256_mul(t[0].y, t[0].y, lambda);
        memcpy(t[0].z, lambda, sizeof lambda);
        for (i = 1; i < 15; i++) {
            if (i & 1) {
                p256_point_double(&t[i], &t[i / 2]);
            } else {
                p256_point_add(&t[i], &t[i - 1], &t[0]);
            }
        }
        for (i = 63; i >= 0; i--) {
            p256_point_double(&q, &q);
            p256_point_double(&q, &q);
            p256_point_double(&q, &q);
            p256_point_double(&q, &q);
            p256_select(&s, t, p256_window(k, i));
            p256_point_add(&q, &q, &s);
        }
    }

    /* m < n and P has order n, so q is not infinity; should it be, the
     * result is mbedTLS's zero point */
    if ((q.z[0] | q.z[1] | q.z[2] | q.z[3]) == 0) {
        ret = mbedtls_ecp_set_zero(R);
        goto cleanup;
    }
    p256_inv(zinv, q.z);
    p256_mul(q.x, q.x, zinv);
    p256_mul(q.y, q.y, zinv);
    p256_to_bytes(b, q.x);
    MBEDTLS_MPI_CHK(mbedtls_mpi_read_binary(&R->X, b, 32));
    p256_to_bytes(b, q.y);
    MBEDTLS_MPI_CHK(mbedtls_mpi_read_binary(&R->Y, b, 32));
    MBEDTLS_MPI_CHK(mbedtls_mpi_lset(&R->Z, 1));
    ret = 0;

cleanup:
    mbedtls_platform_zeroize(k, sizeof k);
    mbedtls_platform_zeroize(&q, sizeof q);
    mbedtls_platform_zeroize(&s, sizeof s);
    mbedtls_platform_zeroize(t, sizeof t);
    return ret;
}

#endif /* __SIZEOF_INT128__ && MBEDTLS_ECP_DP_SECP256R1_ENABLED */

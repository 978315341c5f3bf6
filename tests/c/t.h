/*
** t.h: the C test harness.  TEST(name) defines a test; tests/c/test_list.h
** registers it; the runner (runner.c) runs all of them or those named on
** its command line, each printing "PASS name" or "FAIL name: why".  An
** ASSERT that fails prints both values, file and line, and ends that test.
*/
#ifndef T_H
#define T_H

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

extern jmp_buf t_fail_jmp;
extern char t_fail_msg[1024];

#define TEST(name) void test_##name(void)

#define T_FAIL(...) do { \
    int n_ = snprintf(t_fail_msg, sizeof t_fail_msg, "%s:%d: ", \
                      __FILE__, __LINE__); \
    snprintf(t_fail_msg + n_, sizeof t_fail_msg - n_, __VA_ARGS__); \
    longjmp(t_fail_jmp, 1); \
  } while (0)

#define ASSERT(c) do { if (!(c)) T_FAIL("assertion failed: %s", #c); } while (0)
#define ASSERT_EQ(a, b) do { \
    long long a_ = (long long)(a), b_ = (long long)(b); \
    if (a_ != b_) T_FAIL("%s == %s: %lld != %lld", #a, #b, a_, b_); \
  } while (0)
#define ASSERT_OK(x) do { \
    long long r_ = (long long)(x); \
    if (r_ != 0) T_FAIL("%s returned %lld, expected 0", #x, r_); \
  } while (0)
#define ASSERT_STR_EQ(a, b) do { \
    const char *a_ = (a), *b_ = (b); \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) \
      T_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", \
             b_ ? b_ : "(null)"); \
  } while (0)
#define ASSERT_CONTAINS(s, sub) do { \
    const char *s_ = (s), *u_ = (sub); \
    if (s_ == NULL || strstr(s_, u_) == NULL) \
      T_FAIL("%s contains \"%s\": got \"%s\"", #s, u_, s_ ? s_ : "(null)"); \
  } while (0)

/* xorshift64: the next value of a test's deterministic generator */
static inline unsigned long long t_xorshift(unsigned long long *seed) {
  *seed ^= *seed << 13;
  *seed ^= *seed >> 7;
  *seed ^= *seed << 17;
  return *seed;
}

/* n bytes from the generator: the body of the tests' mbedTLS f_rng */
static inline void t_xorshift_fill(unsigned long long *seed,
                                   unsigned char *out, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) out[i] = (unsigned char)(t_xorshift(seed) >> 32);
}

#endif

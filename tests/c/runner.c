/* runner.c: runs the tests of test_list.h (all, or those named in argv);
** the Windows build passes -DTEST_LIST for the tests that apply there */
#include <stdlib.h>

#include "t.h"

#ifndef TEST_LIST
#define TEST_LIST "test_list.h"
#endif

jmp_buf t_fail_jmp;
char t_fail_msg[1024];

#define T(name) void test_##name(void);
#include TEST_LIST
#undef T

static const struct { const char *name; void (*fn)(void); } tests[] = {
#define T(name) { #name, test_##name },
#include TEST_LIST
#undef T
};

static int selected(const char *name, int argc, char **argv) {
  int i;
  if (argc < 2) return 1;
  for (i = 1; i < argc; i++)
    if (strcmp(argv[i], name) == 0) return 1;
  return 0;
}

int main(int argc, char **argv) {
  volatile size_t i;   /* live across longjmp */
  volatile int failed = 0;
  for (i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    if (!selected(tests[i].name, argc, argv)) continue;
    if (setjmp(t_fail_jmp) == 0) {
      tests[i].fn();
      printf("PASS %s\n", tests[i].name);
    } else {
      printf("FAIL %s: %s\n", tests[i].name, t_fail_msg);
      failed++;
    }
    fflush(stdout);
  }
  return failed ? 1 : 0;
}

/* runner.c: the Windows C test runner: tests/c/runner.c with the list of
** the tests that apply on Windows (tests/win/test_list.h) */
#include <stdlib.h>

#include "../c/t.h"

jmp_buf t_fail_jmp;
char t_fail_msg[1024];

#define T(name) void test_##name(void);
#include "test_list.h"
#undef T

static const struct { const char *name; void (*fn)(void); } tests[] = {
#define T(name) { #name, test_##name },
#include "test_list.h"
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

/*
** fuzz_cli.c: the aiolua command line's argument parser (src/host/main.c,
** collectargs and createargtable, included here with main renamed).  The
** input, split at NUL bytes, is argv.  Checked: no read past argv (ASan
** sees the heap copy), `first` within 1..argc, and the arg table built
** from the script index, as lua.c builds it.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define main aiolua_cli_main
#include "../../src/host/main.c"
#undef main

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static lua_State *L;
  char *buf, **argv;
  int argc = 1, i, first = 0, args;
  size_t k;
  if (size > 4096) return 0;
  if (L == NULL) L = luaL_newstate();
  buf = malloc(size + 1);
  memcpy(buf, data, size);
  buf[size] = '\0';
  for (k = 0; k < size; k++) argc += buf[k] == '\0';
  argv = malloc((size_t)(argc + 2) * sizeof *argv);  /* exact: ASan checks */
  argv[0] = "aiolua";
  argv[1] = buf;
  for (k = 0, i = 2; k < size; k++)
    if (buf[k] == '\0') argv[i++] = buf + k + 1;
  argc = i;
  argv[argc] = NULL;
  args = collectargs(argv, &first);
  if (args != has_error) {
    if (first < 1 || first > argc) abort();
    createargtable(L, argv, argc, first);
    lua_settop(L, 0);
  }
  free(argv);
  free(buf);
  return 0;
}

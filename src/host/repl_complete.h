/*
** repl_complete.h: Tab completion at the REPL (repl_complete.c).
*/
#ifndef AIO_REPL_COMPLETE_H
#define AIO_REPL_COMPLETE_H

#include <lua.h>

/* The completions of `text`, the word before the cursor ("aio.sl",
** "r:rea", "pri"): a sorted, NULL-terminated array of malloc'd strings, or
** NULL when there is none.  Runs Lua, protected; the stack is left as it
** was. */
char **aio__repl_complete(lua_State *L, const char *text);
void aio__repl_complete_free(char **list);

#endif

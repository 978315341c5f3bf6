/*
** lua_jmp.h: how ./aiolua's Lua unwinds (ldo.c's LUAI_THROW and LUAI_TRY).
**
** Lua throws an error, and a coroutine yields from a C function, with a
** longjmp to the setjmp of the lua_resume or lua_pcall below; every task
** that waits does one of each per wait.  Debian's build uses glibc's
** _setjmp/_longjmp, which the _FORTIFY_SOURCE build turns into
** __longjmp_chk: with __sigsetjmp and the cleanup walk of
** _longjmp_unwind, 60 to 80 instructions per wait.  GCC's
** __builtin_setjmp/__builtin_longjmp keep only the frame and stack
** pointers and the resume address (the function that sets the buffer,
** luaD_rawrunprotected, saves the callee-saved registers itself): a
** handful of instructions.  Measured with callgrind: HTTP keep-alive
** 2,390 -> 2,312 instructions per request, queue ping-pong (two waits a
** round trip) 1,489 -> 1,428 per message.
**
** ldo.c picks these up because it only defines its own when LUAI_THROW is
** not defined; the Makefile force-includes this file into ldo.c alone.
** Nothing else changes: what unwinds is still Lua's own C frames, and no
** C code between a pcall and its error relies on being unwound (Lua's
** API forbids it; with C++ Lua would use exceptions, not this).
**
** AIOLUA_JMP_ASAN (the sanitizer build's Lua): AddressSanitizer learns of
** a jump over instrumented frames (our bindings raising an error) from its
** longjmp interceptor, which the builtin bypasses; __asan_handle_no_return
** is what that interceptor calls to unpoison the abandoned stack.
**
** Windows (mingw-w64) keeps Lua's default: its longjmp unwinds through
** SEH, which the builtin would skip.
*/
#ifndef AIOLUA_LUA_JMP_H
#define AIOLUA_LUA_JMP_H

#if defined(__GNUC__) && !defined(_WIN32)

#ifdef AIOLUA_JMP_ASAN
void __asan_handle_no_return(void);
#define aiolua_beforejump()  __asan_handle_no_return()
#else
#define aiolua_beforejump()  ((void)0)
#endif

typedef void *aiolua_jmpbuf[5];  /* the builtin's buffer: five words */

#define luai_jmpbuf  aiolua_jmpbuf
#define LUAI_THROW(L,c)  \
  (aiolua_beforejump(), __builtin_longjmp((c)->b, 1))
#define LUAI_TRY(L,c,a)  if (__builtin_setjmp((c)->b) == 0) { a }

#endif

#endif

/*
** repl.c: the interactive REPL of the aiolua program (lua: lua.c, its REPL
** part), on the embedding API (aiolua.h) only.
**
** Every chunk runs as the main task of the host's one loop, so waiting
** calls work at the prompt.  While the prompt waits, the loop keeps
** running: input is never read with a blocking call.  On a terminal,
** libedit's readline-compatible callback interface edits the line; a watch
** on stdin feeds it one key at a time from inside aio_host_step.  Without a
** terminal, lines are read as they come, with no editing.
**
** Output of tasks that run while the prompt is up goes through print,
** io.write and file:write on stdout/stderr, which the REPL wraps: the
** prompt line is erased before such output and drawn again after the step.
*/
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>

#include "repl_chunk.h"
#include "repl_complete.h"

#define HISTFILE    ".aiolua_history"
#define HISTMAX     1000

typedef struct repl {
  aio_host *h;
  lua_State *L;
  int tty;            /* line editing on a terminal */
  int at_prompt;      /* a prompt is up and waits for input */
  int hidden;         /* output erased the prompt line: draw it again */
  int nl;             /* that output ended with a newline */
  aio_repl_exit exit; /* os.exit (repl_chunk.c) */
  /* the line being read */
  int done;           /* a line (or EOF) came */
  int eof;
  aio_repl_buf buf;   /* the line (pipe mode: so far) */
  char *histpath;
} repl;

/* libedit's line callback has no user data: the one REPL of the process */
static repl R;

/* ====================================================================== */
/* history (libedit's file: one entry a line, in vis(3)'s escapes)       */
/* ====================================================================== */

/* libedit's history files start with this line; its read_history takes
** no other file, and its entries escape blanks and newlines ("\040",
** "\012"), so a chunk of several lines stays one entry */
#define HISTCOOKIE "_HiStOrY_V2_\n"

/* Append one entry as libedit writes it, so that its read_history takes
** it back: bytes other than printable ASCII, and the backslash, as octal
** escapes (strvis with VIS_WHITE does the same but for other printable
** bytes).  The file is made private to its owner, as GNU readline makes
** it.  libedit's append_history(1, ...) is not used: it writes the
** entry before the last one too. */
static void history_append(const char *chunk) {
  int fd = open(R.histpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
  FILE *f;
  const unsigned char *p;
  if (fd < 0) return;
  f = fdopen(fd, "a");
  if (f == NULL) {
    close(fd);
    return;
  }
  if (lseek(fd, 0, SEEK_END) == 0) fputs(HISTCOOKIE, f);
  for (p = (const unsigned char *)chunk; *p; p++) {
    if (*p > ' ' && *p < 0x7f && *p != '\\') putc(*p, f);
    else fprintf(f, "\\%03o", *p);
  }
  putc('\n', f);
  fclose(f);
}

/* the file's entries (lines) and whether it is libedit's; -1: none */
static int history_lines(int *ours) {
  char first[sizeof HISTCOOKIE];
  FILE *f = fopen(R.histpath, "r");
  int c, n = 0;
  if (f == NULL) return -1;
  *ours = fgets(first, sizeof first, f) != NULL &&
          strcmp(first, HISTCOOKIE) == 0;
  if (!*ours) rewind(f);
  while ((c = getc(f)) != EOF) n += c == '\n';
  fclose(f);
  return n;
}

/* a file of earlier versions: plain lines, one entry each */
static void history_read_plain(void) {
  FILE *f = fopen(R.histpath, "r");
  char buf[4096];
  if (f == NULL) return;
  while (fgets(buf, sizeof buf, f) != NULL) {
    size_t l = strlen(buf);
    if (l > 0 && buf[l - 1] == '\n') buf[--l] = '\0';
    if (l > 0) add_history(buf);
  }
  fclose(f);
}

static void history_open(void) {
  const char *home = getenv("HOME");
  int n, ours;
  using_history();
  stifle_history(HISTMAX);
  if (home == NULL || *home == '\0') return;
  R.histpath = malloc(strlen(home) + sizeof HISTFILE + 1);
  if (R.histpath == NULL) return;
  sprintf(R.histpath, "%s/%s", home, HISTFILE);
  n = history_lines(&ours);
  if (n < 0) return;
  if (ours) read_history(R.histpath);
  else history_read_plain();
  /* an earlier version's file becomes libedit's; and keep the file from
  ** growing for ever */
  if (!ours || n > 2 * HISTMAX) write_history(R.histpath);
}

/* remember a chunk (not twice in a row); saved at once, so a killed REPL
** loses nothing */
static void history_add(const char *chunk) {
  HIST_ENTRY *last;
  if (!R.tty || chunk[0] == '\0') return;
  last = history_length > 0 ? history_get(history_base + history_length - 1)
                            : NULL;
  if (last && last->line && strcmp(last->line, chunk) == 0) return;
  add_history(chunk);
  if (R.histpath != NULL) history_append(chunk);
}

/* ====================================================================== */
/* the prompt and output from tasks                                       */
/* ====================================================================== */

static void nothing(aio_host *h, void *ud) { (void)h; (void)ud; }

/* Erase the prompt line before output from a task (no-op off the prompt).
** The post makes this step's poll return at once, so that read_line draws
** the prompt again before the loop blocks. */
static void prompt_hide(void) {
  if (!R.tty || !R.at_prompt || R.hidden) return;
  fflush(stdout);
  fputs("\r\033[K", stdout);
  fflush(stdout);
  R.hidden = 1;
  R.nl = 1;
  aio_host_post(R.h, nothing, NULL);
}

/* draw the prompt and the line being typed again, below the output */
static void prompt_show(void) {
  if (!R.hidden) return;
  fflush(stdout);
  fflush(stderr);
  if (!R.nl) fputs("\n", stdout);
  fflush(stdout);
  R.hidden = 0;
  rl_forced_update_display();
  fflush(stdout);
}

/* repl.hide(): before writing; repl.wrote(s): after writing s */
static int l_hide(lua_State *L) {
  (void)L;
  prompt_hide();
  return 0;
}

static int l_wrote(lua_State *L) {
  size_t l;
  const char *s;
  if (!R.hidden) return 0;
  s = lua_tolstring(L, 1, &l);
  if (s != NULL && l > 0) R.nl = s[l - 1] == '\n';
  else if (s == NULL && !lua_isnoneornil(L, 1)) R.nl = 0;  /* a number */
  return 0;
}

/* the wrappers: print, io.write and file:write on stdout and stderr erase
** the prompt first (os.exit: repl_chunk.c) */
static const char wrappers[] =
  "local hide, wrote = ...\n"
  "local print, write, stdout, stderr = print, io.write, io.stdout, io.stderr\n"
  "local select, output = select, io.output\n"
  "local fmethods = getmetatable(stdout).__index\n"
  "local fwrite = fmethods.write\n"
  "_G.print = function(...) hide() return print(...) end\n"
  "io.write = function(...)\n"
  "  if output() ~= stdout then return write(...) end\n"
  "  hide()\n"
  "  local n = select('#', ...)\n"
  "  if n > 0 then wrote((select(n, ...))) end\n"
  "  return write(...)\n"
  "end\n"
  "fmethods.write = function(f, ...)\n"
  "  if f ~= stdout and f ~= stderr then return fwrite(f, ...) end\n"
  "  hide()\n"
  "  local n = select('#', ...)\n"
  "  if n > 0 then wrote((select(n, ...))) end\n"
  "  return fwrite(f, ...)\n"
  "end\n";

static int install_wrappers(lua_State *L) {
  if (luaL_loadbuffer(L, wrappers, sizeof wrappers - 1, "=repl") != LUA_OK)
    return 1;
  lua_pushcfunction(L, l_hide);
  lua_pushcfunction(L, l_wrote);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) return 1;
  return aio__repl_install_exit(L, &R.exit);
}

/* ====================================================================== */
/* Tab completion (repl_complete.c)                                       */
/* ====================================================================== */

/* what the Tab being handled completes, handed out one by one */
static char **completions;
static size_t completion_next;

static char *completion(const char *text, int state) {
  (void)text;
  if (state == 0) completion_next = 0;
  if (completions == NULL || completions[completion_next] == NULL)
    return NULL;
  return strdup(completions[completion_next++]);
}

/* whether the cursor is inside a string literal begun on this line */
static int in_string(int end) {
  char q = 0;
  int i;
  for (i = 0; i < end && rl_line_buffer[i] != '\0'; i++) {
    char c = rl_line_buffer[i];
    if (q && c == '\\' && i + 1 < end) i++;
    else if (q && c == q) q = 0;
    else if (!q && (c == '"' || c == '\'')) q = c;
  }
  return q != 0;
}

/* Lua names, or in a string a file name (libedit's own completion) */
static char **complete(const char *text, int start, int end) {
  char **m;
  (void)end;
  if (in_string(start)) return NULL;
  rl_attempted_completion_over = 1;  /* no file names outside strings */
  if (text[0] == '\0') return NULL;
  completions = aio__repl_complete(R.L, text);
  m = completions ? rl_completion_matches(text, completion) : NULL;
  aio__repl_complete_free(completions);
  completions = NULL;
  return m;
}

/* ====================================================================== */
/* reading a line while the loop runs                                     */
/* ====================================================================== */

static void on_line(char *line) {
  R.done = 1;
  if (line == NULL) R.eof = 1;
  aio__repl_buf_clear(&R.buf);
  if (line != NULL) {  /* libedit's malloc'd line becomes the buffer */
    R.buf.line = line;
    R.buf.len = strlen(line);
    R.buf.cap = R.buf.len + 1;
  }
  /* stop editing now: the chunk runs with the terminal as it was */
  rl_callback_handler_remove();
  R.at_prompt = 0;
}

static void on_tty(aio_host *h, int fd, void *ud) {
  struct pollfd p;
  (void)h; (void)ud;
  p.fd = fd;
  p.events = POLLIN;
  p.revents = 0;
  if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR | POLLNVAL))) {
    on_line(NULL);  /* the terminal is gone: as Ctrl-D, not a busy loop */
    return;
  }
  if (R.at_prompt) rl_callback_read_char();
}

/* pipe mode: whether stdin's stdio buffer holds input already (glibc) */
static int stdin_buffered(void) {
#ifdef __GLIBC__
  return stdin->_IO_read_ptr < stdin->_IO_read_end;
#else
  return 0;
#endif
}

/* Pipe mode: take what is there, up to the end of the line.  Reading
** through stdin's stdio buffer, as lua.c does, leaves the lines after a
** chunk to the chunk when it reads stdin (io.read); a getc on an empty
** buffer does one read(2), which the watch said will not block. */
static void on_pipe(aio_host *h, int fd, void *ud) {
  char ch;
  (void)h; (void)fd; (void)ud;
  if (R.done) return;  /* the line is taken: the next is the next read's */
  do {
    int c = getc(stdin);
    if (c == EOF) {
      if (ferror(stdin) && errno == EINTR) { clearerr(stdin); return; }
      R.done = 1;  /* end of input: the last line may lack its newline */
      R.eof = R.buf.len == 0;
      break;
    }
    if (c == '\n') { R.done = 1; break; }
    ch = (char)c;
    if (aio__repl_buf_add(&R.buf, &ch, 1) != 0) { R.done = 1; break; }
  } while (stdin_buffered());
}

/* Read one line, running the loop meanwhile.  R_LINE: the line is in
** R.buf; R_EOF, R_INTERRUPT (Ctrl-C at the
** prompt), R_EXIT (os.exit from a task). */
static int read_line(const char *prompt) {
  aio_host *h = R.h;
  aio_watch *w = NULL;
  int nint = aio_host_interrupted(h), rc;
  aio__repl_buf_clear(&R.buf);
  R.done = R.eof = 0;
  if (R.tty) {
    rl_resize_terminal();  /* the window may have changed since */
    rl_callback_handler_install(prompt, on_line);
    R.at_prompt = 1;
  } else {
    fputs(prompt, stderr);
    fflush(stderr);
  }
  fflush(stdout);
  if (aio_host_watch(h, 0, R.tty ? on_tty : on_pipe, NULL, &w) != 0) {
    fprintf(stderr, "aiolua: cannot watch stdin: %s\n", aio_host_errmsg(h));
    rc = R_EOF;
    goto out;
  }
  for (;;) {
    if (!R.tty && !R.done && stdin_buffered()) on_pipe(h, 0, NULL);
    if (R.done) { rc = R.eof ? R_EOF : R_LINE; break; }
    if (R.exit.req) { rc = R_EXIT; break; }
    if (aio_host_interrupted(h) != nint) { rc = R_INTERRUPT; break; }
    if (aio_host_step(h, -1) != 0)
      fprintf(stderr, "aiolua: %s\n", aio_host_errmsg(h));
    prompt_show();
  }
out:
  if (w) aio_host_unwatch(w);
  if (R.at_prompt) {
    rl_callback_handler_remove();
    R.at_prompt = 0;
  }
  R.hidden = 0;
  if (rc == R_INTERRUPT && R.tty) {
    fputs("^C\n", stdout);
    fflush(stdout);
  } else if (rc == R_EOF && R.tty) {
    /* libedit shows the ^D: draw the prompt without it, then leave the
    ** shell's prompt a line of its own */
    fprintf(stdout, "\r\033[K%s\n", prompt);
    fflush(stdout);
  }
  return rc;
}

/* ====================================================================== */
/* the REPL                                                               */
/* ====================================================================== */

/* Run the REPL on stdin until EOF (Ctrl-D) or os.exit; returns the exit
** status.  The caller has made SIGINT cancel the main task
** (aio_host_catch_sigint_opt with AIO_SIGINT_STAY). */
int aio__repl(aio_host *h) {
  static const aio_repl_io io = { read_line, &R.buf, history_add };
  lua_State *L = aio_host_lua(h);
  int status, top = lua_gettop(L);
  memset(&R, 0, sizeof R);
  R.h = h;
  R.L = L;
  R.exit.h = h;
  R.tty = isatty(0) && isatty(1);
  if (install_wrappers(L) != 0) {
    aio__repl_report(lua_tostring(L, -1));
    lua_settop(L, top);
  }
  if (R.tty) {
    /* libedit drops the bytes of a multibyte character in the C locale:
    ** the terminal's character set, as Python's REPL takes it (only
    ** LC_CTYPE, which Lua's own lexer does not consult) */
    const char *loc = setlocale(LC_CTYPE, "");
    if (loc == NULL || strcmp(loc, "C") == 0 || strcmp(loc, "POSIX") == 0)
      setlocale(LC_CTYPE, "C.UTF-8");
    rl_catch_signals = 0;  /* SIGINT is the loop's */
    rl_readline_name = "aiolua";
    rl_initialize();
    /* a word for completion keeps its dots and colons: "aio.sl" */
    rl_basic_word_break_characters = " \t\n\"'`@$><=;|&{([,+-*/%^~#";
    rl_completer_word_break_characters =
      (char *)rl_basic_word_break_characters;
    rl_attempted_completion_function = complete;
    rl_completion_append_character = '\0';
    history_open();
  }
  status = aio__repl_loop(L, &io, &R.exit, R.tty);
  aio__repl_buf_clear(&R.buf);
  free(R.histpath);
  R.histpath = NULL;
  fflush(stdout);
  return status;
}

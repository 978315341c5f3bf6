-- tests/win/args.lua: prints its arguments, each in brackets (process_win_spec)
for i = 1, #arg do io.write('[', arg[i], ']') end

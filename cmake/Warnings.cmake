# ev_warnings(target): the house warning set; every target builds with -Werror.
function(ev_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wshadow
    -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wno-unused-parameter)
endfunction()

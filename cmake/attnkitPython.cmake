# attnkit_find_python(<out-var> <module>...)
#   Sets <out-var> to the first Python interpreter that can import every
#   <module>, or to "" when there is none. Candidates, in order: the
#   ATTNKIT_PYTHON cache variable if set, Debian's /usr/bin/python3 (which has
#   python3-numpy / python3-matplotlib), then python3 on PATH (often a pyenv or
#   venv Python without them).
set(ATTNKIT_PYTHON "" CACHE FILEPATH "Python interpreter for attnkit's numpy test and plots (empty: search)")

function(attnkit_find_python out)
  set(candidates)
  if(ATTNKIT_PYTHON)
    list(APPEND candidates "${ATTNKIT_PYTHON}")
  endif()
  list(APPEND candidates /usr/bin/python3)
  find_program(path_python3 NAMES python3 NO_CACHE)
  if(path_python3)
    list(APPEND candidates "${path_python3}")
  endif()
  string(REPLACE ";" ", " imports "${ARGN}")
  foreach(python IN LISTS candidates)
    if(EXISTS "${python}")
      execute_process(COMMAND "${python}" -c "import ${imports}" RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
      if(rc EQUAL 0)
        message(STATUS "attnkit: Python with ${imports}: ${python}")
        set(${out} "${python}" PARENT_SCOPE)
        return()
      endif()
    endif()
  endforeach()
  message(STATUS "attnkit: no Python that can import ${imports} (tried ${candidates})")
  set(${out} "" PARENT_SCOPE)
endfunction()

# Decides whether attnkit's Python bindings (bench/python/) are built, and
# for which interpreter.
#
# ATTNKIT_BUILD_PYTHON unset (the default): built when attnkit is the
#   top-level project and pybind11 and Python's development files are found;
#   skipped with a message otherwise (and looked for again at the next
#   configure). -DATTNKIT_BUILD_PYTHON=ON makes them required, OFF disables
#   them.
# The interpreter: -DPython3_EXECUTABLE when given; else the first of
#   ATTNKIT_PYTHON, Debian's /usr/bin/python3 and python3 on PATH that can
#   import numpy (attnkitPython.cmake), so a pyenv or venv python3 without
#   numpy first on PATH is not picked.
# Sets ATTNKIT_PYTHON_SKIP_REASON: why the bindings are not built (empty
#   when they are), for the configure message and the skipped ctest entry.

set(ATTNKIT_PYTHON_SKIP_REASON "")
if(DEFINED ATTNKIT_BUILD_PYTHON AND NOT ATTNKIT_BUILD_PYTHON)
  set(ATTNKIT_PYTHON_SKIP_REASON "ATTNKIT_BUILD_PYTHON is OFF")
elseif(NOT PROJECT_IS_TOP_LEVEL AND NOT ATTNKIT_BUILD_PYTHON)
  set(ATTNKIT_PYTHON_SKIP_REASON "attnkit is not the top-level project")
else()
  if(NOT DEFINED Python3_EXECUTABLE)
    include("${CMAKE_CURRENT_LIST_DIR}/attnkitPython.cmake")
    attnkit_find_python(attnkit_numpy_python numpy)
    if(attnkit_numpy_python)
      set(Python3_EXECUTABLE "${attnkit_numpy_python}" CACHE FILEPATH "Python interpreter of attnkit's Python bindings")
    endif()
  endif()
  find_package(Python3 3.8 QUIET COMPONENTS Interpreter Development.Module)
  if(NOT Python3_FOUND)
    set(ATTNKIT_PYTHON_SKIP_REASON
        "no Python 3 with its development files (Debian: python3-dev) was found")
  else()
    find_package(pybind11 2.6 CONFIG QUIET)
    if(NOT pybind11_FOUND)
      set(ATTNKIT_PYTHON_SKIP_REASON "pybind11 was not found (Debian: pybind11-dev)")
    endif()
  endif()
endif()

if(ATTNKIT_PYTHON_SKIP_REASON)
  if(ATTNKIT_BUILD_PYTHON)
    message(FATAL_ERROR "attnkit: ATTNKIT_BUILD_PYTHON is ON but ${ATTNKIT_PYTHON_SKIP_REASON}")
  endif()
  if(PROJECT_IS_TOP_LEVEL)
    message(STATUS "attnkit: Python bindings skipped: ${ATTNKIT_PYTHON_SKIP_REASON}")
  endif()
  if(NOT DEFINED ATTNKIT_BUILD_PYTHON)
    set(ATTNKIT_BUILD_PYTHON OFF) # not cached: detected again at the next configure
  endif()
else()
  message(STATUS "attnkit: Python bindings for ${Python3_EXECUTABLE} (Python ${Python3_VERSION}, pybind11 ${pybind11_VERSION})")
  if(NOT DEFINED ATTNKIT_BUILD_PYTHON)
    set(ATTNKIT_BUILD_PYTHON ON) # not cached, as above
  endif()
endif()
option(ATTNKIT_BUILD_PYTHON "Build attnkit's Python bindings (bench/python/; needs pybind11 and python3-dev)" OFF)

# How attnkit's tests and examples launch an MPI program (after
# find_package(MPI)):
#
# attnkit_mpiexec_command(<out-var> <np> <program> [args...])
#   Sets <out-var> to the command line running <program> on <np> ranks.
#   Open MPI gets --oversubscribe (more ranks than cores: the tests run 4
#   ranks on 2-core machines); MPICH's mpiexec takes no such flag.
# ATTNKIT_MPI_ENVIRONMENT
#   The environment for such a test (the ENVIRONMENT property): Open MPI's
#   consent to run as root (CI runs as root), waiting ranks yielding their core
#   when oversubscribed, and one kernel thread per rank. Under ATTNKIT_SANITIZE
#   also ASAN_OPTIONS without leak detection: LeakSanitizer reports Open MPI's
#   own allocations from MPI_Init, made in components that MPI_Finalize
#   unloads (dlclose), so their stacks end in "<unknown module>" after one
#   frame and no suppression can name them. AddressSanitizer's other checks
#   and UBSan stay on; attnkit's memory is RAII and the MPI-free tests keep
#   leak detection.
if(NOT DEFINED ATTNKIT_MPIEXEC_IS_OPENMPI)
  execute_process(COMMAND "${MPIEXEC_EXECUTABLE}" --version OUTPUT_VARIABLE attnkit_mpiexec_version ERROR_QUIET)
  if(attnkit_mpiexec_version MATCHES "Open MPI|OpenRTE")
    set(ATTNKIT_MPIEXEC_IS_OPENMPI ON CACHE INTERNAL "")
  else()
    set(ATTNKIT_MPIEXEC_IS_OPENMPI OFF CACHE INTERNAL "")
  endif()
endif()

set(ATTNKIT_MPI_ENVIRONMENT OMP_NUM_THREADS=1)
if(ATTNKIT_MPIEXEC_IS_OPENMPI)
  list(APPEND ATTNKIT_MPI_ENVIRONMENT OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
       OMPI_MCA_mpi_yield_when_idle=1)
endif()

if(ATTNKIT_SANITIZE)
  list(APPEND ATTNKIT_MPI_ENVIRONMENT ASAN_OPTIONS=detect_leaks=0:abort_on_error=1)
endif()

function(attnkit_mpiexec_command out np program)
  set(flags ${MPIEXEC_PREFLAGS})
  if(ATTNKIT_MPIEXEC_IS_OPENMPI)
    list(APPEND flags --oversubscribe)
  endif()
  set(${out} "${MPIEXEC_EXECUTABLE}" ${MPIEXEC_NUMPROC_FLAG} ${np} ${flags} "${program}" ${MPIEXEC_POSTFLAGS} ${ARGN}
      PARENT_SCOPE)
endfunction()

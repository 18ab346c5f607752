# cmake -DBUILD_DIR=... -DPREFIX=... [-DEXPECT_MPI=ON] -P install_fresh.cmake
# Installs attnkit into an emptied prefix, so no stale file can satisfy a consumer.
file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
foreach(f include/attnkit/attnkit.hpp include/attnkit/version.hpp share/cmake/attnkit/attnkitConfig.cmake
          share/cmake/attnkit/attnkitConfigVersion.cmake share/cmake/attnkit/attnkitTargets.cmake)
  if(NOT EXISTS "${PREFIX}/${f}")
    message(FATAL_ERROR "install is missing ${f}")
  endif()
endforeach()
if(EXPECT_MPI)
  foreach(f include/attnkit/distributed.hpp include/attnkit/distributed/ring_attention.hpp
            share/cmake/attnkit/attnkitMPITargets.cmake)
    if(NOT EXISTS "${PREFIX}/${f}")
      message(FATAL_ERROR "install is missing ${f} (the mpi component)")
    endif()
  endforeach()
endif()

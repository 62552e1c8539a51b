# cmake -P tests/package_shared.cmake, run by package.shared_library: builds
# modhost as a shared library (BUILD_SHARED_LIBS=ON, tests off), installs it,
# then builds the README's minimal application (examples/minimal) against
# that package with warnings as errors and runs it to its clean shutdown.
# The application must load libmodhost.so, not a static copy.
#
# -D variables: SOURCE (modhost's root), BINARY_DIR, GENERATOR,
# PYTHON_EXECUTABLE, PYBIND11_DIR (what the main build used), JOBS.
cmake_minimum_required(VERSION 3.25)

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "${what} failed (${status}):\n${out}")
  endif()
  set(output "${out}" PARENT_SCOPE)
endfunction()

set(build ${BINARY_DIR}/modhost)
set(prefix ${BINARY_DIR}/prefix)
set(app ${BINARY_DIR}/minimal)
run("configuring the shared modhost" ${CMAKE_COMMAND} -S ${SOURCE} -B ${build} -G ${GENERATOR}
  -DBUILD_SHARED_LIBS=ON -DMODHOST_BUILD_EXAMPLES=OFF -DMODHOST_WERROR=ON
  -DPython3_EXECUTABLE=${PYTHON_EXECUTABLE} -Dpybind11_DIR=${PYBIND11_DIR})
run("building the shared modhost" ${CMAKE_COMMAND} --build ${build} -j ${JOBS} --target modhost_core modhost)
run("installing the shared modhost" ${CMAKE_COMMAND} --install ${build} --prefix ${prefix})
file(GLOB shared_libraries ${prefix}/lib*/libmodhost.so.*)
if(NOT shared_libraries)
  message(FATAL_ERROR "no libmodhost.so.* installed under ${prefix}")
endif()

run("configuring the minimal application" ${CMAKE_COMMAND} -S ${SOURCE}/examples/minimal -B ${app} -G ${GENERATOR}
  -DCMAKE_PREFIX_PATH=${prefix} -DPython3_EXECUTABLE=${PYTHON_EXECUTABLE} -Dpybind11_DIR=${PYBIND11_DIR}
  -DCMAKE_CXX_FLAGS=-Werror)
run("building the minimal application" ${CMAKE_COMMAND} --build ${app})
run("reading the application's libraries" readelf -d ${app}/minimal)
if(NOT output MATCHES "Shared library: \\[libmodhost\\.so")
  message(FATAL_ERROR "the minimal application does not load libmodhost.so:\n${output}")
endif()
run("running the minimal application" ${app}/minimal)
message("${output}")
run("running the installed host program" ${prefix}/bin/modhost -c "print('shared host:', __import__('modhost').__version__)")
message("${output}")

# cmake -P tests/package_mismatch.cmake, run by package.mismatch_python and
# package.mismatch_pybind11: configures tests/consumer against the installed
# package with another Python (KIND=python) or another pybind11
# (KIND=pybind11) than modhost was built with, and checks that find_package
# refuses it with a message naming both versions. Prints
# "package test skipped: ..." (ctest's SKIP_REGULAR_EXPRESSION) when this
# machine has no other Python or pybind11.
#
# -D variables: KIND, CONSUMER_SOURCE, BINARY_DIR, PREFIX (the installed
# package), GENERATOR, PYTHON_EXECUTABLE and PYTHON_VERSION (major.minor),
# PYBIND11_DIR and PYBIND11_VERSION (what modhost was built with), THIRD_PARTY
# (the folder holding pybind11-<version>/, overridden by $MODHOST_THIRD_PARTY).
cmake_minimum_required(VERSION 3.25)

if(KIND STREQUAL "python")
  # Another CPython: $MODHOST_OTHER_PYTHON, else a supported one that pyenv
  # installed (found the way scripts/test-python finds them), newest first.
  set(other "$ENV{MODHOST_OTHER_PYTHON}")
  if(NOT other)
    set(pyenv_root "$ENV{PYENV_ROOT}")
    if(NOT pyenv_root)
      execute_process(COMMAND pyenv root OUTPUT_VARIABLE pyenv_root
        OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE status)
      if(NOT status EQUAL 0)
        set(pyenv_root "$ENV{HOME}/.pyenv")
      endif()
    endif()
    file(GLOB candidates "${pyenv_root}/versions/3.1[1-5].*/bin/python3.1[1-5]")
    list(SORT candidates COMPARE NATURAL ORDER DESCENDING)
    foreach(candidate IN LISTS candidates)
      string(REGEX MATCH "python(3\\.[0-9]+)$" _ "${candidate}")
      if(NOT CMAKE_MATCH_1 STREQUAL PYTHON_VERSION)
        set(other "${candidate}")
        break()
      endif()
    endforeach()
  endif()
  if(NOT other)
    message("package test skipped: no Python other than ${PYTHON_VERSION} here "
      "(set MODHOST_OTHER_PYTHON=/path/to/python3.X, or install one with pyenv)")
    return()
  endif()
  execute_process(COMMAND "${other}" -c "import sys; print('%d.%d' % sys.version_info[:2])"
    OUTPUT_VARIABLE other_version OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  set(options -DPython3_EXECUTABLE=${other} -Dpybind11_DIR=${PYBIND11_DIR})
  set(expected "was built with Python ${PYTHON_VERSION} " "found Python ${other_version} ")
elseif(KIND STREQUAL "pybind11")
  # Another pybind11 from its sources, installed into BINARY_DIR (header-only:
  # installing is copying), as scripts/test-python does.
  if(DEFINED ENV{MODHOST_THIRD_PARTY})
    set(THIRD_PARTY "$ENV{MODHOST_THIRD_PARTY}")
  endif()
  file(GLOB sources "${THIRD_PARTY}/pybind11-*/CMakeLists.txt")
  list(SORT sources COMPARE NATURAL ORDER DESCENDING)
  set(other_version "")
  foreach(source IN LISTS sources)
    string(REGEX MATCH "pybind11-([0-9.]+)/CMakeLists.txt$" _ "${source}")
    if(CMAKE_MATCH_1 AND NOT CMAKE_MATCH_1 STREQUAL PYBIND11_VERSION)
      set(other_version "${CMAKE_MATCH_1}")
      get_filename_component(other_source "${source}" DIRECTORY)
      break()
    endif()
  endforeach()
  if(NOT other_version)
    message("package test skipped: no pybind11 other than ${PYBIND11_VERSION} in ${THIRD_PARTY} "
      "(set MODHOST_THIRD_PARTY to the folder holding pybind11-<version>/)")
    return()
  endif()
  set(other_prefix "${BINARY_DIR}/pybind11-${other_version}")
  if(NOT EXISTS "${other_prefix}/share/cmake/pybind11/pybind11Config.cmake")
    execute_process(COMMAND ${CMAKE_COMMAND} -S ${other_source} -B ${BINARY_DIR}/pybind11-build
      -DPYBIND11_TEST=OFF -DPYBIND11_NOPYTHON=ON -DCMAKE_INSTALL_PREFIX=${other_prefix}
      OUTPUT_QUIET COMMAND_ERROR_IS_FATAL ANY)
    execute_process(COMMAND ${CMAKE_COMMAND} --install ${BINARY_DIR}/pybind11-build
      OUTPUT_QUIET COMMAND_ERROR_IS_FATAL ANY)
  endif()
  set(options -DPython3_EXECUTABLE=${PYTHON_EXECUTABLE}
    -Dpybind11_DIR=${other_prefix}/share/cmake/pybind11)
  set(expected "pybind11 ${PYBIND11_VERSION}," "pybind11 ${other_version} (")
else()
  message(FATAL_ERROR "KIND must be python or pybind11, not '${KIND}'")
endif()

# A fresh consumer build directory: CMake caches the Python and pybind11 it found.
set(consumer_dir "${BINARY_DIR}/consumer")
file(REMOVE_RECURSE "${consumer_dir}")
execute_process(
  COMMAND ${CMAKE_COMMAND} -S ${CONSUMER_SOURCE} -B ${consumer_dir} -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${PREFIX} ${options}
  OUTPUT_VARIABLE output ERROR_VARIABLE output RESULT_VARIABLE status)
message("${output}")
if(status EQUAL 0)
  message(FATAL_ERROR "the consumer configured against ${options}: find_package(modhost) should have refused it")
endif()
# CMake wraps long messages: compare with the whitespace folded.
string(REGEX REPLACE "[ \t\r\n]+" " " folded "${output}")
foreach(text IN LISTS expected)
  string(FIND "${folded}" "${text}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "the configure failed, but its output does not say '${text}'")
  endif()
endforeach()
message("refused as expected: ${expected}")

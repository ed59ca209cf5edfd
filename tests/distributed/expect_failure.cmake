# Runs a multi-process command that must FAIL: non-zero exit within MAX_SECONDS, with output
# matching REGEX (the message that names the rank and the operation). Usage:
#   cmake -DREGEX=<regex> -DMAX_SECONDS=<n> -P expect_failure.cmake <command> [args...]
set(command "")
set(after_script FALSE)
foreach(i RANGE 1 ${CMAKE_ARGC})
  if(after_script AND DEFINED CMAKE_ARGV${i})
    list(APPEND command "${CMAKE_ARGV${i}}")
  endif()
  if("${CMAKE_ARGV${i}}" MATCHES "expect_failure\\.cmake$")
    set(after_script TRUE)
  endif()
endforeach()

string(TIMESTAMP start "%s")
execute_process(COMMAND ${command} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE out
                TIMEOUT ${MAX_SECONDS})
string(TIMESTAMP end "%s")
math(EXPR seconds "${end} - ${start}")
message("${out}")
if(status MATCHES "^0$")
  message(FATAL_ERROR "expected a failure, but the command succeeded")
elseif(NOT status MATCHES "^[0-9]+$")
  message(FATAL_ERROR "no exit within ${MAX_SECONDS} s (${status}): the job hung")
elseif(NOT out MATCHES "${REGEX}")
  message(FATAL_ERROR "exit status ${status} after ${seconds} s, but no line matches: ${REGEX}")
endif()
message("exit status ${status} after ${seconds} s, as expected")

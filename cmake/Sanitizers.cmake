# EV_SANITIZE=address   -> AddressSanitizer + UndefinedBehaviorSanitizer, no recovery
# EV_SANITIZE=thread    -> ThreadSanitizer
set(EV_SANITIZE "" CACHE STRING "Sanitizer build: '', 'address' or 'thread'")
if(EV_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined -fno-sanitize-recover=all)
elseif(EV_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT EV_SANITIZE STREQUAL "")
  message(FATAL_ERROR "EV_SANITIZE must be '', 'address' or 'thread'")
endif()

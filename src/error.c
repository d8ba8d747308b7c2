/*
 * error.c - strings for the EV_ERRNO_MAP codes. Pure functions; any thread.
 */
#include "ev/error.h"

const char *ev_strerror(int err)
{
    switch (err) {
    case EV_OK:
        return "success";
#define EV_ERR_STR(name, num, msg)                                                                 \
    case EV_##name:                                                                                \
        return msg;
        EV_ERRNO_MAP(EV_ERR_STR)
#undef EV_ERR_STR
    default:
        return "unknown error";
    }
}

const char *ev_errname(int err)
{
    switch (err) {
    case EV_OK:
        return "EV_OK";
#define EV_ERR_NAME(name, num, msg)                                                                \
    case EV_##name:                                                                                \
        return "EV_" #name;
        EV_ERRNO_MAP(EV_ERR_NAME)
#undef EV_ERR_NAME
    default:
        return "EV_UNKNOWN";
    }
}

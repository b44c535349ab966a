#include "error.h"

#include <string.h>

const char *cn_strerror(int err)
{
    switch (err) {
#define CN_ERR_CASE(name, value, text) \
    case value:                        \
        return text;
        CN_ERRNO_MAP(CN_ERR_CASE)
#undef CN_ERR_CASE
    default:
        break;
    }
    if (err < 0 && err > -4000)
        return strerror(-err);
    return "unknown error";
}

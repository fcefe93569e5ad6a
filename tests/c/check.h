/* check.h - the checks of the C unit tests. CHECK and CHECK_EQ_U64 print
 * their place and count the failure in failures, then go on (main returns
 * non-zero if any failed); REQUIRE prints and makes main return 1 at once,
 * for a check that what follows depends on. */
#ifndef SPP_TEST_CHECK_H
#define SPP_TEST_CHECK_H

#include <stdio.h>

static int failures __attribute__((unused));

#define CHECK_EQ_U64(a, b)                                                                    \
    do {                                                                                      \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);       \
        if (a_ != b_) {                                                                       \
            printf("%s:%d: %s == %llu, expected %s == %llu\n", __FILE__, __LINE__, #a, a_, #b, \
                   b_);                                                                       \
            failures++;                                                                       \
        }                                                                                     \
    } while (0)

#define CHECK(cond)                                                      \
    do {                                                                 \
        if (!(cond)) {                                                   \
            printf("%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                  \
        }                                                                \
    } while (0)

#define REQUIRE(cond)                                                    \
    do {                                                                 \
        if (!(cond)) {                                                   \
            printf("%s:%d: required: %s\n", __FILE__, __LINE__, #cond);    \
            return 1;                                                    \
        }                                                                \
    } while (0)

#endif

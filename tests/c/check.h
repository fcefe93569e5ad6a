/* check.h - the one assertion of the C unit tests: report the line and
 * fail the test (main returns 1). */
#ifndef SPP_TEST_CHECK_H
#define SPP_TEST_CHECK_H

#include <stdio.h>

#define CHECK(c)                                                                    \
    do {                                                                            \
        if (!(c)) {                                                                 \
            printf("FAILED line %d: %s\n", __LINE__, #c);                           \
            return 1;                                                               \
        }                                                                           \
    } while (0)

#endif

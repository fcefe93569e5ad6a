/* attrs.h - dict entries, module globals and instance attributes read
 * from (another process's) memory through an spp_reader, for any version
 * described by an spp_pyoffsets; used for the Python names of threads
 * (threading.Thread.name, found in threading._active).
 *
 * Everything read is hostile: table sizes, entry counts and string lengths
 * are bounded, types are checked against the target's own type objects
 * where spp_pytypes knows them. Not async-signal-safe; thread-safe (no
 * shared state).
 */
#ifndef SPP_ATTRS_H
#define SPP_ATTRS_H

#include <stdint.h>

#include "offsets.h"
#include "reader.h"
#include "values.h"

/* A thread name is kept to this many bytes of UTF-8, NUL included (cut at
 * a character boundary). */
#define SPP_THREAD_NAME_MAX 256

typedef struct spp_thread_name {
    uint64_t ident;                  /* threading.get_ident(): the tstate's thread_id */
    char name[SPP_THREAD_NAME_MAX];  /* UTF-8, controls replaced by '?' */
} spp_thread_name;

/* Reads the value stored under the str key `key` (ASCII) in the dict at
 * dict. Returns 1 with *value set, 0 when the key is not there, or
 * SPP_EINVAL when the dict cannot be read. */
int spp_dict_get(const spp_pyoffsets *o, const spp_reader *r, const spp_pytypes *t, uint64_t dict,
                 const char *key, uint64_t *value);

/* Reads the instance attribute `name` (ASCII) of the object at obj from
 * wherever its version keeps it (a dict at tp_dictoffset, managed values
 * or dict, inline values). Returns 1 with *value set, 0 when the object
 * has no such attribute, or SPP_EINVAL. */
int spp_object_attr(const spp_pyoffsets *o, const spp_reader *r, const spp_pytypes *t,
                    uint64_t obj, const char *name, uint64_t *value);

/* The names of the threads in threading._active of the main interpreter
 * of the runtime at runtime: each Thread's ident and _name. Stores at most
 * cap. Returns how many were stored (0 when threading is not imported),
 * or < 0 when the layout does not say where modules are (SPP_ENOSYS) or
 * sys.modules or threading cannot be read (SPP_EINVAL). A Thread whose
 * name cannot be read is left out. */
int spp_thread_names(const spp_pyoffsets *o, const spp_reader *r, const spp_pytypes *t,
                     uint64_t runtime, spp_thread_name *out, int cap);

#endif

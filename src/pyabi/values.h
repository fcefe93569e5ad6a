/* values.h - a frame's local variables and short reprs of their values,
 * read through an spp_reader for any version described by an
 * spp_pyoffsets (what `spprof dump --locals` prints).
 *
 * A value's type is recognised by comparing its ob_type with the target's
 * own type objects (spp_pytypes), never by trusting tp_name. Everything read
 * is hostile: sizes, counts and string lengths are bounded. Not
 * async-signal-safe (may malloc); thread-safe (no shared state).
 */
#ifndef SPP_VALUES_H
#define SPP_VALUES_H

#include <stdint.h>

#include "offsets.h"
#include "reader.h"

/* Addresses of the target's built-in type objects and singletons; 0 where
 * unknown (such values are then shown by type name and address). */
typedef struct spp_pytypes {
    uint64_t int_type, bool_type, float_type, str_type, bytes_type, cell_type;
    uint64_t none, true_obj, false_obj;
} spp_pytypes;

/* A repr is cut to this many bytes, "..." included. */
#define SPP_REPR_MAX 128
/* Locals read per frame; more are counted but not shown. */
#define SPP_LOCALS_MAX 256

typedef struct spp_value {
    char repr[SPP_REPR_MAX + 1];  /* UTF-8, as Python's repr() (simple types) */
    char type[64];                /* "int", "str", ..., or the type's tp_name */
} spp_value;

typedef struct spp_local {
    char name[96];
    spp_value value;
} spp_local;

/* Describes the object at obj: repr() of int, bool, float, str, bytes and
 * None, "<TypeName at 0x...>" for anything else. Returns 0, or < 0 when
 * the object cannot be read (out then says "<unreadable at 0x...>"). */
int spp_value_read(const spp_pyoffsets *o, const spp_reader *r, const spp_pytypes *t, uint64_t obj,
                   spp_value *out);

/* Reads the locals of the frame at frame running code (an address from
 * spp_walk), arguments first, then other locals, cells and free (closure)
 * variables, cells shown by their content. Locals not bound yet are left
 * out. Stores at most cap; *more counts the bound ones left out. Returns
 * the number stored, or < 0 (SPP_ENOSYS when the layout does not say where
 * locals are, SPP_EINVAL when the frame or code cannot be read). */
int spp_frame_locals(const spp_pyoffsets *o, const spp_reader *r, const spp_pytypes *t,
                     uint64_t frame, uint64_t code, spp_local *out, int cap, int *more);

#endif

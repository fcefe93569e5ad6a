/* walker.h - walks a thread's Python frames and turns code objects into
 * names and line numbers, for any version described by an spp_pyoffsets.
 *
 * spp_walk is async-signal-safe (given an async-signal-safe reader): it only
 * records raw code addresses and instruction positions. Everything that
 * allocates (spp_code_read) runs later, outside the handler.
 */
#ifndef SPP_WALKER_H
#define SPP_WALKER_H

#include <stdint.h>

#include "offsets.h"
#include "reader.h"

/* One Python frame as the handler sees it. */
typedef struct spp_rawframe {
    uint64_t code;   /* address of the code object */
    uint64_t instr;  /* f_lasti (3.9/3.10) or the instruction pointer (3.11+) */
} spp_rawframe;


/* For spp_thread_frame's *below: nothing known to check the chain against. */
#define SPP_ANY_FRAME UINT64_MAX

/* spp_walk's answer when the chain is not one a running interpreter has at
 * an instruction boundary: the thread was caught while its interpreter was
 * linking a frame in or out, and the frames read are not its stack. */
#define SPP_ETORN (-5)

/* Reads the current frame pointer of a thread state, and in *below the
 * frame that the first frame run by the innermost evaluation-loop call must
 * return to (SPP_ANY_FRAME where the version does not say). Returns 0 or
 * < 0. */
int spp_thread_frame(const spp_pyoffsets *o, const spp_reader *r, uint64_t tstate, uint64_t *frame,
                     uint64_t *below);

/* The address where a thread state's current frame pointer is (what
 * spp_thread_frame reads last), 0 if the thread has none (3.11/3.12: no
 * evaluation loop linked). Returns 0 or < 0. */
int spp_thread_frame_at(const spp_pyoffsets *o, const spp_reader *r, uint64_t tstate, uint64_t *at);

/* Walks from frame outward, storing at most cap frames (innermost first).
 * Frames whose code object's type is not code_type are skipped (when
 * code_type != 0; with SPP_WALK_RUNNING such a frame makes the chain
 * SPP_ETORN), as are interpreter shim frames. If entries is not NULL,
 * entries[i] is set to 1 when frame i is the outermost frame run by one
 * call of the evaluation loop (for merging with native stacks). If addrs
 * is not NULL, addrs[i] is the address of frame i (for reading its locals).
 * Returns the number of frames stored; *truncated is set when the chain was
 * longer than cap or ended in unreadable memory.
 * The chain is checked against below (from spp_thread_frame): if it does
 * not lead there, the innermost eval-loop call was caught linking itself in
 * and the stack is walked from below instead. Returns SPP_ETORN when a whole
 * chain was read but is not a stack (a 3.12+ chain that does not start with
 * a shim frame, or with SPP_WALK_RUNNING a caller that is not running or a
 * frame whose code is no code object).
 * Async-signal-safe (recursion depth at most one). */
int spp_walk(const spp_pyoffsets *o, const spp_reader *r, uint64_t frame, uint64_t below,
             int flags, uint64_t code_type, spp_rawframe *out, uint8_t *entries, uint64_t *addrs,
             int cap, int *truncated);

/* spp_walk flag: the thread runs while it is read (not stopped, not the
 * caller): every frame in the chain but the innermost must say it is
 * running (the innermost may be being entered or left, as long as it links
 * to a caller), and every frame, the innermost too, must hold a code object
 * unless its owner marks it as the interpreter's (3.14+ clear the code of a
 * frame they pop). (A stopped thread can legitimately be between marking a
 * frame and linking it.) */
#define SPP_WALK_RUNNING 1

/* What a code object says about itself. Strings are owned (malloc'd). */
typedef struct spp_code {
    char *name;            /* qualified name where the version has one */
    char *file;
    int firstlineno;
    unsigned char *lines;  /* copy of the line table */
    uint32_t nlines;
    uint64_t bytecode;     /* address of the first instruction (3.11+) */
} spp_code;

/* Reads a code object. Returns 0 or < 0 (unreadable or implausible). */
int spp_code_read(const spp_pyoffsets *o, const spp_reader *r, uint64_t code, spp_code *out);
void spp_code_clear(spp_code *c);

/* The line executing at raw instruction position instr (as recorded by
 * spp_walk); the first line of the function if unknown. */
int spp_code_line(const spp_pyoffsets *o, const spp_code *c, uint64_t instr);

/* The line of a byte offset into the bytecode (what PyCode_Addr2Line
 * takes). Exposed for tests. */
int spp_code_addr2line(const spp_pyoffsets *o, const spp_code *c, int64_t addr);

/* Reads a str object as UTF-8 into buf (NUL-terminated, truncated to
 * cap - 1 bytes at a character boundary). Returns the length or < 0. */
int spp_read_str(const spp_pyoffsets *o, const spp_reader *r, uint64_t str, char *buf, size_t cap);

/* Reads the first characters (at most cap, and at most 4096) of a str as
 * code points into out, and its length into *length. Returns how many
 * were read, or < 0. */
int spp_read_str_chars(const spp_pyoffsets *o, const spp_reader *r, uint64_t str, uint32_t *out,
                       size_t cap, int64_t *length);

#endif

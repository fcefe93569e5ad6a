/* resolve.c - code objects to names and lines, with direct-mapped caches. */
#include "resolve.h"

#include <stdlib.h>
#include <string.h>

#define CODE_CACHE 1024  /* powers of two */
#define LINE_CACHE 8192

typedef struct code_entry {
    uint64_t addr;
    uint64_t name_ptr, file_ptr; /* identity of the object when it was read */
    uint64_t gen;      /* unique per reading, so line entries go stale with it */
    uint32_t name, file;
    spp_code code;
} code_entry;

typedef struct line_entry {
    uint64_t code, instr, gen;
    uint32_t frame;
} line_entry;

struct spp_resolver {
    const spp_pyoffsets *o;
    const spp_reader *r;
    spp_profile *p;
    int lines;
    int validate;
    uint64_t gen;
    uint32_t marks[3];
    code_entry codes[CODE_CACHE];
    line_entry line_cache[LINE_CACHE];
};

static uint64_t mix(uint64_t h)
{
    h ^= h >> 31;
    h *= 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    return h;
}

spp_resolver *spp_resolver_new(const spp_pyoffsets *o, const spp_reader *r, spp_profile *p,
                               int lines)
{
    spp_resolver *res = calloc(1, sizeof(*res));
    if (!res)
        return NULL;
    res->o = o;
    res->r = r;
    res->p = p;
    res->lines = lines;
    static const char *const names[3] = {"<unknown>", "<truncated>", "<no Python frame>"};
    uint32_t empty = spp_profile_intern(p, "", 0);
    for (int i = 0; i < 3; i++) {
        spp_frame f = {spp_profile_intern_cstr(p, names[i]), empty, 0, 0, SPP_FRAME_OTHER};
        res->marks[i] = f.name == SPP_NONE || empty == SPP_NONE ? SPP_NONE : spp_profile_frame(p, &f);
        if (res->marks[i] == SPP_NONE) {
            free(res);
            return NULL;
        }
    }
    return res;
}

void spp_resolver_free(spp_resolver *res)
{
    if (!res)
        return;
    for (int i = 0; i < CODE_CACHE; i++)
        spp_code_clear(&res->codes[i].code);
    free(res);
}

uint32_t spp_resolver_marker(const spp_resolver *res, int which) { return res->marks[which]; }

void spp_resolver_validate(spp_resolver *res, int on) { res->validate = on; }

/* The pointers that identify the code object now at addr. */
static int identity(const spp_resolver *res, uint64_t addr, uint64_t *name, uint64_t *file,
                    int32_t *first)
{
    int32_t name_off = res->o->code_qualname >= 0 ? res->o->code_qualname : res->o->code_name;
    return spp_read(res->r, addr + (uint64_t)name_off, name, sizeof(*name)) == 0 &&
                   spp_read(res->r, addr + (uint64_t)res->o->code_filename, file, sizeof(*file)) == 0 &&
                   spp_read(res->r, addr + (uint64_t)res->o->code_firstlineno, first, sizeof(*first)) == 0
               ? 0
               : -1;
}

static code_entry *code_lookup(spp_resolver *res, uint64_t addr)
{
    code_entry *ce = &res->codes[mix(addr) & (CODE_CACHE - 1)];
    uint64_t name = 0, file = 0;
    int32_t first = 0;
    if (res->validate && identity(res, addr, &name, &file, &first) < 0)
        return NULL;
    if (ce->addr == addr && ce->gen &&
        (!res->validate || (ce->name_ptr == name && ce->file_ptr == file &&
                            ce->code.firstlineno == first)))
        return ce;
    spp_code_clear(&ce->code);
    ce->addr = 0;
    ce->gen = 0;
    if (spp_code_read(res->o, res->r, addr, &ce->code) < 0)
        return NULL;
    ce->name = spp_profile_intern_cstr(res->p, ce->code.name);
    ce->file = spp_profile_intern_cstr(res->p, ce->code.file);
    if (ce->name == SPP_NONE || ce->file == SPP_NONE) {
        spp_code_clear(&ce->code);
        return NULL;
    }
    ce->addr = addr;
    ce->name_ptr = name;
    ce->file_ptr = file;
    ce->gen = ++res->gen;
    return ce;
}

uint32_t spp_resolver_frame(spp_resolver *res, const spp_rawframe *raw)
{
    code_entry *ce = code_lookup(res, raw->code);
    if (!ce)
        return res->marks[SPP_MARK_UNKNOWN];
    uint64_t instr = res->lines ? raw->instr : 0;
    line_entry *le = &res->line_cache[mix(raw->code ^ mix(instr)) & (LINE_CACHE - 1)];
    if (le->gen == ce->gen && le->code == raw->code && le->instr == instr)
        return le->frame;
    spp_frame f = {
        .name = ce->name,
        .file = ce->file,
        .line = res->lines ? spp_code_line(res->o, &ce->code, raw->instr) : 0,
        .first_line = ce->code.firstlineno,
        .kind = SPP_FRAME_PYTHON,
    };
    uint32_t id = spp_profile_frame(res->p, &f);
    if (id != SPP_NONE) {
        le->code = raw->code;
        le->instr = instr;
        le->gen = ce->gen;
        le->frame = id;
    }
    return id;
}

void spp_resolver_forget(spp_resolver *res, uint64_t code)
{
    code_entry *ce = &res->codes[mix(code) & (CODE_CACHE - 1)];
    if (ce->addr == code) {
        spp_code_clear(&ce->code);
        ce->addr = 0;
        ce->gen = 0;
    }
}

/* read.c - reading a profile file: the format told by content, gzip
 * undone, folded stacks and the stacks a flame graph SVG embeds parsed
 * here; JSON and pprof in read_json.c and read_pprof.c. */
#include "read.h"

#include "inflate.h"
#include "json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* What a flame graph SVG writes its stacks in (flamegraph.c). */
#define SVG_STACKS_OPEN "<metadata id=\"spprof-folded\">"
#define SVG_STACKS_CLOSE "</metadata>"

int spp_read_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return SPP_EINVAL;
}

uint32_t spp_read_frame(spp_profile *p, const char *name, size_t nlen, const char *file, size_t flen,
                        int line)
{
    spp_frame f = {spp_profile_intern(p, name, nlen), spp_profile_intern(p, file ? file : "", file ? flen : 0),
                   line > 0 ? line : 0, 0, file && flen ? SPP_FRAME_PYTHON : SPP_FRAME_OTHER};
    if (f.name == SPP_NONE || f.file == SPP_NONE)
        return SPP_NONE;
    return spp_profile_frame(p, &f);
}

/* ---- folded stacks ---- */

static int all_digits(const char *s, size_t n)
{
    if (!n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* Splits a label "name (file:line)", "name (file)" or "name" (as
 * spp_write_label writes them) into its parts. The last " (" starts the
 * file: names may hold parentheses ("<lambda>", C++ signatures) more often
 * than file names do. */
static void split_label(const char *s, size_t n, size_t *nlen, const char **file, size_t *flen, int *line)
{
    *nlen = n;
    *file = NULL;
    *flen = 0;
    *line = 0;
    if (n < 4 || s[n - 1] != ')')
        return;
    size_t open = n - 1;
    while (open > 0 && !(s[open - 1] == ' ' && s[open] == '('))
        open--;
    if (open == 0)
        return;
    const char *in = s + open + 1;
    size_t inlen = n - 1 - (open + 1);
    size_t colon = inlen;
    while (colon > 0 && in[colon - 1] != ':')
        colon--;
    if (colon > 1 && inlen - colon <= 9 && all_digits(in + colon, inlen - colon)) {
        *line = atoi(in + colon); /* at most nine digits: no overflow */
        inlen = colon - 1;
    }
    *nlen = open - 1;
    *file = in;
    *flen = inlen;
}

/* The root frames the writers add for --threads: "thread NAME (TID)" or
 * "thread TID". */
static int is_thread_root(const char *s, size_t n)
{
    if (n < 8 || memcmp(s, "thread ", 7) != 0)
        return 0;
    if (all_digits(s + 7, n - 7))
        return 1;
    if (s[n - 1] != ')')
        return 0;
    size_t open = n - 1;
    while (open > 7 && s[open] != '(')
        open--;
    return open > 8 && s[open - 1] == ' ' && all_digits(s + open + 1, n - 2 - open);
}

static int read_folded_line(spp_profile *p, uint32_t root, const char *s, size_t n, uint64_t count,
                            char *err, size_t errlen, const char *where, size_t lineno)
{
    uint32_t node = root, depth = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != ';')
            continue;
        if (++depth > SPP_READ_MAX_DEPTH)
            return spp_read_fail(err, errlen, "%sline %zu: a stack deeper than %d frames", where, lineno,
                                 SPP_READ_MAX_DEPTH);
        const char *label = s + start;
        size_t len = i - start, nlen, flen;
        const char *file;
        int line;
        uint32_t frame;
        if (depth == 1 && is_thread_root(label, len)) {
            spp_frame f = {spp_profile_intern(p, label, len), spp_profile_intern(p, "", 0), 0, 0,
                           SPP_FRAME_THREAD};
            frame = f.name == SPP_NONE || f.file == SPP_NONE ? SPP_NONE : spp_profile_frame(p, &f);
        } else {
            split_label(label, len, &nlen, &file, &flen, &line);
            frame = spp_read_frame(p, label, nlen, file, flen, line);
        }
        if (frame == SPP_NONE || (node = spp_profile_push(p, node, frame)) == SPP_NONE)
            return SPP_ENOMEM;
        start = i + 1;
    }
    spp_profile_add_many(p, node, count, 0);
    return SPP_OK;
}

/* Lines "frame;frame;frame count"; where ("embedded stacks, ") prefixes the
 * messages. */
static int read_folded(const char *data, size_t len, spp_profile *p, const char *where, char *err,
                       size_t errlen)
{
    uint32_t t = spp_profile_thread(p, 0, NULL);
    if (t == SPP_NONE)
        return SPP_ENOMEM;
    uint32_t root = spp_profile_thread_at(p, t)->root;
    size_t lineno = 0, stacks = 0;
    for (size_t pos = 0; pos < len;) {
        const char *s = data + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        lineno++;
        while (n && (s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        if (!n)
            continue;
        if (memchr(s, '\0', n))
            return spp_read_fail(err, errlen, "%sline %zu: a NUL byte (not text)", where, lineno);
        size_t sp = n;
        while (sp > 0 && s[sp - 1] != ' ' && s[sp - 1] != '\t')
            sp--;
        if (sp == 0 || !all_digits(s + sp, n - sp) || n - sp > 19)
            return spp_read_fail(err, errlen,
                                 "not a profile spprof reads (%sline %zu is not folded stacks "
                                 "'frame;frame;... count')",
                                 where, lineno);
        uint64_t count = strtoull(s + sp, NULL, 10); /* at most 19 digits: fits */
        size_t end = sp - 1;
        while (end > 0 && (s[end - 1] == ' ' || s[end - 1] == '\t'))
            end--;
        if (!end)
            return spp_read_fail(err, errlen, "%sline %zu: a count without a stack", where, lineno);
        int rc = read_folded_line(p, root, s, end, count, err, errlen, where, lineno);
        if (rc < 0)
            return rc;
        stacks++;
    }
    if (!stacks)
        return spp_read_fail(err, errlen, "%sno stacks", where);
    return SPP_OK;
}

/* ---- flame graph SVG ---- */

/* Undoes spp_out_xml: the five entities it writes, and numeric references. */
static int xml_unescape(const char *s, size_t n, char *out, size_t *outlen)
{
    static const struct { const char *ent; char c; } ents[] = {
        {"&lt;", '<'}, {"&gt;", '>'}, {"&amp;", '&'}, {"&quot;", '"'}, {"&apos;", '\''},
    };
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '&') {
            out[o++] = s[i++];
            continue;
        }
        int done = 0;
        for (size_t e = 0; e < sizeof(ents) / sizeof(ents[0]) && !done; e++) {
            size_t el = strlen(ents[e].ent);
            if (n - i >= el && memcmp(s + i, ents[e].ent, el) == 0) {
                out[o++] = ents[e].c;
                i += el;
                done = 1;
            }
        }
        if (done)
            continue;
        if (n - i >= 4 && s[i + 1] == '#') {
            int hex = s[i + 2] == 'x';
            size_t j = i + 2 + (size_t)hex;
            unsigned long cp = 0;
            size_t nd = 0;
            for (; j < n && nd < 7; j++, nd++) {
                char c = s[j];
                int d = c >= '0' && c <= '9' ? c - '0'
                        : hex && c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : hex && c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
                if (d < 0)
                    break;
                cp = cp * (hex ? 16 : 10) + (unsigned long)d;
            }
            if (nd && j < n && s[j] == ';' && cp && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff)) {
                /* A reference is at least four bytes, its UTF-8 form at most four. */
                o += spp_json_utf8(out + o, (unsigned)cp);
                i = j + 1;
                continue;
            }
        }
        return -1;
    }
    *outlen = o;
    return 0;
}

static const char *find(const char *s, size_t n, const char *what)
{
    size_t k = strlen(what);
    for (const char *p = s; (size_t)(p - s) + k <= n; p++) {
        p = memchr(p, what[0], n - (size_t)(p - s) - k + 1);
        if (!p)
            return NULL;
        if (memcmp(p, what, k) == 0)
            return p;
    }
    return NULL;
}

static int read_svg(const char *data, size_t len, spp_profile *p, char *err, size_t errlen)
{
    const char *open = find(data, len, SVG_STACKS_OPEN);
    if (!open && find(data, len, "<svg") && !find(data, len, "</svg>"))
        return spp_read_fail(err, errlen, "a truncated SVG (it does not end with </svg>)");
    if (!open) {
        if (find(data, len, "<svg"))
            return spp_read_fail(err, errlen,
                                 "an SVG without the stacks spprof embeds in its flame graphs (made by "
                                 "another tool, an older spprof, or spprof diff): give the profile it "
                                 "was made from");
        return spp_read_fail(err, errlen, "XML, but not a flame graph SVG");
    }
    const char *body = open + strlen(SVG_STACKS_OPEN);
    const char *close = find(body, len - (size_t)(body - data), SVG_STACKS_CLOSE);
    if (!close)
        return spp_read_fail(err, errlen, "the SVG's embedded stacks are cut off (a truncated file?)");
    size_t n = (size_t)(close - body), outlen;
    char *text = malloc(n + 1);
    if (!text)
        return SPP_ENOMEM;
    int rc;
    if (xml_unescape(body, n, text, &outlen) < 0)
        rc = spp_read_fail(err, errlen, "the SVG's embedded stacks hold a bad XML reference");
    else
        rc = read_folded(text, outlen, p, "embedded stacks, ", err, errlen);
    free(text);
    return rc;
}

/* ---- by content ---- */

static int detect(const char *data, size_t len)
{
    size_t i = 0;
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
        i = 3;
    if (spp_is_gzip((const unsigned char *)data, len))
        return SPP_READ_GZIP;
    /* Binary is pprof's protobuf: a NUL early on, or a control byte first
     * (its first byte is a field tag, 0x0a, read as a newline, then a
     * length). Control bytes later on may be in a frame's name. */
    size_t check = len < 4096 ? len : 4096;
    if (memchr(data, '\0', check))
        return SPP_READ_PPROF;
    for (size_t k = i; k < len; k++) {
        unsigned char c = (unsigned char)data[k];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            continue;
        if (c < 0x20 || c == 0x7f)
            return SPP_READ_PPROF;
        break;
    }
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r'))
        i++;
    if (i == len)
        return SPP_READ_AUTO;
    if (data[i] == '{' || data[i] == '[')
        return SPP_READ_JSON;
    /* XML begins with a declaration, a comment, a doctype or the element;
     * a folded stack may begin with '<' too ("<module>"). */
    static const char *const xml[] = {"<?xml", "<!--", "<!DOCTYPE", "<svg"};
    for (size_t k = 0; k < sizeof(xml) / sizeof(xml[0]); k++)
        if (len - i >= strlen(xml[k]) && memcmp(data + i, xml[k], strlen(xml[k])) == 0)
            return SPP_READ_SVG;
    return SPP_READ_COLLAPSED;
}

static int read_as(const char *data, size_t len, int kind, int nested, spp_profile *p, const char **format,
                   char *err, size_t errlen)
{
    if (kind == SPP_READ_AUTO)
        kind = detect(data, len);
    switch (kind) {
    case SPP_READ_AUTO:
        return spp_read_fail(err, errlen, "empty%s", nested ? " once decompressed" : " file");
    case SPP_READ_COLLAPSED:
        *format = "collapsed";
        return read_folded(data, len, p, "", err, errlen);
    case SPP_READ_SVG:
        *format = "flamegraph";
        return read_svg(data, len, p, err, errlen);
    case SPP_READ_SPEEDSCOPE:
    case SPP_READ_CHROMETRACE:
    case SPP_READ_JSON:
        return spp_read_json(data, len, p, format, err, errlen);
    case SPP_READ_PPROF:
        *format = "pprof";
        return spp_read_pprof((const unsigned char *)data, len, p, err, errlen);
    case SPP_READ_GZIP: {
        if (nested)
            return spp_read_fail(err, errlen, "gzip inside gzip");
        unsigned char *raw;
        size_t rawlen;
        const char *why;
        int rc = spp_gunzip((const unsigned char *)data, len, SPP_READ_MAX_BYTES, &raw, &rawlen, &why);
        if (rc == SPP_EINVAL)
            return spp_read_fail(err, errlen, "gzip: %s", why);
        if (rc < 0)
            return rc;
        rc = read_as((const char *)raw, rawlen, SPP_READ_AUTO, 1, p, format, err, errlen);
        free(raw);
        return rc;
    }
    default:
        return SPP_EINVAL;
    }
}

int spp_read_buffer(const char *data, size_t len, int kind, spp_profile **out, const char **format,
                    char *err, size_t errlen)
{
    const char *fmt = "unknown";
    *out = NULL;
    if (errlen)
        err[0] = '\0';
    spp_profile *p = spp_profile_new(0);
    if (!p)
        return SPP_ENOMEM;
    int rc = read_as(data, len, kind, 0, p, &fmt, err, errlen);
    if (format)
        *format = fmt;
    if (rc == SPP_ENOMEM && errlen)
        snprintf(err, errlen, "out of memory");
    if (rc < 0) {
        spp_profile_free(p);
        return rc;
    }
    *out = p;
    return SPP_OK;
}

int spp_read_file(const char *path, spp_profile **out, const char **format, char *err, size_t errlen)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s", strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        snprintf(err, errlen, "%s", strerror(EISDIR));
        return -EISDIR;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    int rc = SPP_OK;
    while (buf) {
        if (len + 1 >= cap) {
            if (cap >= SPP_READ_MAX_BYTES) {
                rc = spp_read_fail(err, errlen, "larger than %zu MiB", SPP_READ_MAX_BYTES >> 20);
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                rc = SPP_ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t got = read(fd, buf + len, cap - 1 - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int e = errno;
            snprintf(err, errlen, "%s", strerror(e));
            rc = -e;
            break;
        }
        if (got == 0) {
            buf[len] = '\0';
            break;
        }
        len += (size_t)got;
    }
    close(fd);
    if (!buf)
        rc = SPP_ENOMEM;
    if (rc == SPP_OK)
        rc = spp_read_buffer(buf, len, SPP_READ_AUTO, out, format, err, errlen);
    else if (rc == SPP_ENOMEM)
        snprintf(err, errlen, "out of memory");
    free(buf);
    return rc;
}

/* out.c - atomic output files and text escaping for the writers. */
#include "out.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void set_err(spp_out *o, int e)
{
    if (!o->err)
        o->err = e ? e : EIO;
}

int spp_out_open(spp_out *o, const char *path)
{
    memset(o, 0, sizeof(*o));
    size_t n = strlen(path);
    o->path = malloc(n + 1);
    o->tmp = malloc(n + 16);
    if (!o->path || !o->tmp) {
        free(o->path);
        free(o->tmp);
        return -ENOMEM;
    }
    memcpy(o->path, path, n + 1);
    /* The temporary name sits in the same directory so rename is atomic. */
    const char *slash = strrchr(path, '/');
    size_t dir = slash ? (size_t)(slash - path) + 1 : 0;
    memcpy(o->tmp, path, dir);
    snprintf(o->tmp + dir, n + 16 - dir, ".%s.XXXXXX", path + dir);
    int fd = mkstemp(o->tmp);
    if (fd < 0) {
        int e = errno;
        free(o->path);
        free(o->tmp);
        o->path = o->tmp = NULL;
        return -e;
    }
    /* mkstemp creates 0600; a profile is an ordinary file, so honour umask. */
    mode_t um = umask(0);
    umask(um);
    if (fchmod(fd, 0666 & ~um) < 0) {
        /* Not fatal: the file is still ours and readable by us. */
    }
    o->f = fdopen(fd, "w");
    if (!o->f) {
        int e = errno;
        close(fd);
        unlink(o->tmp);
        free(o->path);
        free(o->tmp);
        o->path = o->tmp = NULL;
        return -e;
    }
    return 0;
}

void spp_out_open_mem(spp_out *o) { memset(o, 0, sizeof(*o)); }

static void out_free(spp_out *o)
{
    free(o->tmp);
    free(o->path);
    free(o->mem);
    memset(o, 0, sizeof(*o));
}

int spp_out_commit(spp_out *o)
{
    if (!o->f) {
        int e = o->err;
        out_free(o);
        return e ? -e : 0;
    }
    if (fflush(o->f) != 0)
        set_err(o, errno);
    if (!o->err && fsync(fileno(o->f)) != 0 && errno != EINVAL && errno != EROFS)
        set_err(o, errno);
    if (fclose(o->f) != 0)
        set_err(o, errno);
    o->f = NULL;
    if (!o->err && rename(o->tmp, o->path) != 0)
        set_err(o, errno);
    int e = o->err;
    if (e)
        unlink(o->tmp);
    out_free(o);
    return e ? -e : 0;
}

void spp_out_abort(spp_out *o)
{
    if (o->f) {
        fclose(o->f);
        unlink(o->tmp);
    }
    out_free(o);
}

char *spp_out_take(spp_out *o, size_t *len)
{
    if (o->err || !o->mem) {
        if (!o->err && !o->mem) {
            o->mem = malloc(1);
            if (o->mem)
                o->mem[0] = '\0';
        }
        if (o->err || !o->mem) {
            out_free(o);
            return NULL;
        }
    }
    char *m = o->mem;
    if (len)
        *len = o->len;
    o->mem = NULL;
    out_free(o);
    return m;
}

void spp_out_write(spp_out *o, const char *s, size_t n)
{
    if (o->err || n == 0)
        return;
    if (o->f) {
        if (fwrite(s, 1, n, o->f) != n)
            set_err(o, errno);
        return;
    }
    if (o->len + n + 1 > o->cap) {
        size_t ncap = o->cap ? o->cap : 4096;
        while (ncap < o->len + n + 1)
            ncap *= 2;
        char *m = realloc(o->mem, ncap);
        if (!m) {
            set_err(o, ENOMEM);
            return;
        }
        o->mem = m;
        o->cap = ncap;
    }
    memcpy(o->mem + o->len, s, n);
    o->len += n;
    o->mem[o->len] = '\0';
}

void spp_out_puts(spp_out *o, const char *s) { spp_out_write(o, s, strlen(s)); }

void spp_out_printf(spp_out *o, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0) {
        set_err(o, EINVAL);
        return;
    }
    if ((size_t)n < sizeof(buf)) {
        spp_out_write(o, buf, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        set_err(o, ENOMEM);
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    spp_out_write(o, big, (size_t)n);
    free(big);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    unsigned cp = c & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Writes str as UTF-8 text: each ASCII byte as esc maps it (NULL: as it
 * is), each invalid UTF-8 sequence (and, with no_nonchars, U+FFFE/U+FFFF,
 * which XML cannot hold) as invalid. Runs that need nothing are written
 * whole. */
static void out_escaped(spp_out *o, const char *str, size_t n, const char *(*esc_ascii)(unsigned c, char *buf),
                        const char *invalid, int no_nonchars)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t run = 0; /* start of the pending run of bytes that need no escape */
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        const char *esc = NULL;
        char buf[8];
        size_t adv = 1;
        if (c < 0x80) {
            esc = esc_ascii ? esc_ascii(c, buf) : NULL;
        } else {
            adv = utf8_len(s + i, n - i);
            int nonchar = no_nonchars && adv == 3 && c == 0xef && s[i + 1] == 0xbf && s[i + 2] >= 0xbe;
            if (adv == 0 || nonchar) {
                esc = invalid;
                adv = adv ? adv : 1;
            }
        }
        if (esc) {
            spp_out_write(o, str + run, i - run);
            spp_out_puts(o, esc);
            run = i + adv;
        }
        i += adv;
    }
    spp_out_write(o, str + run, n - run);
}

#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD in UTF-8 */

static const char *json_ascii(unsigned c, char *buf)
{
    switch (c) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    }
    if (c < 0x20 || c == 0x7f) {
        snprintf(buf, 8, "\\u%04x", c);
        return buf;
    }
    return NULL;
}

void spp_out_json(spp_out *o, const char *s, size_t n)
{
    out_escaped(o, s, n, json_ascii, "\\ufffd", 0);
}

static const char *xml_ascii(unsigned c, char *buf)
{
    (void)buf;
    switch (c) {
    case '<': return "&lt;";
    case '>': return "&gt;";
    case '&': return "&amp;";
    case '"': return "&quot;";
    case '\'': return "&apos;";
    }
    /* XML 1.0 cannot hold other control characters, even as references. */
    return (c < 0x20 && c != '\t' && c != '\n') || c == 0x7f ? "" : NULL;
}

void spp_out_xml(spp_out *o, const char *s, size_t n)
{
    out_escaped(o, s, n, xml_ascii, REPLACEMENT, 1);
}

void spp_out_text(spp_out *o, const char *s, size_t n, const char *(*esc_ascii)(unsigned c, char *buf))
{
    out_escaped(o, s, n, esc_ascii, REPLACEMENT, 0);
}

/* upload.c - `spprof record --upload`: profiles sent to a Pyroscope-
 * compatible POST /ingest (name with tags, from, until, format, sampleRate,
 * spyName) from a thread of their own, so that a slow or dead server costs
 * the sampling loop nothing; failures are counted and each kind reported
 * once. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "upload.h"

/* Bounds on one request: a dead host costs at most the connect time, a
 * stalled server the I/O time per wait (so a few waits per request). */
#define UPLOAD_CONNECT_MS 2000
#define UPLOAD_IO_MS 5000
/* Profiles waiting while one is sent; past that a new one is not queued
 * (the server is far behind: at one window a second, four seconds). */
#define UPLOAD_QUEUE 4
#define UPLOAD_KIND_QUEUE SPP_HTTP_NKINDS /* a failure kind of our own */
#define UPLOAD_MAX_SEEN 16
/* At the end, profiles still queued this long after the recording ended
 * are given up (counted as failed): a stalled server must not hold the
 * command for every queued profile's timeouts in turn. */
#define UPLOAD_FINISH_MS 2000

static int is_key_char(char c, int first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (!first && c >= '0' && c <= '9');
}

static int is_value_char(char c)
{
    return is_key_char(c, 0) || c == '.' || c == '-' || c == '/' || c == ':';
}

int spp_upload_check_tag(const char *tag, char *err, size_t errlen)
{
    const char *eq = strchr(tag, '=');
    if (!eq || eq == tag) {
        snprintf(err, errlen, "--tag '%s': expected KEY=VALUE", tag);
        return -1;
    }
    for (const char *c = tag; c < eq; c++)
        if (!is_key_char(*c, c == tag)) {
            snprintf(err, errlen,
                     "--tag '%s': a key is letters, digits and _ (not starting with a digit)", tag);
            return -1;
        }
    if (eq - tag >= 2 && tag[0] == '_' && tag[1] == '_') {
        snprintf(err, errlen, "--tag '%s': keys starting with __ are reserved by Pyroscope", tag);
        return -1;
    }
    if (!eq[1] || strlen(eq + 1) > 128) {
        snprintf(err, errlen, "--tag '%s': the value must be 1 to 128 characters", tag);
        return -1;
    }
    for (const char *c = eq + 1; *c; c++)
        if (!is_value_char(*c)) {
            snprintf(err, errlen,
                     "--tag '%s': a value is letters, digits and _ . - / : (no spaces, commas, "
                     "braces or =)",
                     tag);
            return -1;
        }
    return 0;
}

int spp_upload_check_app(const char *name, char *err, size_t errlen)
{
    size_t n = strlen(name);
    int ok = n > 0 && n <= 128;
    for (const char *c = name; ok && *c; c++)
        ok = is_key_char(*c, 0) || *c == '.' || *c == '-';
    if (!ok)
        snprintf(err, errlen,
                 "--app-name '%s': 1 to 128 letters, digits and _ . - (Pyroscope's application "
                 "names)",
                 name);
    return ok ? 0 : -1;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

void spp_upload_default_app(char *const *argv, int argc, char *buf, size_t n)
{
    char tmp[256] = "python";
    if (argc > 0 && argv[0]) {
        const char *prog = base_name(argv[0]);
        snprintf(tmp, sizeof(tmp), "%s", prog);
        if (strncmp(prog, "python", 6) == 0) {
            /* The interpreter's options, then the script or -m module. */
            for (int i = 1; i < argc && argv[i]; i++) {
                const char *a = argv[i];
                if (strcmp(a, "-m") == 0 && i + 1 < argc && argv[i + 1]) {
                    snprintf(tmp, sizeof(tmp), "%s", argv[i + 1]);
                    break;
                }
                if (strncmp(a, "-m", 2) == 0 && a[2]) {
                    snprintf(tmp, sizeof(tmp), "%s", a + 2);
                    break;
                }
                if (strcmp(a, "-c") == 0 || strcmp(a, "-") == 0)
                    break;
                if (strcmp(a, "-W") == 0 || strcmp(a, "-X") == 0) {
                    i++;
                    continue;
                }
                if (a[0] == '-')
                    continue;
                const char *script = base_name(a);
                if (strcmp(script, "__main__.py") == 0 && script > a + 1) {
                    /* pkg/__main__.py: the package's name. */
                    const char *end = script - 1, *start = end;
                    while (start > a && start[-1] != '/')
                        start--;
                    snprintf(tmp, sizeof(tmp), "%.*s", (int)(end - start), start);
                } else {
                    snprintf(tmp, sizeof(tmp), "%s", script);
                    size_t l = strlen(tmp);
                    if (l > 3 && strcmp(tmp + l - 3, ".py") == 0)
                        tmp[l - 3] = '\0';
                }
                break;
            }
        }
    }
    size_t j = 0;
    for (size_t i = 0; tmp[i] && j + 1 < n && j < 128; i++) {
        char c = tmp[i];
        buf[j++] = is_key_char(c, 0) || c == '.' || c == '-' ? c : '_';
    }
    if (j == 0)
        j = (size_t)snprintf(buf, n, "python");
    buf[j < n ? j : n - 1] = '\0';
}

typedef struct upload_job {
    char *body;       /* owned */
    size_t len;
    uint64_t from_s, until_s;
} upload_job;

struct spp_uploader {
    spp_url url;
    char *url_text;         /* owned, for messages */
    char *name;             /* owned: "APP{k=v,...}" %-encoded, for pprof */
    char *folded_name;      /* owned: "APP.SUFFIX{k=v,...}" %-encoded */
    const char *format;     /* "pprof" or "folded" */
    spp_writer_fn writer;
    spp_write_opts wo;
    long rate;

    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    upload_job queue[UPLOAD_QUEUE];
    int head, count, stopping;
    uint64_t give_up_ms;    /* CLOCK_MONOTONIC ms, once stopping */
    /* Under lock: */
    uint64_t sent, failed;
    struct { int kind, status; } seen[UPLOAD_MAX_SEEN];
    int nseen;
};

/* %-encodes s into a new string (NULL when out of memory). */
static char *url_encode(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n * 3 + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *c = s; *c; c++) {
        if (is_key_char(*c, 0) || *c == '.' || *c == '-' || *c == '~')
            *o++ = *c;
        else
            o += sprintf(o, "%%%02X", (unsigned char)*c);
    }
    *o = '\0';
    return out;
}

/* "app[.suffix]{k=v,...}", %-encoded. */
static char *make_name(const char *app, const char *suffix, const spp_upload_opts *o)
{
    size_t cap = strlen(app) + 16 + (suffix ? strlen(suffix) : 0);
    for (int i = 0; i < o->ntags; i++)
        cap += strlen(o->tags[i]) + 1;
    char *raw = malloc(cap), *enc = NULL;
    if (!raw)
        return NULL;
    size_t used = (size_t)snprintf(raw, cap, "%s%s%s{", app, suffix ? "." : "", suffix ? suffix : "");
    for (int i = 0; i < o->ntags; i++)
        used += (size_t)snprintf(raw + used, cap - used, "%s%s", i ? "," : "", o->tags[i]);
    snprintf(raw + used, cap - used, "}");
    enc = url_encode(raw);
    free(raw);
    return enc;
}

/* Reports a failure: counted always, printed the first time its kind (and
 * status) is seen. Called with the lock held. */
static void note_failure(spp_uploader *u, int kind, int status, const char *detail)
{
    u->failed++;
    for (int i = 0; i < u->nseen; i++)
        if (u->seen[i].kind == kind && u->seen[i].status == status)
            return;
    if (u->nseen < UPLOAD_MAX_SEEN) {
        u->seen[u->nseen].kind = kind;
        u->seen[u->nseen].status = status;
        u->nseen++;
    }
    spp_cli_error("upload to %s failed: %s (further failures like this are counted, not shown)",
                  u->url_text, detail);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void *upload_main(void *arg)
{
    spp_uploader *u = arg;
    size_t tcap = strlen(u->url.path) + strlen(u->folded_name) + strlen(u->name) + 256;
    char *target = malloc(tcap);
    pthread_mutex_lock(&u->lock);
    for (;;) {
        while (!u->count && !u->stopping)
            pthread_cond_wait(&u->cond, &u->lock);
        if (!u->count)
            break;
        upload_job job = u->queue[u->head];
        u->head = (u->head + 1) % UPLOAD_QUEUE;
        u->count--;
        if (u->stopping && mono_ms() >= u->give_up_ms) {
            note_failure(u, UPLOAD_KIND_QUEUE, 1,
                         "profiles still waiting when spprof ended were not sent (the server was "
                         "too slow)");
            free(job.body);
            continue;
        }
        pthread_mutex_unlock(&u->lock);

        spp_http_result r;
        int ok = -1;
        if (target) {
            /* The server's address, then /ingest (unless the URL names it),
             * then the URL's own query, if any, before ours. */
            const char *q = strchr(u->url.path, '?');
            size_t plen = q ? (size_t)(q - u->url.path) : strlen(u->url.path);
            size_t tail = strlen("/ingest");
            int named = plen >= tail && memcmp(u->url.path + plen - tail, "/ingest", tail) == 0;
            int slash = plen > 0 && u->url.path[plen - 1] == '/';
            snprintf(target, tcap,
                     "%.*s%s?%s%sname=%s&from=%llu&until=%llu&format=%s&sampleRate=%ld"
                     "&spyName=spprof&units=samples&aggregationType=sum",
                     (int)plen, u->url.path, named ? "" : slash ? "ingest" : "/ingest",
                     q ? q + 1 : "", q && q[1] ? "&" : "",
                     strcmp(u->format, "pprof") == 0 ? u->name : u->folded_name,
                     (unsigned long long)job.from_s, (unsigned long long)job.until_s, u->format,
                     u->rate);
            ok = spp_http_post(&u->url, target,
                               strcmp(u->format, "pprof") == 0 ? "application/octet-stream"
                                                               : "text/plain; charset=utf-8",
                               job.body, job.len, UPLOAD_CONNECT_MS, UPLOAD_IO_MS, &r);
        } else {
            r.kind = SPP_HTTP_SEND;
            r.status = 0;
            snprintf(r.detail, sizeof(r.detail), "out of memory");
        }
        free(job.body);

        pthread_mutex_lock(&u->lock);
        if (ok == 0)
            u->sent++;
        else
            note_failure(u, r.kind, r.status, r.detail);
    }
    pthread_mutex_unlock(&u->lock);
    free(target);
    return NULL;
}

static void uploader_free(spp_uploader *u)
{
    free(u->url_text);
    free(u->name);
    free(u->folded_name);
    free(u);
}

spp_uploader *spp_uploader_start(const spp_upload_opts *o, const char *app, double rate,
                                 const char *suffix, const spp_write_opts *wo, char *err,
                                 size_t errlen)
{
    spp_uploader *u = calloc(1, sizeof(*u));
    if (!u) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (spp_url_parse(o->url, &u->url, err, errlen) < 0) {
        free(u);
        return NULL;
    }
    u->format = strcmp(o->format, "folded") == 0 ? "folded" : "pprof";
    u->writer = spp_writer_lookup(strcmp(u->format, "pprof") == 0 ? "pprof" : "collapsed");
    u->wo = *wo;
    u->wo.thread_roots = 0;
    /* Pyroscope reads sampleRate as an integer. */
    u->rate = (long)(rate + 0.5) > 0 ? (long)(rate + 0.5) : 1;
    u->url_text = strdup(o->url);
    u->name = make_name(app, NULL, o);
    u->folded_name = make_name(app, suffix, o);
    if (!u->url_text || !u->name || !u->folded_name || !u->writer) {
        snprintf(err, errlen, "out of memory");
        uploader_free(u);
        return NULL;
    }
    pthread_mutex_init(&u->lock, NULL);
    pthread_cond_init(&u->cond, NULL);
    /* The thread takes no signal: SIGCHLD must stay for the sampling
     * loop's sigtimedwait, and Ctrl-C must interrupt the loop's waits. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int e = pthread_create(&u->thread, NULL, upload_main, u);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        snprintf(err, errlen, "cannot start the upload thread: %s", strerror(e));
        pthread_mutex_destroy(&u->lock);
        pthread_cond_destroy(&u->cond);
        uploader_free(u);
        return NULL;
    }
    return u;
}

int spp_uploader_send(spp_uploader *u, const spp_profile *p, uint64_t from_ns, uint64_t until_ns)
{
    spp_out o;
    spp_out_open_mem(&o);
    int rc = u->writer(p, &o, &u->wo);
    size_t len = 0;
    char *body = rc < 0 ? (spp_out_abort(&o), NULL) : spp_out_take(&o, &len);
    pthread_mutex_lock(&u->lock);
    if (!body) {
        note_failure(u, UPLOAD_KIND_QUEUE, -1, "out of memory while rendering the profile");
        pthread_mutex_unlock(&u->lock);
        return -1;
    }
    if (u->count == UPLOAD_QUEUE) {
        note_failure(u, UPLOAD_KIND_QUEUE, 0,
                     "the server is too slow: profiles are waiting, this one is left out");
        pthread_mutex_unlock(&u->lock);
        free(body);
        return -1;
    }
    upload_job *j = &u->queue[(u->head + u->count) % UPLOAD_QUEUE];
    j->body = body;
    j->len = len;
    /* Unix seconds, rounded down at both ends: windows that meet in time
     * meet in their from/until too. */
    j->from_s = from_ns / 1000000000u;
    j->until_s = until_ns / 1000000000u;
    if (j->until_s < j->from_s)
        j->until_s = j->from_s;
    u->count++;
    pthread_cond_signal(&u->cond);
    pthread_mutex_unlock(&u->lock);
    return 0;
}

uint64_t spp_uploader_finish(spp_uploader *u)
{
    pthread_mutex_lock(&u->lock);
    u->stopping = 1;
    u->give_up_ms = mono_ms() + UPLOAD_FINISH_MS;
    pthread_cond_signal(&u->cond);
    pthread_mutex_unlock(&u->lock);
    pthread_join(u->thread, NULL);
    uint64_t failed = u->failed, total = u->sent + u->failed;
    if (failed)
        spp_cli_error("%llu of %llu profile uploads to %s failed", (unsigned long long)failed,
                      (unsigned long long)total, u->url_text);
    else
        fprintf(stderr, "spprof: uploaded %llu profile%s to %s\n", (unsigned long long)total,
                total == 1 ? "" : "s", u->url_text);
    pthread_mutex_destroy(&u->lock);
    pthread_cond_destroy(&u->cond);
    uploader_free(u);
    return failed;
}

/* upload.h - sending profiles to a Pyroscope-compatible server: a minimal
 * HTTP/1.1 client (http.c) and the uploader that `spprof record --upload`
 * runs beside the sampling loop (upload.c). */
#ifndef SPP_UPLOAD_H
#define SPP_UPLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "../core/profile.h"
#include "../formats/formats.h"

/* ---- http.c: one POST per connection, plain http:// only ---- */

typedef struct spp_url {
    char host[256];   /* name or address, without IPv6 brackets */
    char port[8];
    char path[1024];  /* absolute path, with the URL's own query if any */
} spp_url;

/* Parses http://HOST[:PORT][/PATH][?QUERY]. Returns 0, or -1 with the
 * reason (for the user: https, a bad port, ...) in err. */
int spp_url_parse(const char *url, spp_url *u, char *err, size_t errlen);

/* Why a request failed; SPP_HTTP_OK when the server answered 2xx. */
enum spp_http_fail {
    SPP_HTTP_OK = 0,
    SPP_HTTP_RESOLVE,   /* the host name did not resolve */
    SPP_HTTP_CONNECT,   /* no connection (refused, unreachable, timed out) */
    SPP_HTTP_SEND,      /* the connection failed or stalled while sending */
    SPP_HTTP_RECEIVE,   /* ... or while waiting for the answer */
    SPP_HTTP_PROTOCOL,  /* the answer is not HTTP */
    SPP_HTTP_STATUS,    /* the server answered with a status other than 2xx */
    SPP_HTTP_NKINDS
};

typedef struct spp_http_result {
    int kind;           /* enum spp_http_fail */
    int status;         /* the HTTP status, 0 if none was read */
    char detail[256];   /* the cause: strerror, or the status line and the
                           start of the server's answer */
} spp_http_result;

/* POSTs body to target (path and query) on u's host. Connecting may take
 * connect_ms, and each wait for the socket (to send more, or for more of
 * the answer) io_ms, so a dead or stalled server costs a bounded time.
 * Returns 0 on a 2xx answer, else -1 with r saying why. Thread-safe; never
 * raises SIGPIPE. */
int spp_http_post(const spp_url *u, const char *target, const char *content_type,
                  const char *body, size_t len, int connect_ms, int io_ms, spp_http_result *r);

/* ---- upload.c: Pyroscope's /ingest ---- */

#define SPP_UPLOAD_MAX_TAGS 32

typedef struct spp_upload_opts {
    const char *url;         /* http://HOST[:PORT][/PATH]; /ingest is appended */
    const char *app_name;    /* NULL: from the command */
    const char *tags[SPP_UPLOAD_MAX_TAGS]; /* "KEY=VALUE", validated */
    int ntags;
    const char *format;      /* "pprof" or "folded" */
    double every;            /* seconds between windows, 0 = one upload at the end */
} spp_upload_opts;

/* Checks a --tag (KEY=VALUE) or an --app-name as Pyroscope's names allow
 * them: keys [A-Za-z_][A-Za-z0-9_]* (not starting "__"), values and app
 * names [A-Za-z0-9_.-/:] (no ",{}=" nor spaces). Returns 0, or -1 with the
 * reason in err. */
int spp_upload_check_tag(const char *tag, char *err, size_t errlen);
int spp_upload_check_app(const char *name, char *err, size_t errlen);
/* An app name from a command line: the script (python x/app.py -> app),
 * the module (python -m pkg.mod -> pkg.mod) or the program's name, with
 * characters Pyroscope refuses replaced by '_'. */
void spp_upload_default_app(char *const *argv, int argc, char *buf, size_t n);

typedef struct spp_uploader spp_uploader;

/* Starts the uploader's thread (all signals blocked in it, so the sampling
 * loop keeps its SIGCHLD and Ctrl-C). rate is the samples per second asked
 * for (sampleRate), suffix the profile type of folded uploads ("wall" or
 * "cpu"), wo how frames are labelled (copied). NULL with a message in err
 * when the URL is not usable or out of memory. */
spp_uploader *spp_uploader_start(const spp_upload_opts *o, const char *app, double rate,
                                 const char *suffix, const spp_write_opts *wo, char *err,
                                 size_t errlen);
/* Renders p (a window, or the whole recording) in the upload format and
 * queues it for [from_ns, until_ns] (CLOCK_REALTIME). Never blocks on the
 * network: at most a few profiles wait; past that the new one is counted
 * as failed ("queue full"). Returns 0, or -1 when it could not be queued
 * (counted and reported like a failed upload). */
int spp_uploader_send(spp_uploader *u, const spp_profile *p, uint64_t from_ns, uint64_t until_ns);
/* Waits for the queued uploads (each bounded by the timeouts), stops the
 * thread, reports the totals on stderr and frees u. Returns the number of
 * uploads that failed. */
uint64_t spp_uploader_finish(spp_uploader *u);

#endif
